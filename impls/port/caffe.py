"""Caffe's binary weight files (.caffemodel, a serialised NetParameter), read without Caffe and
without generated `caffe_pb2` code: `read_caffemodel` gives every layer's blobs, `load_caffemodel`
loads them into the project's torch modules and Keras 3 models (and impls.caffe's Net) by layer
name, with the report and strictness of every loader (impls.port._loading).

The file is memory-mapped and its wire format read directly (impls.port._wire): so there is no
64 MB message limit (protobuf's, which VGG-sized files exceed), a blob's packed floats are viewed
in place (a 500 MB file is not copied to be read; loading copies each blob once, into the model),
and the forks of Caffe whose field numbers clash with BVLC's (CRF-RNN's multi_stage_meanfield_param
is 146, BVLC's recurrent_param; DeepLab's interp_param is 143, BVLC's input_param) read alike:
only the fields every Caffe shares are decoded. What is read:

- NetParameter: name (1), layer (100, V2 files) or layers (2, V1 files, whose type is the V1 enum,
  translated to V2's type names as Caffe's upgrade_proto does); a V0 file (a `layer` inside each
  V1 layer) is refused with the reason;
- each layer: name, type, bottom and top names, blobs (V2: fields 1, 2, 3, 4, 7; V1: 4, 5, 2, 3, 6),
  and, where a layout depends on it, InnerProduct's `transpose`;
- each blob: its shape as BlobShape (7) or the legacy num/channels/height/width (1-4), its values
  as float `data` (5) or `double_data` (8), packed or not.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
from collections.abc import Mapping

import numpy as np

from impls.port import _loading, _wire
from impls.port._layers import TOP, keras_layers, torch_layers

__all__ = ["CaffeLayer", "CaffeModel", "read_caffemodel", "load_caffemodel"]

# V1LayerParameter.LayerType: number -> (enum name, the V2 type name, as Caffe's UpgradeV1LayerType).
# 40 and 42 are the CRF-RNN fork's (caffe-crfrnn, 2015), whose V1 files hold its Crop and
# MultiStageMeanfield layers (BVLC's enum stops at 39).
V1_TYPES = {
    35: ("ABSVAL", "AbsVal"), 1: ("ACCURACY", "Accuracy"), 30: ("ARGMAX", "ArgMax"), 2: ("BNLL", "BNLL"),
    3: ("CONCAT", "Concat"), 37: ("CONTRASTIVE_LOSS", "ContrastiveLoss"), 4: ("CONVOLUTION", "Convolution"),
    5: ("DATA", "Data"), 39: ("DECONVOLUTION", "Deconvolution"), 6: ("DROPOUT", "Dropout"),
    32: ("DUMMY_DATA", "DummyData"), 7: ("EUCLIDEAN_LOSS", "EuclideanLoss"), 25: ("ELTWISE", "Eltwise"),
    38: ("EXP", "Exp"), 8: ("FLATTEN", "Flatten"), 9: ("HDF5_DATA", "HDF5Data"), 10: ("HDF5_OUTPUT", "HDF5Output"),
    28: ("HINGE_LOSS", "HingeLoss"), 11: ("IM2COL", "Im2col"), 12: ("IMAGE_DATA", "ImageData"),
    13: ("INFOGAIN_LOSS", "InfogainLoss"), 14: ("INNER_PRODUCT", "InnerProduct"), 15: ("LRN", "LRN"),
    29: ("MEMORY_DATA", "MemoryData"), 16: ("MULTINOMIAL_LOGISTIC_LOSS", "MultinomialLogisticLoss"),
    34: ("MVN", "MVN"), 17: ("POOLING", "Pooling"), 26: ("POWER", "Power"), 18: ("RELU", "ReLU"),
    19: ("SIGMOID", "Sigmoid"), 27: ("SIGMOID_CROSS_ENTROPY_LOSS", "SigmoidCrossEntropyLoss"),
    36: ("SILENCE", "Silence"), 20: ("SOFTMAX", "Softmax"), 21: ("SOFTMAX_LOSS", "SoftmaxWithLoss"),
    22: ("SPLIT", "Split"), 33: ("SLICE", "Slice"), 23: ("TANH", "TanH"), 24: ("WINDOW_DATA", "WindowData"),
    31: ("THRESHOLD", "Threshold"),
    40: ("CROP", "Crop"), 41: ("SIMPLE_FAST_MEANFIELD", "SimpleFastMeanfield"),
    42: ("MULTI_STAGE_MEANFIELD", "MultiStageMeanfield"),
}
V1_TYPE_NAMES = {enum: v2 for enum, v2 in V1_TYPES.values()}  # the V1 enum name -> the V2 type name
# Field numbers: NetParameter, and (V2, V1) LayerParameter's.
_NET_NAME, _NET_LAYERS_V1, _NET_LAYER_V2 = 1, 2, 100
_V2 = dict(name=1, type=2, bottom=3, top=4, blobs=7, inner_product_param=117)
_V1 = dict(name=4, type=5, bottom=2, top=3, blobs=6, inner_product_param=17, v0_layer=1)
_INNER_PRODUCT_TRANSPOSE = 6
# BlobProto: legacy num/channels/height/width, data, double_data, shape; BlobShape: dim.
_BLOB_LEGACY, _BLOB_DATA, _BLOB_DOUBLE, _BLOB_SHAPE, _SHAPE_DIM = (1, 2, 3, 4), 5, 8, 7, 1


@dataclasses.dataclass(frozen=True)
class CaffeLayer:
    """One layer of a .caffemodel: its blobs (float32 or, from `double_data`, float64 arrays in
    their file shapes, read-only views of the file where they were packed) and whether each blob's
    shape is the legacy 4-D num/channels/height/width (Caffe compares those after leading 1s)."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    blobs: tuple[np.ndarray, ...]
    legacy_shapes: tuple[bool, ...]
    transpose: bool = False  # InnerProduct's inner_product_param.transpose: its weight is (in, out)


