"""Where two frameworks' runs of one model part ways: the relative error of every named layer's
output, and the first layer beyond a tolerance."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from impls import _checks

__all__ = ["layer_differences", "first_difference"]


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
