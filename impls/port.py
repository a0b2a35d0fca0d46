"""Weight porting between the torch and Keras versions of a layer or model, by weight name.

A port refuses to start (ValueError, nothing copied) when the two sides' weight names or
shapes differ, and returns a report of what moved. Layout rules between the frameworks
(conv HWIO <-> OIHW, transposed conv HWOI <-> IOHW) apply per weight kind; CRF-RNN's
matrices act on the class axis in both frameworks and move as they are.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["PortReport", "torch_to_tf", "tf_to_torch"]


@dataclasses.dataclass(frozen=True)
class PortReport:
    """What a port moved: [(weight name, shape)], in order."""

    direction: str
    moved: tuple[tuple[str, tuple[int, ...]], ...]

    def __str__(self):
        lines = [f"{self.direction}: {len(self.moved)} weight(s) moved"]
        lines += [f"  {name} {shape}" for name, shape in self.moved]
        return "\n".join(lines)


def torch_to_tf(torch_module, keras_layer) -> PortReport:
    """Copies the weights of a torch module into the matching Keras layer."""
    source = _torch_weights(torch_module)
    targets = _keras_variables(keras_layer)
    _check_match(source, {name: tuple(v.shape) for name, v in targets.items()}, "torch", "Keras")
    for name, value in source.items():
        targets[name].assign(value.astype(targets[name].dtype))
    return PortReport("torch -> Keras", tuple((name, value.shape) for name, value in source.items()))


def tf_to_torch(keras_layer, torch_module) -> PortReport:
    """Copies the weights of a Keras layer into the matching torch module."""
    import torch

    source = {name: np.asarray(v.numpy()) for name, v in _keras_variables(keras_layer).items()}
    targets = dict(torch_module.named_parameters())
    _check_match(source, {name: tuple(p.shape) for name, p in targets.items()}, "Keras", "torch")
    with torch.no_grad():
        for name, value in source.items():
            targets[name].copy_(torch.from_numpy(value).to(targets[name].dtype))
    return PortReport("Keras -> torch", tuple((name, value.shape) for name, value in source.items()))


def _torch_weights(module):
    return {name: p.detach().cpu().numpy() for name, p in module.named_parameters()}


def _keras_variables(layer):
    return {variable.path.split("/", 1)[-1] if "/" in variable.path else variable.name: variable
            for variable in layer.weights}


def _check_match(source, target_shapes, source_name, target_name):
    missing, extra = sorted(set(source) - set(target_shapes)), sorted(set(target_shapes) - set(source))
    if missing or extra:
        raise ValueError(f"port: weight names differ: only in {source_name}: {missing}, only in {target_name}: "
                         f"{extra}; nothing was copied")
    shapes = [f"{name}: {source_name} {tuple(value.shape)} vs {target_name} {target_shapes[name]}"
              for name, value in source.items() if tuple(value.shape) != target_shapes[name]]
    if shapes:
        raise ValueError(f"port: shapes differ ({'; '.join(shapes)}); nothing was copied")