@dataclasses.dataclass(frozen=True)
class CaffeModel:
    """A .caffemodel: `format` "V1" or "V2", the net's `name` and its `layers` in the file's order."""

    path: str
    format: str
    name: str
    layers: tuple[CaffeLayer, ...]

    @classmethod
    def read(cls, path, *, op: str = "read_caffemodel") -> CaffeModel:
        path = _loading.check_path(path, op=op)
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                raise ValueError(f"{op}: {path} is empty, not a Caffe NetParameter (.caffemodel)")
            buffer = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return _read_net(buffer, path)
        except _wire.WireError as error:
            if error.past == len(buffer):
                raise ValueError(f"{op}: {path} is truncated: {error.why} (the file's {len(buffer)} bytes); "
                                 f"nothing was read") from None
            raise ValueError(f"{op}: {path} is not a Caffe NetParameter (.caffemodel): {error.why}"
                             f"{_looks_like(buffer)}; nothing was read") from None

    def weights(self, *, op: str) -> dict[str, CaffeLayer]:
        """{name: layer} of the layers with blobs, in the file's order (two such layers with one
        name are refused: Caffe would load only the first)."""
        found = {}
        for layer in self.layers:
            if not layer.blobs:
                continue
            if layer.name in found:
                raise ValueError(f"{op}: {self.path} holds two layers named {layer.name!r} with blobs; Caffe "
                                 f"loads only the first of them, so the file is ambiguous")
            found[layer.name] = layer
        return found


def read_caffemodel(path) -> dict[str, list[np.ndarray]]:
    """{layer name: [blobs]} of a Caffe .caffemodel (V1 or V2 NetParameter), every layer in the
    file's order ([] for a layer without weights; of two layers with one name, the one with blobs).
    Blobs keep the file's shapes (legacy 4-D ones included) and dtype (float32, or float64 from
    `double_data`); packed ones are read-only views of the memory-mapped file, not copies."""
    model = CaffeModel.read(path)
    found = {}
    for layer in model.layers:
        if layer.name not in found or (layer.blobs and not found[layer.name]):
            found[layer.name] = list(layer.blobs)
    model.weights(op="read_caffemodel")  # refuses two weighted layers with one name
    return found


def _looks_like(buffer) -> str:
    head = bytes(buffer[:64])
    if head.startswith(b"\x89HDF"):
        return " (it is an HDF5 file: a Keras .h5 is read by load_keras2_h5)"
    if head.startswith(b"PK\x03\x04"):
        return " (it is a zip archive: a torch .pt or Keras .keras file?)"
    if head and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return " (it looks like text: a .prototxt is read by impls.port.read_prototxt)"
    return ""


