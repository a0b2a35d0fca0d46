"""pycaffe's interface on the project's torch engine, for the Caffe models users have (FCN's,
CRF-RNN's), so that their scripts run with `from impls import caffe` in place of `import caffe`:

    from impls import caffe
    net = caffe.Net("voc-fcn8s/deploy.prototxt", "voc-fcn8s/fcn8s-heavy-pascal.caffemodel", caffe.TEST)
    net.blobs["data"].reshape(1, *in_.shape)
    net.blobs["data"].data[...] = in_
    net.forward()
    out = net.blobs["score"].data[0].argmax(axis=0)

`Net`, `TEST`, `TRAIN`, `set_mode_cpu`, `set_mode_gpu`, `set_device` as pycaffe's (see Net);
`deploy(prototxt)` makes a deploy net of a train/val one (an Input layer for its data layer, its
loss and accuracy layers dropped) as the authors of FCN made voc-fcn8s/deploy.prototxt. Caffe itself
is not needed: .prototxt files are read by impls.port.prototxt, .caffemodel files by impls.port.caffe.
"""

from __future__ import annotations

import os

from impls.caffe._definition import DATA_LAYERS, TEST, TRAIN, TRAINING_ONLY, _included
from impls.port.caffe import V1_TYPE_NAMES
from impls.port.prototxt import Identifier, Message, format_prototxt, parse_prototxt, read_prototxt

__all__ = ["Net", "Blob", "TEST", "TRAIN", "set_mode_cpu", "set_mode_gpu", "set_device", "deploy", "LAYER_TYPES"]
# What runs nets needs torch; deploy() and the constants do not (imported on first use).
_ENGINE = {"Net": "_net", "Blob": "_net", "set_mode_cpu": "_net", "set_mode_gpu": "_net", "set_device": "_net",
           "LAYER_TYPES": "_layers"}


def __getattr__(name):
    if name not in _ENGINE:
        raise AttributeError(f"module 'impls.caffe' has no attribute {name!r}")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ImportError(f"impls.caffe.{name} runs Caffe nets on PyTorch, which is not installed: "
                          f"pip install 'impls[torch]'") from None
    import importlib

    value = getattr(importlib.import_module(f"impls.caffe.{_ENGINE[name]}"), name)
    globals()[name] = value
    return value


def deploy(prototxt, input_shape=(1, 3, 500, 500)) -> str:
    """The text of a deploy net made from a train/val .prototxt (a path, or its text): the layers of
    the TEST phase, the data layers (Data, ImageData, Python data layers, ...) replaced by one Input
    layer named "input" with `input_shape` for the tops the remaining layers read, the training-only
    layers (losses, Accuracy) and in-place Dropout layers (the identity at TEST) dropped: what
    fcn.berkeleyvision.org's voc-fcn8s/deploy.prototxt is to its val.prototxt. A V1 net (`layers`)
    gets net-level `input:` and `input_dim:` fields instead (V1 has no Input layer). A net without
    data layers is its own deploy net: it comes back as it is (comments aside)."""
    message = _message(prototxt)
    shape = [int(d) for d in input_shape]
    v1 = bool(message.messages("layers"))
    key = "layers" if v1 else "layer"
    layers = [layer for layer in message.messages(key) if _included(layer, (TEST, 0, frozenset()))]
    if not any(_type_name(layer) in DATA_LAYERS for layer in layers):
        return format_prototxt(message)
    kept, data_tops, data_at = [], [], None
    for layer in layers:
        type_ = _type_name(layer)
        if type_ in DATA_LAYERS:
            data_at = len(kept) if data_at is None else data_at
            data_tops += [top for top in layer.strings("top") if top not in data_tops]
        elif not (type_ in TRAINING_ONLY or (type_ == "Dropout" and layer.strings("top") == layer.strings("bottom"))):
            kept.append(_without_rules(layer))
    read = {bottom for layer in kept for bottom in layer.strings("bottom")}
    inputs = [top for top in data_tops if top in read and top not in message.strings("input")]
    net = Message(fields=[field for field in message.fields if field[0] != key], source=message.source)
    if v1:
        net.fields += [("input", name, 0) for name in inputs]
        if message.messages("input_shape"):
            dims = Message(fields=[("dim", d, 0) for d in shape])
            net.fields += [("input_shape", dims, 0) for _ in inputs]
        else:
            net.fields += [("input_dim", d, 0) for _ in inputs for d in shape]
    elif inputs:
        dims = Message(fields=[("dim", d, 0) for d in shape])
        input_layer = Message(fields=[("name", "input", 0), ("type", "Input", 0),
                                      *[("top", name, 0) for name in inputs],
                                      ("input_param", Message(fields=[("shape", dims, 0)]), 0)])
        kept.insert(data_at or 0, input_layer)
    net.fields += [(key, layer, layer.line) for layer in kept]
    return format_prototxt(net)


def _message(prototxt) -> Message:
    if isinstance(prototxt, Message):
        return prototxt
    if isinstance(prototxt, str) and "\n" in prototxt:
        return parse_prototxt(prototxt)
    if isinstance(prototxt, str | os.PathLike):
        return read_prototxt(prototxt)
    raise TypeError(f"deploy: argument 'prototxt' must be a .prototxt path or its text, got {prototxt!r}")


def _type_name(layer: Message) -> str:
    type_ = layer.get("type", "")
    return V1_TYPE_NAMES.get(str(type_), str(type_)) if isinstance(type_, Identifier) else str(type_)


def _without_rules(layer: Message) -> Message:
    return Message(fields=[f for f in layer.fields if f[0] not in ("include", "exclude")], line=layer.line,
                   source=layer.source)
