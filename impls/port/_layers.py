"""Finding the layers of a torch module or a Keras model that hold weights, by name: what the
port between the frameworks and every loader of a user's file match against."""

from __future__ import annotations

from impls import _crfrnn

# (torch name, Keras name, torch -> Keras axes) of each kind's weights.
CONV = [("weight", "kernel", (2, 3, 1, 0)), ("bias", "bias", None)]
BATCHNORM = [("weight", "gamma", None), ("bias", "beta", None), ("running_mean", "moving_mean", None),
             ("running_var", "moving_variance", None)]
# The rules of the kinds the torch port has no use for (Keras' Dense kernel is (in, out)).
DENSE = [("weight", "kernel", (1, 0)), ("bias", "bias", None)]
# The key of the top-level module / layer itself (a torch module has no name of its own).
TOP = "<top level>"
CRFRNN = [(name, name, None) for name in _crfrnn.WEIGHT_NAMES]
CRFRNN_WIDTHS = [(name, name, None) for name in _crfrnn.WIDTH_NAMES]  # CrfRnn(trainable_widths=True)'s
CHANNEL_SCALE = [("weight", "scale", None)]


def kind(module):
    """(kind, [(torch name, Keras name, torch -> Keras axes)]) of a torch layer with weights."""
    import torch

    from impls.torch.crfrnn import CrfRnn
    from impls.torch.fcn import ChannelScale
    from impls.torch.upsample import BilinearUpsample

    if isinstance(module, torch.nn.Conv2d):
        return "convolution", CONV if module.bias is not None else CONV[:1]
    if isinstance(module, BilinearUpsample):
        return "transposed convolution", CONV[:1]
    if isinstance(module, torch.nn.ConvTranspose2d):  # IOHW -> HWOI is the convolution's transpose
        return "transposed convolution", CONV if module.bias is not None else CONV[:1]
    if isinstance(module, torch.nn.BatchNorm2d):
        return "BatchNorm", BATCHNORM
    if isinstance(module, CrfRnn):
        return "CrfRnn", CRFRNN + (CRFRNN_WIDTHS if module.config["trainable_widths"] else [])
    if isinstance(module, ChannelScale):
        return "scale", CHANNEL_SCALE
    raise ValueError(f"port: no porting rule for torch layer type {type(module).__name__}; nothing was copied")


def torch_layers(module):
    """{name: module} of the modules that hold weights, by last attribute name (unique)."""
    from impls.torch.crfrnn import CrfRnn

    found = {}
    for path, child in module.named_modules():
        own = list(child.parameters(recurse=False)) or list(child.buffers(recurse=False))
        if own or isinstance(child, CrfRnn):
            name = path.rsplit(".", 1)[-1] if path else TOP
            if name in found:
                raise ValueError(f"port: two torch layers are named {name!r}; names must be unique to match")
            found[name] = child
    return found


def keras_layers(model):
    """{name: layer} of the Keras layers that hold weights (the model itself if it is one layer)."""
    import keras

    layers = [model, *_sublayers(model)] if isinstance(model, keras.layers.Layer) else []
    found = {}
    for layer in layers:
        if layer is not model and isinstance(layer, keras.Model):
            continue
        own = [w for w in layer.weights if owner(w, layer)]
        if own:
            found.setdefault(TOP if layer is model else layer.name, layer)
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


def owner(variable, layer):
    path = variable.path.split("/")
    return len(path) >= 2 and path[-2] == layer.name