def _read_net(buffer, path) -> CaffeModel:
    size = len(buffer)
    name, layers, kinds = "", [], set()
    for number, wire, value, at in _wire.fields(buffer, 0, size):
        if number == _NET_NAME and wire == _wire.LENGTH:
            name = _wire.text(buffer, value)
        elif number in (_NET_LAYER_V2, _NET_LAYERS_V1) and wire == _wire.LENGTH:
            fields = _V2 if number == _NET_LAYER_V2 else _V1
            layers.append(_read_layer(buffer, value, fields, len(layers)))
            kinds.add("V2" if number == _NET_LAYER_V2 else "V1")
        elif number in (_NET_LAYER_V2, _NET_LAYERS_V1):
            raise _wire.WireError(f"field {number} (layers) at byte {at} has wire type {wire}, not a message", at)
    if not layers:
        raise _wire.WireError("it holds no layer (neither `layer` nor `layers`)", 0)
    if len(kinds) > 1:
        raise _wire.WireError("it mixes V1 `layers` and V2 `layer` fields", 0)
    return CaffeModel(path, kinds.pop(), name, tuple(layers))


def _read_layer(buffer, span, fields, index) -> CaffeLayer:
    name, type_, bottoms, tops, blobs, legacy, transpose = f"#{index}", "", [], [], [], [], False
    v1 = fields is _V1
    for number, wire, value, at in _wire.fields(buffer, span.start, span.end):
        if number == fields["name"] and wire == _wire.LENGTH:
            name = _wire.text(buffer, value)
        elif number == fields["type"]:
            type_ = _v1_type(value, at) if v1 else _wire.text(buffer, value)
        elif number == fields["bottom"] and wire == _wire.LENGTH:
            bottoms.append(_wire.text(buffer, value))
        elif number == fields["top"] and wire == _wire.LENGTH:
            tops.append(_wire.text(buffer, value))
        elif number == fields["blobs"] and wire == _wire.LENGTH:
            array, is_legacy = _read_blob(buffer, value, name, len(blobs))
            blobs.append(array)
            legacy.append(is_legacy)
        elif number == fields["inner_product_param"] and wire == _wire.LENGTH:
            transpose = _read_transpose(buffer, value)
        elif v1 and number == _V1["v0_layer"] and wire == _wire.LENGTH:
            raise _wire.WireError(f"layer {index} at byte {span.start} is a V0 layer (Caffe before 2014); upgrade "
                                  f"the file with Caffe's upgrade_net_proto_binary", span.start)
    if v1 and type_ == "":
        raise _wire.WireError(f"layer {name!r} at byte {span.start} has no type", span.start)
    return CaffeLayer(name, type_, tuple(bottoms), tuple(tops), tuple(blobs), tuple(legacy), transpose)


def _v1_type(value, at):
    """The V2 type name of a V1 enum value; a number no Caffe we know gave keeps it ("V1 type 43"):
    loading is by name, and such a layer loads into nothing that has a rule (it is reported)."""
    if not isinstance(value, int):
        raise _wire.WireError(f"a V1 layer type at byte {at} is not an enum value", at)
    return V1_TYPES[value][1] if value in V1_TYPES else f"V1 type {value}"


def _read_transpose(buffer, span):
    transpose = False
    for number, wire, value, _ in _wire.fields(buffer, span.start, span.end):
        if number == _INNER_PRODUCT_TRANSPOSE and wire == _wire.VARINT:
            transpose = bool(value)
    return transpose


