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
| ChannelScale (FCN-8s at-once's scale_pool3/4) | weight (C,) | scale (C,) |

No spatial flip: both frameworks correlate. The whole port is planned and checked first; a
name only on one side or a shape that differs after the layout change raises ValueError and
nothing is copied. The returned report lists what moved.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from impls import _checks, _crfrnn
from impls.port import _layers
from impls.port._layers import TOP
from impls.port._layers import kind as layer_kind

__all__ = ["PortReport", "torch_to_tf", "tf_to_torch"]

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
        kind, table = layer_kind(module)
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


def _check_crfrnn_widths(name, table, layer):
    """Both CrfRnn layers learn their widths, or neither: a port would leave one side's behind."""
    in_torch = any(torch_name in _crfrnn.WIDTH_NAMES for torch_name, _, _ in table)
    in_keras = any(variable.path.rsplit("/", 1)[-1] in _crfrnn.WIDTH_NAMES for variable in layer.weights)
    if in_torch != in_keras:
        raise ValueError(f"port: CrfRnn {name!r} has trainable_widths={in_torch} in torch but {in_keras} in Keras; "
                         f"nothing was copied")



def _pairs(torch_module, keras_model, torch_side, keras_side):
    if not keras_model.weights:
        raise ValueError("port: the Keras model has no weights yet; call it once on an input (or build it) first")
    torch_layers, keras_layers = _layers.torch_layers(torch_module), _layers.keras_layers(keras_model)
    only_torch = sorted(set(torch_layers) - set(keras_layers))
    only_keras = sorted(set(keras_layers) - set(torch_layers))
    if only_torch or only_keras:
        raise ValueError(f"port: layer names differ: only in {torch_side}: {only_torch}, only in {keras_side}: "
                         f"{only_keras}; nothing was copied")
    # The top-level objects, when they hold weights themselves (a bare layer such as CrfRnn),
    # match each other and are reported under the Keras layer's name.
    return [(keras_model.name if name == TOP else name, module, keras_layers[name])
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
