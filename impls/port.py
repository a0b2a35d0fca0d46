"""Weight porting between the torch and Keras versions of a layer or model, by layer name.

Layers are matched by name: a torch module's last attribute name (``backbone.res2a_branch2a``
-> ``res2a_branch2a``) against a Keras layer's name; the top-level objects themselves, when
they hold weights (a bare layer such as CrfRnn), match each other whatever their names and
are reported under the Keras layer's name. The layout rules of each kind apply:

| kind | torch | Keras |
| --- | --- | --- |
| convolution | weight OIHW, bias | kernel HWIO, bias |
| transposed convolution (BilinearUpsample, ConvTranspose2d) | weight IOHW, bias | kernel HWOI, bias |
| BatchNorm | weight, bias, running_mean/var; eps; momentum m | gamma, beta, moving_mean/variance; epsilon; 1 - m |
| CrfRnn | its three (C, C) matrices (and log widths, if trainable) | the same, as they are |

No spatial flip: both frameworks correlate. The whole port is planned and checked first; a
name only on one side or a shape that differs after the layout change raises ValueError and
nothing is copied. The returned report lists what moved.

Legacy Keras 2 HDF5 weight files (`model.save_weights("x.h5")` or `model.save("x.h5")` of Keras
2.x or tf.keras 2.x) load into a torch module or a Keras 3 model by layer name: `load_keras2_h5`,
strict by default (a missing, unused or mismatched layer raises, naming it, before anything is
loaded), with `exclude=` for fine-tuning and a report of every weight; `read_keras2_h5` reads a
file into arrays. The file holds the Keras layout, so a torch module gets the table's layout
change (and torch's Linear gets Dense's kernel (in, out) as weight (out, in)).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Iterable, Mapping

import numpy as np

from impls import _checks, _crfrnn

__all__ = ["PortReport", "torch_to_tf", "tf_to_torch", "layer_differences", "first_difference", "Keras2Report",
           "load_keras2_h5", "read_keras2_h5"]

# (torch name, Keras name, torch -> Keras axes) of each kind's weights.
_CONV = [("weight", "kernel", (2, 3, 1, 0)), ("bias", "bias", None)]
_BATCHNORM = [("weight", "gamma", None), ("bias", "beta", None), ("running_mean", "moving_mean", None),
              ("running_var", "moving_variance", None)]
# The key of the top-level module / layer itself (a torch module has no name of its own).
_TOP = "<top level>"
_CRFRNN = [(name, name, None) for name in _crfrnn.WEIGHT_NAMES]
_CRFRNN_WIDTHS = [(name, name, None) for name in _crfrnn.WIDTH_NAMES]  # CrfRnn(trainable_widths=True)'s


@dataclasses.dataclass(frozen=True)
class PortReport:
    """What a port moved: [(layer, kind, [(weight, shape in the target)])], in order."""

    direction: str
    layers: tuple

    @property
    def moved(self):
        """[(layer/weight, target shape)] of every weight copied."""
        return tuple((f"{layer}/{weight}", shape) for layer, _, weights in self.layers for weight, shape in weights)

    def __str__(self):
        count = sum(len(weights) for _, _, weights in self.layers)
        lines = [f"{self.direction}: {count} weight(s) of {len(self.layers)} layer(s) moved"]
        for layer, kind, weights in self.layers:
            lines.append(f"  {layer} ({kind}): " + ", ".join(f"{w} {shape}" for w, shape in weights))
        return "\n".join(lines)


def torch_to_tf(torch_module, keras_model) -> PortReport:
    """Copies every weight of a torch module into the Keras layer or model with the same layer names."""
    _check_models(("torch_module", torch_module), ("keras_model", keras_model), op="torch_to_tf")
    plan = _plan(torch_module, keras_model, to_keras=True)
    for name, kind, module, _, _ in plan:
        # None is torch's cumulative moving average; Keras' momentum 1 - m would become 1.0,
        # which freezes the moving statistics: refuse rather than port a different layer.
        if kind == "BatchNorm" and module.momentum is None:
            raise ValueError(f"port: torch BatchNorm {name!r} has momentum=None (a cumulative moving average), "
                             f"which Keras' BatchNormalization cannot express; set a momentum (e.g. 0.1) first; "
                             f"nothing was copied")
    for _, kind, module, layer, weights in plan:
        for _, variable, value in weights:
            variable.assign(value.astype(variable.dtype))
        if kind == "BatchNorm":
            layer.epsilon, layer.momentum = module.eps, 1.0 - module.momentum
    return _report("torch -> Keras", plan)


def tf_to_torch(keras_model, torch_module) -> PortReport:
    """Copies every weight of a Keras layer or model into the torch module with the same layer names."""
    import torch

    _check_models(("keras_model", keras_model), ("torch_module", torch_module), op="tf_to_torch")
    plan = _plan(torch_module, keras_model, to_keras=False)
    with torch.no_grad():
        for _, kind, module, layer, weights in plan:
            for _, tensor, value in weights:  # (ascontiguousarray makes a scalar (1,): reshape)
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)).reshape(value.shape).to(tensor.dtype))
            if kind == "BatchNorm":
                module.eps, module.momentum = float(layer.epsilon), 1.0 - float(layer.momentum)
    return _report("Keras -> torch", plan)


def _check_models(*arguments, op):
    """A torch module and a Keras layer (a model is one), checked in the order of the arguments."""
    import keras
    import torch

    kinds = {"torch_module": (torch.nn.Module, "a torch.nn.Module"),
             "keras_model": (keras.layers.Layer, "a Keras layer or model (keras.layers.Layer)")}
    for name, value in arguments:
        _checks.instance(value, kinds[name][0], op=op, name=name, expected=kinds[name][1])


def _plan(torch_module, keras_model, *, to_keras):
    """[(layer name, kind, torch module, Keras layer, [(target weight name, target, value in the
    target's layout)])] for every matched layer, shapes checked: nothing is copied yet."""
    plan = []
    for name, module, layer in _pairs(torch_module, keras_model, "torch", "Keras"):
        kind, table = _kind(module)
        if kind == "CrfRnn":
            _check_crfrnn_widths(name, table, layer)
        weights = []
        for torch_name, keras_name, axes in table:
            tensor, variable = getattr(module, torch_name), _keras_weight(layer, keras_name)
            if to_keras:
                value = tensor.detach().cpu().numpy()
                weights.append((keras_name, variable, value.transpose(axes) if axes else value))
            else:
                value = np.asarray(variable.numpy())
                weights.append((torch_name, tensor, value.transpose(np.argsort(axes)) if axes else value))
        plan.append((name, kind, module, layer, weights))
    _check_shapes(plan, *(("torch", "Keras") if to_keras else ("Keras", "torch")))
    return plan


def _report(direction, plan):
    return PortReport(direction, tuple((name, kind, tuple((w, tuple(v.shape)) for w, _, v in weights))
                                       for name, kind, _, _, weights in plan))


def _kind(module):
    import torch

    from impls.torch.crfrnn import CrfRnn
    from impls.torch.upsample import BilinearUpsample

    if isinstance(module, torch.nn.Conv2d):
        return "convolution", _CONV if module.bias is not None else _CONV[:1]
    if isinstance(module, BilinearUpsample):
        return "transposed convolution", _CONV[:1]
    if isinstance(module, torch.nn.ConvTranspose2d):  # IOHW -> HWOI is the convolution's transpose
        return "transposed convolution", _CONV if module.bias is not None else _CONV[:1]
    if isinstance(module, torch.nn.BatchNorm2d):
        return "BatchNorm", _BATCHNORM
    if isinstance(module, CrfRnn):
        return "CrfRnn", _CRFRNN + (_CRFRNN_WIDTHS if module.config["trainable_widths"] else [])
    raise ValueError(f"port: no porting rule for torch layer type {type(module).__name__}; nothing was copied")


def _check_crfrnn_widths(name, table, layer):
    """Both CrfRnn layers learn their widths, or neither: a port would leave one side's behind."""
    in_torch = any(torch_name in _crfrnn.WIDTH_NAMES for torch_name, _, _ in table)
    in_keras = any(variable.path.rsplit("/", 1)[-1] in _crfrnn.WIDTH_NAMES for variable in layer.weights)
    if in_torch != in_keras:
        raise ValueError(f"port: CrfRnn {name!r} has trainable_widths={in_torch} in torch but {in_keras} in Keras; "
                         f"nothing was copied")


def _torch_layers(module):
    """{name: module} of the modules that hold weights, by last attribute name (unique)."""
    from impls.torch.crfrnn import CrfRnn

    found = {}
    for path, child in module.named_modules():
        own = list(child.parameters(recurse=False)) or list(child.buffers(recurse=False))
        if own or isinstance(child, CrfRnn):
            name = path.rsplit(".", 1)[-1] if path else _TOP
            if name in found:
                raise ValueError(f"port: two torch layers are named {name!r}; names must be unique to match")
            found[name] = child
    return found


def _keras_layers(model):
    """{name: layer} of the Keras layers that hold weights (the model itself if it is one layer)."""
    import keras

    layers = [model, *_sublayers(model)] if isinstance(model, keras.layers.Layer) else []
    found = {}
    for layer in layers:
        if layer is not model and isinstance(layer, keras.Model):
            continue
        own = [w for w in layer.weights if _owner(w, layer)]
        if own:
            found.setdefault(_TOP if layer is model else layer.name, layer)
    return found


def _sublayers(layer, seen=None):
    """Every Keras layer reachable through public API: a model's `layers`, and any layer's public
    attributes (directly, or in lists, tuples and dicts), depth first. (Keras 3 has no public
    accessor of a layer's nested layers.)"""
    import keras

    seen = {id(layer)} if seen is None else seen
    stack = list(layer.layers) if isinstance(layer, keras.Model) else []  # functional models' layers
    stack += [value for name, value in vars(layer).items() if not name.startswith("_")]
    found = []
    while stack:
        value = stack.pop(0)
        if isinstance(value, dict):
            stack[:0] = list(value.values())
        elif isinstance(value, (list, tuple)):
            stack[:0] = list(value)
        elif isinstance(value, keras.layers.Layer) and id(value) not in seen:
            seen.add(id(value))
            found += [value, *_sublayers(value, seen)]
    return found


def _owner(variable, layer):
    path = variable.path.split("/")
    return len(path) >= 2 and path[-2] == layer.name


def _pairs(torch_module, keras_model, torch_side, keras_side):
    if not keras_model.weights:
        raise ValueError("port: the Keras model has no weights yet; call it once on an input (or build it) first")
    torch_layers, keras_layers = _torch_layers(torch_module), _keras_layers(keras_model)
    only_torch = sorted(set(torch_layers) - set(keras_layers))
    only_keras = sorted(set(keras_layers) - set(torch_layers))
    if only_torch or only_keras:
        raise ValueError(f"port: layer names differ: only in {torch_side}: {only_torch}, only in {keras_side}: "
                         f"{only_keras}; nothing was copied")
    # The top-level objects, when they hold weights themselves (a bare layer such as CrfRnn),
    # match each other and are reported under the Keras layer's name.
    return [(keras_model.name if name == _TOP else name, module, keras_layers[name])
            for name, module in torch_layers.items()]


def _keras_weight(layer, name):
    for variable in layer.weights:
        if variable.path.rsplit("/", 1)[-1] == name:
            return variable
    raise ValueError(f"port: Keras layer {layer.name!r} has no weight {name!r} "
                     f"(it has {[v.path for v in layer.weights]}); nothing was copied")


def _check_shapes(plan, source, target):
    wrong = [f"{name}/{weight}: {source} {tuple(value.shape)} vs {target} {tuple(existing.shape)}"
             for name, _, _, _, weights in plan for weight, existing, value in weights
             if tuple(value.shape) != tuple(existing.shape)]
    if wrong:
        raise ValueError(f"port: shapes differ after the layout change ({'; '.join(wrong)}); nothing was copied")


def layer_differences(torch_maps, keras_maps) -> list[tuple[str, float]]:
    """[(layer, relative max error)] of two `feature_maps` results (torch NCHW, Keras NHWC), in the
    torch order: max |torch - Keras| / max |Keras| per layer present in both."""
    return _differences(torch_maps, keras_maps, op="layer_differences")


def _differences(torch_maps, keras_maps, *, op):
    import torch

    _checks.instance(torch_maps, Mapping, op=op, name="torch_maps",
                     expected="a dict of torch feature maps (a torch model's feature_maps result)")
    _checks.instance(keras_maps, Mapping, op=op, name="keras_maps",
                     expected="a dict of Keras feature maps (a Keras model's feature_maps result)")
    wrong = [name for name, value in torch_maps.items() if not isinstance(value, torch.Tensor)]
    if wrong:
        raise TypeError(f"{op}: argument 'torch_maps' must map names to torch tensors, got "
                        f"{type(torch_maps[wrong[0]]).__name__} for {wrong[0]!r}")
    table = []
    for name, value in torch_maps.items():
        if name not in keras_maps:
            continue
        ours = value.detach().cpu().numpy()
        ours = ours.transpose(0, 2, 3, 1) if ours.ndim == 4 else ours
        theirs = np.asarray(keras_maps[name])
        if ours.shape != theirs.shape:
            table.append((name, float("inf")))
            continue
        scale = max(float(np.abs(theirs).max()), np.finfo(np.float64).tiny)
        table.append((name, float(np.abs(ours.astype(np.float64) - theirs).max() / scale)))
    return table


def first_difference(torch_maps, keras_maps, *, rtol=1e-4):
    """(layer, relative max error) of the first layer whose outputs differ by more than `rtol`
    (shapes that differ count as infinite), or None when every layer agrees: where a port broke."""
    rtol = _checks.non_negative_number(rtol, op="first_difference", name="rtol")
    differences = _differences(torch_maps, keras_maps, op="first_difference")
    return next(((name, error) for name, error in differences if not error <= rtol),
                None)


# ---- Legacy Keras 2 HDF5 weight files ---------------------------------------------------------
# The layout (tests/keras2_h5.py writes it): the root, or its `model_weights` group in a
# model.save() file, lists every layer in the attribute `layer_names` (split into layer_names0,
# layer_names1, ... when over HDF5's 64 KB header limit); each layer's group lists its weights in
# `weight_names` ("conv1_1/kernel:0"), each a dataset at the group path + that name. A nested
# model's group holds its layers' weights ("rpn_conv_shared/kernel:0" under /rpn_model).

# The rules of the kinds the torch port has no use for (Keras' Dense kernel is (in, out)).
_DENSE = [("weight", "kernel", (1, 0)), ("bias", "bias", None)]


@dataclasses.dataclass(frozen=True)
class Keras2Report:
    """What `load_keras2_h5` did with a Keras 2 file, every weight accounted for.

    loaded: [(file layer, target layer, kind, [(weight, shape in the target)])];
    missing: [(target layer, [weight])] of the target's layers the file has no layer for: left
        at their values (their initial values in a new model);
    unused: [(file layer, [weight])] of the file's layers no target layer is named after;
    mismatched: [(layer, why)] of the layers whose weights differ in names or shapes (`why`
        names both shapes): not loaded, the target's left as they were;
    excluded: the layers skipped on request (`exclude`), neither loaded nor reported above.
    """

    path: str
    loaded: tuple
    missing: tuple
    unused: tuple
    mismatched: tuple
    excluded: tuple

    @property
    def moved(self):
        """[(target layer/weight, target shape)] of every weight loaded."""
        return tuple((f"{target}/{weight}", shape)
                     for _, target, _, weights in self.loaded for weight, shape in weights)

    @property
    def complete(self):
        """Whether every weight of the file was loaded and every weight of the target was set
        (excluded layers aside)."""
        return not (self.missing or self.unused or self.mismatched)

    @property
    def problems(self) -> list[str]:
        """One line per layer that was not loaded (missing, unused, mismatched), empty when complete."""
        return ([f"missing from the file (left at its initial values): {name} [{', '.join(weights)}]"
                 for name, weights in self.missing]
                + [f"unused (no layer of that name in the model): {name} [{', '.join(weights)}]"
                   for name, weights in self.unused]
                + [f"mismatched: {name}: {why}" for name, why in self.mismatched])

    def summary(self) -> str:
        """One line: counts of what was loaded and of what was not."""
        count = sum(len(weights) for _, _, _, weights in self.loaded)
        return (f"{self.path}: {count} weight(s) of {len(self.loaded)} layer(s) loaded; {len(self.missing)} "
                f"missing, {len(self.unused)} unused, {len(self.mismatched)} mismatched, {len(self.excluded)} "
                f"excluded")

    def __str__(self):
        lines = [self.summary()]
        for source, target, kind, weights in self.loaded:
            renamed = f" <- {source}" if source != target else ""
            lines.append(f"  {target}{renamed} ({kind}): " + ", ".join(f"{w} {shape}" for w, shape in weights))
        lines += [f"  {line}" for line in self.problems]
        if self.excluded:
            lines.append(f"  excluded: {', '.join(self.excluded)}")
        return "\n".join(lines)


def read_keras2_h5(path) -> dict[str, dict[str, np.ndarray]]:
    """{layer: {weight: array in the Keras layout}} of a Keras 2 HDF5 weight file, the layers with
    weights in the file's order ("conv1_1": {"kernel": (3, 3, 3, 64), "bias": (64,)}); a nested
    model's layers appear under their own names. Reads every weight into memory."""
    with _Keras2File(path, op="read_keras2_h5") as file:
        return {layer: {weight: np.asarray(dataset[()]) for weight, dataset in weights.items()}
                for layer, weights in file.layers.items()}


def load_keras2_h5(model, path, *, exclude=(), strict: bool = True,
                   rename: Mapping[str, str] | None = None) -> Keras2Report:
    """Loads a legacy Keras 2 HDF5 weight file (Keras 2's or tf.keras 2's `save_weights` or `save`
    .h5) into a torch module or a built Keras 3 layer or model, by layer name, and reports every
    weight: loaded, missing from the file, unused, mismatched, excluded (`Keras2Report`).

    A file layer loads into the target layer of the same name (`rename` maps file names to target
    names first); the names of a torch module's layers are their last attribute names, the module
    itself is named by its `name` attribute (impls' layers have one) or "". A layer's weights are
    matched by their Keras names (kernel, bias, gamma, beta, moving_mean, moving_variance, CrfRnn's
    matrices); a torch layer gets them through the port's layout table (convolution HWIO -> OIHW,
    transposed convolution HWOI -> IOHW, Linear (in, out) -> (out, in), BatchNorm gamma/beta/moving
    statistics -> weight/bias/running_mean/running_var).

    `exclude`: layer names (of the file or the target) to skip, as matterport's
    `load_weights(exclude=[...])` when fine-tuning on other classes; a name in neither is an
    error (a typo would otherwise load the layer it meant to skip).

    `strict=True` (the default): any missing, unused or mismatched layer raises a ValueError that
    names each (and both shapes of a mismatch) before anything is loaded: never a silent partial
    load. `strict=False` loads every layer that matches and returns the report of the rest. A file
    that shares no layer with the target raises either way.

    A weight file holds no configuration: BatchNorm's epsilon (Keras 2's default 1e-3, torch's
    1e-5) and momentum keep the target's values. Files of Keras 1 or of the Theano backend (whose
    kernels are flipped) are refused."""
    op = "load_keras2_h5"
    target = _keras2_target(model, op=op)
    if not isinstance(strict, bool):
        raise TypeError(f"{op}: argument 'strict' must be a bool, got {strict!r} of type {type(strict).__name__}")
    rename = _rename(rename, op=op)
    exclude = _exclude(exclude, op=op)
    with _Keras2File(path, op=op) as file:
        _check_names(rename, exclude, file, target, op=op)
        plan, unused, mismatched, excluded = [], [], [], []
        for name, weights in file.layers.items():
            target_name = rename.get(name, name)
            if name in exclude or target_name in exclude:
                excluded.append(name)
                continue
            layer = target.layers.get(target_name)
            if layer is None:
                unused.append((name, tuple(weights)))
                continue
            why = target.difference(layer, {weight: tuple(d.shape) for weight, d in weights.items()})
            if why:
                mismatched.append((name, why + (f" (target layer {target_name!r})" if name in rename else "")))
            else:
                plan.append((name, target_name, layer, weights))
        matched = {rename.get(name, name) for name in file.layers}
        missing = tuple((name, target.weight_names(layer)) for name, layer in target.layers.items()
                        if name not in matched and name not in exclude)
        if file.layers and len(unused) == len(file.layers):
            raise ValueError(f"{op}: {file.path} shares no layer name with the target: the file has "
                             f"{list(file.layers)}, the target {list(target.layers)}; nothing was loaded")
        report = Keras2Report(file.path, (), missing, tuple(unused), tuple(mismatched), tuple(excluded))
        if strict and not report.complete:
            raise ValueError(f"{op}: {file.path} does not match the model (strict=True); nothing was loaded:\n  "
                             + "\n  ".join(report.problems)
                             + "\n(exclude=[...] skips layers on purpose; strict=False loads what matches and "
                               "returns this report)")
        loaded = tuple((name, target_name, target.kind(layer), target.load(layer, weights))
                       for name, target_name, layer, weights in plan)
        return dataclasses.replace(report, loaded=loaded)


def _exclude(exclude, *, op):
    if isinstance(exclude, str | bytes) or not isinstance(exclude, Iterable):
        raise TypeError(f"{op}: argument 'exclude' must be a list of layer names, got {exclude!r}")
    names = tuple(exclude)
    wrong = [name for name in names if not isinstance(name, str)]
    if wrong:
        raise TypeError(f"{op}: argument 'exclude' must hold layer names (str), got {wrong[0]!r}")
    return frozenset(names)


def _check_names(rename, exclude, file, target, *, op):
    unknown = sorted(set(rename) - set(file.layers))
    if unknown:
        raise ValueError(f"{op}: argument 'rename' must map layers of the file, got {unknown}, which the file "
                         f"has no weights for (its layers: {list(file.layers)})")
    known = set(file.layers) | set(target.layers) | set(rename.values())
    unknown = sorted(exclude - known)
    if unknown:
        raise ValueError(f"{op}: argument 'exclude' must name layers of the file or the model, got {unknown}, "
                         f"which neither has")


def _rename(rename, *, op):
    if rename is None:
        return {}
    if not isinstance(rename, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in rename.items()):
        raise TypeError(f"{op}: argument 'rename' must be a mapping of file layer names to target layer names "
                        f"(str to str), got {rename!r}")
    targets = list(rename.values())
    twice = sorted({name for name in targets if targets.count(name) > 1})
    if twice:
        raise ValueError(f"{op}: argument 'rename' must map one file layer to each target layer, got several "
                         f"onto {twice}")
    return dict(rename)


class _Keras2File:
    """An open Keras 2 HDF5 file: `layers`, {layer: {weight: h5py dataset}} of the layers with
    weights (a nested model's layers flattened), in the file's order; nothing read yet."""

    def __init__(self, path, *, op):
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"{op}: argument 'path' must be a path (str or os.PathLike), got {path!r} of type "
                            f"{type(path).__name__}")
        self.path, self.op = os.fspath(path), op
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{op}: argument 'path' must name an existing file, got {self.path!r}")

    def __enter__(self):
        import h5py

        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            raise ValueError(f"{self.op}: argument 'path' must be an HDF5 file, got {self.path!r} ({error})") from None
        try:
            self.layers = self._layers(self._root())
        except BaseException:
            self._file.close()
            raise
        return self

    def __exit__(self, *_):
        self._file.close()

    def _refuse(self, why):
        raise ValueError(f"{self.op}: argument 'path' must be a Keras 2 HDF5 weight file, got {self.path!r}, {why}")

    def _root(self):
        file = self._file
        if _has_names(file.attrs, "layer_names"):
            root = file
        elif "model_weights" in file and _has_names(file["model_weights"].attrs, "layer_names"):
            root = file["model_weights"]
        elif "layers" in file or "vars" in file:
            self._refuse("which is a Keras 3 .weights.h5 file (Keras 3's model.load_weights reads it)")
        else:
            self._refuse("which has no 'layer_names' attribute")
        version = _text(root.attrs.get("keras_version", file.attrs.get("keras_version", b"")))
        if version.startswith("1."):
            self._refuse(f"which Keras {version} wrote (Keras 1's names and layouts differ)")
        backend = _text(root.attrs.get("backend", file.attrs.get("backend", b"")))
        if backend == "theano":
            self._refuse("which the Theano backend wrote (its convolution kernels are flipped)")
        return root

    def _layers(self, root):
        layers = {}
        for group_name in _names(root.attrs, "layer_names"):
            if group_name not in root:
                self._refuse(f"which lists layer {group_name!r} in layer_names but has no group for it")
            group = root[group_name]
            for weight_name in _names(group.attrs, "weight_names"):
                layer, weight = _split_weight_name(group_name, weight_name)
                weights = layers.setdefault(layer, {})
                if weight in weights:
                    self._refuse(f"which holds weight {weight!r} of layer {layer!r} twice")
                if weight_name not in group:
                    self._refuse(f"which lists weight {weight_name!r} of {group_name!r} but has no dataset for it")
                weights[weight] = group[weight_name]
        return layers


def _has_names(attrs, key):
    return key in attrs or f"{key}0" in attrs


def _names(attrs, key):
    """A list-of-names attribute, whole or split into key0, key1, ... (Keras 2's long attributes)."""
    if key in attrs:
        values = list(attrs[key])
    else:
        values, index = [], 0
        while f"{key}{index}" in attrs:
            values += list(attrs[f"{key}{index}"])
            index += 1
    return [_text(value) for value in values]


def _text(value):
    return value.decode("utf8") if isinstance(value, bytes | np.bytes_) else str(value)


def _split_weight_name(group, name):
    """(layer, weight) of a weight name in a layer's group: "conv1_1/kernel:0" -> (conv1_1, kernel).
    The name is the variable's scope: the group's layer where the scope holds the group's name
    (also as TF uniquified it, conv1_1_1, or under an outer scope, model_1/conv1_1), else the layer
    of a nested model ("rpn_conv_shared/kernel:0" in /rpn_model)."""
    parts = re.sub(r":\d+$", "", name).split("/")
    own = re.compile(re.escape(group) + r"(?:_\d+)?")
    scopes = [index for index, part in enumerate(parts[:-1]) if own.fullmatch(part)]
    if scopes:
        return group, "/".join(parts[scopes[-1] + 1:])
    if len(parts) == 1:
        return group, parts[0]
    return parts[-2], parts[-1]


def _keras2_target(model, *, op):
    """The target of a load: a torch module or a Keras layer. A model of either kind means its
    framework is imported already: the other one is never imported (TF takes seconds)."""
    torch, keras = sys.modules.get("torch"), sys.modules.get("keras")
    if torch is not None and isinstance(model, torch.nn.Module):
        return _TorchTarget(model)
    if keras is not None and isinstance(model, keras.layers.Layer):
        return _KerasTarget(model)
    raise TypeError(f"{op}: argument 'model' must be a torch.nn.Module or a Keras layer or model "
                    f"(keras.layers.Layer), got {type(model).__name__}")


class _TorchTarget:
    """A torch module's layers with weights, by name, and the Keras 2 -> torch layout of each kind."""

    def __init__(self, module):
        name = getattr(module, "name", None)
        self.layers = {(name if isinstance(name, str) else "") if key == _TOP else key: child
                       for key, child in _torch_layers(module).items()}

    @staticmethod
    def _rules(module):
        """(kind, {Keras weight: (torch tensor, torch -> Keras axes)})."""
        import torch

        if isinstance(module, torch.nn.Linear):
            kind, table = "dense", _DENSE if module.bias is not None else _DENSE[:1]
        else:
            kind, table = _kind(module)
        return kind, {keras: (getattr(module, name), axes) for name, keras, axes in table}

    def kind(self, module):
        return self._rules(module)[0]

    def weight_names(self, module):
        try:
            return tuple(self._rules(module)[1])
        except ValueError:  # a kind without a rule: named by its torch tensors
            own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            return tuple(name for name, _ in own)

    def difference(self, module, shapes):
        _, rules = self._rules(module)
        expected = {weight: _keras_shape(tuple(tensor.shape), axes) for weight, (tensor, axes) in rules.items()}
        return _weight_difference(shapes, expected)

    def load(self, module, datasets):
        import torch

        _, rules = self._rules(module)
        done = []
        with torch.no_grad():
            for weight, dataset in datasets.items():
                tensor, axes = rules[weight]
                value = np.asarray(dataset[()])
                value = value.transpose(np.argsort(axes)) if axes else value
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(tensor.dtype))
                done.append((weight, tuple(tensor.shape)))
        return tuple(done)


def _keras_shape(shape, axes):
    return tuple(shape[axis] for axis in axes) if axes else shape


class _KerasTarget:
    """A Keras layer's or model's layers with weights of their own, by name (the layer itself by its name)."""

    def __init__(self, model):
        if not model.weights:
            raise ValueError("load_keras2_h5: argument 'model' must be built (call it once on an input, or "
                             "build it), got a Keras model with no weights yet")
        self.layers = {model.name if key == _TOP else key: layer for key, layer in _keras_layers(model).items()}

    @staticmethod
    def _variables(layer):
        return {variable.path.rsplit("/", 1)[-1]: variable for variable in layer.weights if _owner(variable, layer)}

    def kind(self, layer):
        return type(layer).__name__

    def weight_names(self, layer):
        return tuple(self._variables(layer))

    def difference(self, layer, shapes):
        return _weight_difference(shapes, {name: tuple(v.shape) for name, v in self._variables(layer).items()})

    def load(self, layer, datasets):
        variables = self._variables(layer)
        done = []
        for weight, dataset in datasets.items():
            variable = variables[weight]
            variable.assign(np.asarray(dataset[()]).astype(variable.dtype))
            done.append((weight, tuple(variable.shape)))
        return tuple(done)


def _weight_difference(found, expected):
    """Why a file layer's {weight: shape} cannot load into a target layer's (Keras layout), or ""."""
    if set(found) != set(expected):
        return f"the file has weights {sorted(found)}, the target {sorted(expected)}"
    wrong = [f"{weight} {found[weight]} in the file vs {expected[weight]} in the target" for weight in found
             if found[weight] != expected[weight]]
    return ", ".join(wrong)