def _read_blob(buffer, span, layer, index) -> tuple[np.ndarray, bool]:
    """(values in the blob's shape, whether the shape is the legacy 4-D one) of a BlobProto."""
    legacy, dims, floats, doubles = [0, 0, 0, 0], None, [], []
    offset = span.start
    while offset < span.end:
        number, wire, value, after = _wire.next_field(buffer, offset, span.end)
        if number in _BLOB_LEGACY and wire == _wire.VARINT:
            legacy[_BLOB_LEGACY.index(number)] = _wire.signed32(value)
        elif number == _BLOB_SHAPE and wire == _wire.LENGTH:
            dims = _read_shape(buffer, value)
        elif number in (_BLOB_DATA, _BLOB_DOUBLE):
            dtype = "<f4" if number == _BLOB_DATA else "<f8"
            target = floats if number == _BLOB_DATA else doubles
            if wire == _wire.LENGTH:
                target.append(_wire.packed_array(buffer, value, dtype))
            elif wire == (_wire.FIXED32 if number == _BLOB_DATA else _wire.FIXED64):
                values, after = _wire.unpacked_run(buffer, offset, span.end, number, dtype)
                target.append(values)
            else:
                raise _wire.WireError(f"blob {index} of layer {layer!r}: field {number} at byte {offset} has wire "
                                      f"type {wire}", offset)
        offset = after
    parts = doubles or floats  # Caffe reads double_data when it is there, data otherwise
    values = parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else np.zeros(0, np.float32))
    shape = tuple(dims) if dims is not None else tuple(legacy)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if any(d < 0 for d in shape) or count != values.size:
        raise _wire.WireError(f"blob {index} of layer {layer!r} has shape {shape} ({count} values) but holds "
                              f"{values.size} value(s)", span.start)
    return values.reshape(shape), dims is None


def _read_shape(buffer, span):
    dims = []
    for number, wire, value, _ in _wire.fields(buffer, span.start, span.end):
        if number == _SHAPE_DIM and wire == _wire.VARINT:
            dims.append(_wire.signed32(value))
        elif number == _SHAPE_DIM and wire == _wire.LENGTH:
            dims += [_wire.signed32(v) for v in _wire.packed_varints(buffer, value)]
    return dims


# ---- Loading into torch modules and Keras models -----------------------------------------------

# What each blob of a layer type is, by position, in the names the reports use.
BLOB_ROLES = {
    "Convolution": ("weights", "bias"), "Deconvolution": ("weights", "bias"), "InnerProduct": ("weights", "bias"),
    "BatchNorm": ("mean", "variance", "factor"), "Scale": ("scale", "bias"),
    "MultiStageMeanfield": ("spatial_ker_weights", "bilateral_ker_weights", "compatibility_matrix"),
}


@dataclasses.dataclass(frozen=True)
class _Blob:
    """A file blob as a loader sees it: its values, whether its shape is legacy 4-D, and its layer's
    type and InnerProduct transpose flag (a layout rule depends on them)."""

    values: np.ndarray
    legacy: bool
    layer_type: str
    transpose: bool

    @property
    def shape(self):
        return tuple(self.values.shape)


def file_weights(layer: CaffeLayer, *, by_role: bool) -> dict[str, _Blob]:
    """{blob key: _Blob} of a file layer: keyed by role ("weights", "bias", "mean", ...) where its
    type has them (else "blob0", "blob1", ...), or by index ("0", "1", ...) for impls.caffe's Net."""
    roles = BLOB_ROLES.get(layer.type, ()) if by_role else ()
    keys = [roles[i] if i < len(roles) else (f"blob{i}" if by_role else str(i)) for i in range(len(layer.blobs))]
    return {key: _Blob(values, legacy, layer.type, layer.transpose)
            for key, values, legacy in zip(keys, layer.blobs, layer.legacy_shapes, strict=True)}


def shape_matches(blob: _Blob, expected: tuple) -> bool:
    """Caffe's Blob::ShapeEquals: a BlobShape must equal; a legacy num/channels/height/width equals
    the expected shape padded with leading 1s to four axes."""
    if not blob.legacy:
        return blob.shape == tuple(expected)
    return len(expected) <= 4 and (1,) * (4 - len(expected)) + tuple(expected) == blob.shape


