"""Legacy Keras 2 HDF5 weight files (`model.save_weights("x.h5")` or `model.save("x.h5")` of Keras
2.x or tf.keras 2.x), into a torch module or a Keras 3 model by layer name: `load_keras2_h5`,
strict by default (a missing, unused or mismatched layer raises, naming it, before anything is
loaded), with `exclude=` for fine-tuning and a report of every weight; `read_keras2_h5` reads a
file into arrays. The file holds the Keras layout, so a torch module gets the port's layout
change (impls.port.frameworks; and torch's Linear gets Dense's kernel (in, out) as weight (out, in)).

The layout (tests/keras2_h5.py writes it): the root, or its `model_weights` group in a
model.save() file, lists every layer in the attribute `layer_names` (split into layer_names0,
layer_names1, ... when over HDF5's 64 KB header limit); each layer's group lists its weights in
`weight_names` ("conv1_1/kernel:0"), each a dataset at the group path + that name. A nested
model's group holds its layers' weights ("rpn_conv_shared/kernel:0" under /rpn_model).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from impls.port import _loading
from impls.port._layers import DENSE, TOP, keras_layers, owner, torch_layers
from impls.port._layers import kind as layer_kind

__all__ = ["Keras2Report", "read_keras2_h5", "load_keras2_h5"]

# The report of every loader; its name when only Keras 2 files had one.
Keras2Report = _loading.LoadReport


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
    target = _loading.target_of(model, _TorchTarget, _KerasTarget, op=op)
    strict = _loading.check_strict(strict, op=op)
    rename = _loading.check_rename(rename, op=op)
    exclude = _loading.check_exclude(exclude, op=op)
    with _Keras2File(path, op=op) as file:
        return _loading.load(file.layers, target, path=file.path, op=op, strict=strict, exclude=exclude,
                             rename=rename)


class _Keras2File:
    """An open Keras 2 HDF5 file: `layers`, {layer: {weight: h5py dataset}} of the layers with
    weights (a nested model's layers flattened), in the file's order; nothing read yet."""

    def __init__(self, path, *, op):
        self.path, self.op = _loading.check_path(path, op=op), op

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


class _TorchTarget:
    """A torch module's layers with weights, by name, and the Keras 2 -> torch layout of each kind."""

    def __init__(self, module):
        name = getattr(module, "name", None)
        self.layers = {(name if isinstance(name, str) else "") if key == TOP else key: child
                       for key, child in torch_layers(module).items()}

    @staticmethod
    def _rules(module):
        """(kind, {Keras weight: (torch tensor, torch -> Keras axes)})."""
        import torch

        if isinstance(module, torch.nn.Linear):
            kind, table = "dense", DENSE if module.bias is not None else DENSE[:1]
        else:
            kind, table = layer_kind(module)
        return kind, {keras: (getattr(module, name), axes) for name, keras, axes in table}

    def kind(self, module):
        return self._rules(module)[0]

    def weight_names(self, module):
        try:
            return tuple(self._rules(module)[1])
        except ValueError:  # a kind without a rule: named by its torch tensors
            own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            return tuple(name for name, _ in own)

    def difference(self, module, weights):
        _, rules = self._rules(module)
        expected = {weight: _keras_shape(tuple(tensor.shape), axes) for weight, (tensor, axes) in rules.items()}
        return _loading.weight_difference(_loading.shapes(weights), expected)

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
        self.layers = {model.name if key == TOP else key: layer for key, layer in keras_layers(model).items()}

    @staticmethod
    def _variables(layer):
        return {variable.path.rsplit("/", 1)[-1]: variable for variable in layer.weights if owner(variable, layer)}

    def kind(self, layer):
        return type(layer).__name__

    def weight_names(self, layer):
        return tuple(self._variables(layer))

    def difference(self, layer, weights):
        expected = {name: tuple(v.shape) for name, v in self._variables(layer).items()}
        return _loading.weight_difference(_loading.shapes(weights), expected)

    def load(self, layer, datasets):
        variables = self._variables(layer)
        done = []
        for weight, dataset in datasets.items():
            variable = variables[weight]
            variable.assign(np.asarray(dataset[()]).astype(variable.dtype))
            done.append((weight, tuple(variable.shape)))
        return tuple(done)
