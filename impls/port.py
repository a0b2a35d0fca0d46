"""Weight porting between the torch and Keras versions of a layer or model, by layer name.

Layers are matched by name: a torch module's last attribute name (``backbone.res2a_branch2a``
-> ``res2a_branch2a``) against a Keras layer's name; the top-level objects themselves, when
they hold weights (a bare layer such as CrfRnn), match each other whatever their names and
are reported under the Keras layer's name. The layout rules of each kind apply:

| kind | torch | Keras |
| --- | --- | --- |
| convolution | weight OIHW, bias | kernel HWIO, bias |
| transposed convolution (BilinearUpsample) | weight IOHW | kernel HWOI |
| BatchNorm | weight, bias, running_mean/var; eps; momentum m | gamma, beta, moving_mean/variance; epsilon; 1 - m |
| CrfRnn | its three (C, C) matrices | the same, as they are |

No spatial flip: both frameworks correlate. The whole port is planned and checked first; a
name only on one side or a shape that differs after the layout change raises ValueError and
nothing is copied. The returned report lists what moved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from impls import _checks

__all__ = ["PortReport", "torch_to_tf", "tf_to_torch", "layer_differences", "first_difference"]

# (torch name, Keras name, torch -> Keras axes) of each kind's weights.
_CONV = [("weight", "kernel", (2, 3, 1, 0)), ("bias", "bias", None)]
_BATCHNORM = [("weight", "gamma", None), ("bias", "beta", None), ("running_mean", "moving_mean", None),
              ("running_var", "moving_variance", None)]
# The key of the top-level module / layer itself (a torch module has no name of its own).
_TOP = "<top level>"
_CRFRNN = [(name, name, None) for name in ("spatial_ker_weights", "bilateral_ker_weights", "compatibility_matrix")]


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
            for _, tensor, value in weights:
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(tensor.dtype))
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
    if isinstance(module, torch.nn.BatchNorm2d):
        return "BatchNorm", _BATCHNORM
    if isinstance(module, CrfRnn):
        return "CrfRnn", _CRFRNN
    raise ValueError(f"port: no porting rule for torch layer type {type(module).__name__}; nothing was copied")


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