def load_caffemodel(model, path, *, strict: bool = True, exclude=(), rename: Mapping[str, str] | None = None):
    """Loads a Caffe .caffemodel into a torch module or a built Keras 3 layer or model by layer name,
    and reports every weight (`LoadReport`: loaded, missing, unused, mismatched, excluded).

    A file layer with blobs loads into the model's layer of the same name (`rename` maps file names
    to model names first; several file layers may load into one model layer when they supply
    different weights, as Caffe's BatchNorm and the Scale after it into one BatchNorm layer). A torch
    module's layers are named by their last attribute name, Keras layers by their names (impls'
    models use the Caffe nets' names). The layout rules, from Caffe's blobs:

    - Convolution: weights (out, in/group, kh, kw) and bias: torch Conv2d as is, Keras Conv2D's
      kernel HWIO;
    - Deconvolution: weights (in, out/group, kh, kw) and bias: torch ConvTranspose2d and
      BilinearUpsample as is, Keras Conv2DTranspose's and BilinearUpsample's kernel HWOI;
    - InnerProduct: weights (out, in), or (in, out) where its `transpose` is set, and bias: torch
      Linear, Keras Dense's kernel (in, out);
    - BatchNorm: mean, variance and the moving-average factor (1,): a BatchNorm layer's running
      statistics mean / factor and variance / factor (a zero factor gives zeros, as Caffe);
    - Scale: scale (gamma) and bias (beta, where bias_term): a BatchNorm layer's gamma and beta
      (rename the Scale layer onto the BatchNorm layer), or FCN-8s at-once's ChannelScale;
    - MultiStageMeanfield (CRF-RNN's Caffe fork): spatial, bilateral and compatibility, each
      (1, 1, C, C): CrfRnn's three (C, C) matrices.

    A blob's shape is compared as Caffe compares it (a legacy 4-D num/channels/height/width shape
    equals the shape with leading 1s); a layer of another type (a Convolution into a transposed
    convolution) is a mismatch. A weight the model holds fixed (FCN's bilinear upsamplers, the
    at-once scales: requires_grad=False in torch, trainable=False in Keras) is compared with the
    file's and refused, naming it, when they differ: make it trainable to load another value.

    `strict=True` (the default): any missing, unused or mismatched layer raises a ValueError naming
    each before anything is copied; `strict=False` loads what matches and returns the report.
    `exclude`: layer names (of the file or the model) to skip. A file that shares no layer with the
    model raises either way. Layer parameters are not read from the file (a BatchNorm's eps keeps the
    model's); float64 blobs (`double_data`) are rounded to the model's dtype."""
    op = "load_caffemodel"
    target = _loading.target_of(model, _TorchTarget, _KerasTarget, op=op)
    strict = _loading.check_strict(strict, op=op)
    exclude = _loading.check_exclude(exclude, op=op)
    rename = _loading.check_rename(rename, op=op, one_to_one=False)
    caffe_model = CaffeModel.read(path, op=op)
    layers = {name: file_weights(layer, by_role=True) for name, layer in caffe_model.weights(op=op).items()}
    return _loading.load(layers, target, path=caffe_model.path, op=op, strict=strict, exclude=exclude,
                         rename=rename, merge=True)


@dataclasses.dataclass(frozen=True)
class _Slot:
    """One weight of a model layer as a Caffe blob: its Caffe-layout shape, how to read the model's
    value in that layout (for the fixed-weight check) and how to write a blob into the model."""

    shape: tuple
    read: object  # () -> array in the Caffe layout
    write: object  # (blob values, whole file layer's {key: _Blob}) -> None
    fixed: bool = False


@dataclasses.dataclass(frozen=True)
class _Rule:
    kind: str
    types: frozenset  # file layer types that may load into it
    slots: dict  # {blob key: _Slot}
    fixed_hint: str = ""


class _Target:
    """What a torch or a Keras target shares: checking and loading by the rules of `rule(layer)`."""

    def kind(self, layer):
        return self._rule_or_none(layer)[0]

    def weight_names(self, layer):
        kind, rule = self._rule_or_none(layer)
        return tuple(rule.slots) if rule else ()

    def _rule_or_none(self, layer):
        try:
            rule = self.rule(layer)
        except ValueError:
            return type(layer).__name__, None
        return rule.kind, rule

    def difference(self, layer, weights):
        try:
            rule = self.rule(layer)
        except ValueError as error:
            return str(error)
        types = sorted({blob.layer_type or "untyped" for blob in weights.values()})
        if not set(types) <= rule.types:
            return (f"a {' + '.join(types)} layer of the file cannot load into a {rule.kind} "
                    f"({type(layer).__name__}, which takes {' or '.join(sorted(rule.types))})")
        if set(weights) != set(rule.slots):
            return f"the file has blobs {sorted(weights)}, the model {sorted(rule.slots)}"
        wrong = [f"{key} {blob.shape}{' (legacy 4-D)' if blob.legacy else ''} in the file vs "
                 f"{_expected(blob, key, rule)} in the model" for key, blob in weights.items()
                 if not shape_matches(blob, _expected(blob, key, rule))]
        if wrong:
            return ", ".join(wrong)
        for key, blob in weights.items():
            slot = rule.slots[key]
            if slot.fixed:
                held = np.asarray(slot.read(), np.float64).reshape(blob.shape)
                gap = float(np.abs(held - np.asarray(blob.values, np.float64)).max()) if held.size else 0.0
                if not gap <= _FIXED_TOLERANCE:
                    return (f"{key}: the model holds this weight fixed and the file's differs (max |difference| "
                            f"{gap:.3g}); {rule.fixed_hint}")
        return ""

    def load(self, layer, weights):
        rule = self.rule(layer)
        done = []
        for key, blob in weights.items():
            rule.slots[key].write(blob.values, weights)
            done.append((key, tuple(rule.slots[key].shape)))
        return tuple(done)


def _expected(blob, key, rule):
    """The Caffe shape a file blob must have: the slot's, but (in, out) for the weights of an
    InnerProduct whose `transpose` is set."""
    shape = rule.slots[key].shape
    return tuple(reversed(shape)) if blob.transpose and blob.layer_type == "InnerProduct" and key == "weights" \
        else shape


# float32 rounding of the bilinear kernel's products (exact dyadic fractions in the authors' files).
_FIXED_TOLERANCE = 1e-6


def _per_factor(values, weights):
    """mean or variance divided by the BatchNorm's moving-average factor (0 when it is 0, as Caffe)."""
    factor = float(np.asarray(weights["factor"].values).reshape(-1)[0])
    return np.asarray(values, np.float64) * (0.0 if factor == 0 else 1.0 / factor)


class _TorchTarget(_Target):
    def __init__(self, module):
        name = getattr(module, "name", None)
        self.layers = {(name if isinstance(name, str) else "") if key == TOP else key: child
                       for key, child in torch_layers(module).items()}

    @staticmethod
    def _copy(tensor, transform=None):
        def write(values, weights):
            import torch

            value = np.asarray(values if transform is None else transform(values, weights))
            with torch.no_grad():
                tensor.copy_(torch.from_numpy(np.array(value, dtype=np.float64 if tensor.dtype == torch.float64
                                                       else np.float32)).reshape(tensor.shape))
        return write

    def rule(self, module):
        import torch

        from impls.torch.crfrnn import CrfRnn
        from impls.torch.fcn import ChannelScale
        from impls.torch.upsample import BilinearUpsample

        # Only the layers made to be held fixed are checked: a model frozen for inference
        # (requires_grad_(False)) still loads its convolutions.
        held = isinstance(module, BilinearUpsample | ChannelScale)

        def slot(tensor, shape=None, transform=None, read=None):
            fixed = held and not tensor.requires_grad
            return _Slot(tuple(shape or tensor.shape), read or (lambda: tensor.detach().cpu().numpy()),
                         self._copy(tensor, transform), fixed)

        def weights_and_bias(kind, types):
            slots = {"weights": slot(module.weight)}
            if getattr(module, "bias", None) is not None:
                slots["bias"] = slot(module.bias)
            return _Rule(kind, frozenset(types), slots, _torch_hint(module))

        if isinstance(module, torch.nn.Conv2d):
            return weights_and_bias("convolution", {"Convolution"})
        if isinstance(module, BilinearUpsample | torch.nn.ConvTranspose2d):
            return weights_and_bias("transposed convolution", {"Deconvolution"})
        if isinstance(module, torch.nn.Linear):
            return _Rule("inner product", frozenset({"InnerProduct"}), {
                "weights": slot(module.weight, transform=_caffe_linear),
                **({"bias": slot(module.bias)} if module.bias is not None else {})})
        if isinstance(module, torch.nn.BatchNorm2d):
            slots = {"mean": slot(module.running_mean, transform=_per_factor),
                     "variance": slot(module.running_var, transform=_per_factor),
                     "factor": _Slot((1,), lambda: np.ones(1), lambda values, weights: None)}
            if module.affine:
                slots.update(scale=slot(module.weight), bias=slot(module.bias))
            return _Rule("BatchNorm", frozenset({"BatchNorm", "Scale"}), slots)
        if isinstance(module, ChannelScale):
            return _Rule("scale", frozenset({"Scale"}), {"scale": slot(module.weight)}, _torch_hint(module))
        if isinstance(module, CrfRnn):
            channels = module.config["num_classes"]
            return _Rule("CrfRnn", frozenset({"MultiStageMeanfield"}),
                         {name: slot(getattr(module, name), (1, 1, channels, channels))
                          for name in BLOB_ROLES["MultiStageMeanfield"]})
        raise ValueError(f"no Caffe loading rule for torch layer type {type(module).__name__}")


def _caffe_linear(values, weights):
    """An InnerProduct's weights as (out, in): transposed where the file's layer says `transpose`."""
    transposed = next(iter(weights.values())).transpose
    return np.asarray(values).T if transposed else values


def _torch_hint(module):
    return "make it trainable to load it (weight.requires_grad_(True) on that module)"


class _KerasTarget(_Target):
    def __init__(self, model):
        if not model.weights:
            raise ValueError("load_caffemodel: argument 'model' must be built (call it once on an input, or "
                             "build it), got a Keras model with no weights yet")
        self.layers = {model.name if key == TOP else key: layer for key, layer in keras_layers(model).items()}

    def rule(self, layer):
        import keras

        from impls.tf.crfrnn import CrfRnn
        from impls.tf.fcn import ChannelScale
        from impls.tf.upsample import BilinearUpsample

        fixed = isinstance(layer, BilinearUpsample | ChannelScale) and not layer.trainable

        def slot(variable, axes=None, shape=None, transform=None):
            caffe_shape = shape or (tuple(np.array(variable.shape)[list(np.argsort(axes))]) if axes
                                    else tuple(variable.shape))

            def read():
                value = np.asarray(variable.numpy())
                return value.transpose(np.argsort(axes)) if axes else value

            def write(values, weights):
                value = np.asarray(values if transform is None else transform(values, weights))
                value = value.reshape(caffe_shape)
                value = value.transpose(axes) if axes else value
                variable.assign(np.asarray(value, dtype=variable.dtype).reshape(variable.shape))
            return _Slot(caffe_shape, read, write, fixed)

        hint = (f"make it trainable to load it (set trainable = True on Keras layer {layer.name!r})")
        if isinstance(layer, BilinearUpsample | keras.layers.Conv2DTranspose):
            # Keras' transposed kernel is (kh, kw, out, in); Caffe's Deconvolution (in, out, kh, kw).
            slots = {"weights": slot(layer.kernel, axes=(2, 3, 1, 0))}
            if getattr(layer, "bias", None) is not None:
                slots["bias"] = slot(layer.bias)
            return _Rule("transposed convolution", frozenset({"Deconvolution"}), slots, hint)
        if isinstance(layer, keras.layers.Conv2D):
            slots = {"weights": slot(layer.kernel, axes=(2, 3, 1, 0))}
            if layer.bias is not None:
                slots["bias"] = slot(layer.bias)
            return _Rule("convolution", frozenset({"Convolution"}), slots, hint)
        if isinstance(layer, keras.layers.Dense):
            slots = {"weights": slot(layer.kernel, axes=(1, 0), transform=_caffe_linear)}
            if layer.bias is not None:
                slots["bias"] = slot(layer.bias)
            return _Rule("inner product", frozenset({"InnerProduct"}), slots, hint)
        if isinstance(layer, keras.layers.BatchNormalization):
            slots = {"mean": slot(layer.moving_mean, transform=_per_factor),
                     "variance": slot(layer.moving_variance, transform=_per_factor),
                     "factor": _Slot((1,), lambda: np.ones(1), lambda values, weights: None)}
            if layer.gamma is not None:
                slots["scale"] = slot(layer.gamma)
            if layer.beta is not None:
                slots["bias"] = slot(layer.beta)
            return _Rule("BatchNorm", frozenset({"BatchNorm", "Scale"}), slots)
        if isinstance(layer, ChannelScale):
            return _Rule("scale", frozenset({"Scale"}), {"scale": slot(layer.scale)}, hint)
        if isinstance(layer, CrfRnn):
            channels = layer.config["num_classes"]
            return _Rule("CrfRnn", frozenset({"MultiStageMeanfield"}),
                         {name: slot(getattr(layer, name), shape=(1, 1, channels, channels))
                          for name in BLOB_ROLES["MultiStageMeanfield"]})
        raise ValueError(f"no Caffe loading rule for Keras layer type {type(layer).__name__}")
