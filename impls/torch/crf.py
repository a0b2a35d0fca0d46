"""Fully-connected CRF mean-field inference in PyTorch, layout (N, L, H, W): impls._meanfield's
loop on torch operations; each image gets its own lattices, built on the tensors' device."""

from __future__ import annotations

import logging

import torch

import impls.numpy.crf as oracle
from impls import _meanfield, native
from impls._checks import check_crf_inputs, crf_parameters
from impls._docs import same_doc_as
from impls._engines import choose_engine
from impls._ops import Ops
from impls._types import Compat, Sizes, Tensor
from impls.torch._ops import OPS
from impls.torch.lattice import DifferentiableNativeLattice

log = logging.getLogger("impls")

__all__ = ["dense_crf"]


@same_doc_as(oracle.dense_crf)
def dense_crf(unary: Tensor, image: Tensor, *, gaussian_sxy: Sizes = 3, gaussian_compat: Compat = 3,
              bilateral_sxy: Sizes = 80, bilateral_srgb: Sizes = 13, bilateral_compat: Compat = 10,
              iterations: int = 5, normalization: str = "symmetric", engine: str = "auto") -> Tensor:
    for name, tensor in (("unary", unary), ("image", image)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"dense_crf: argument '{name}' must be a torch.Tensor, got {type(tensor).__name__}")
    check_crf_inputs(tuple(unary.shape), str(unary.dtype).removeprefix("torch."), tuple(image.shape),
                     str(image.dtype).removeprefix("torch."), layout="NCHW")
    if not torch.isfinite(unary).all():
        raise ValueError("dense_crf: argument 'unary' must be finite (no NaN or inf)")
    if image.device != unary.device:
        raise ValueError(f"dense_crf: argument 'image' must be on the unary's device {unary.device}, "
                         f"got {image.device}")
    batch, labels, height, width = unary.shape
    given = {"gaussian_sxy": gaussian_sxy, "bilateral_sxy": bilateral_sxy, "bilateral_srgb": bilateral_srgb}
    numbers = {name: _width_numbers(value, name) for name, value in given.items()}
    params = crf_parameters(labels, numbers["gaussian_sxy"], gaussian_compat, numbers["bilateral_sxy"],
                            numbers["bilateral_srgb"], bilateral_compat, iterations, normalization)
    trained = {name: value for name, value in given.items()
               if isinstance(value, torch.Tensor) and value.requires_grad and torch.is_grad_enabled()}
    widths = _meanfield.width_vectors(OPS, trained, params, unary)
    on_device = unary.device.type == "cpu" or (unary.device.type == "cuda" and native.has_cuda())
    chosen = choose_engine(engine, native_usable=native.available() and unary.dtype == torch.float32 and on_device,
                           why_not="it needs impls._native built, a float32 unary, and for CUDA tensors a "
                                   "CUDA build with a visible GPU")
    whole_loop = chosen == "native" and not (torch.is_grad_enabled() and unary.requires_grad) and not widths
    log.info("impls.torch.dense_crf: %s", "native mean field" if whole_loop else
             "native lattice under autograd" if chosen == "native" else f"torch ops on {unary.device}")
    ops = ops_for(chosen)
    results = []
    for n in range(batch):
        pixels = unary[n].permute(1, 2, 0).reshape(-1, labels)
        if whole_loop:
            q = native.mean_field(pixels, _meanfield.crf_features(ops, image[n], params, unary.dtype), params)
            q = q if isinstance(q, torch.Tensor) else torch.from_numpy(q)
        else:
            q = _meanfield.infer(ops, pixels, image[n], params, widths)
        results.append(q.reshape(height, width, labels).permute(2, 0, 1))
    return torch.stack(results)


def _width_numbers(value, name):
    """A width argument's numbers for the checks: a tensor's values (it must hold 1, or one per
    axis), anything else as given."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.dim() > 1 or not value.is_floating_point():
        raise TypeError(f"dense_crf: argument '{name}' must be a number, a sequence of numbers, or a floating "
                        f"tensor of shape () or (k,), got a {value.dtype} tensor of shape {tuple(value.shape)}")
    numbers = value.detach().cpu().double().tolist()
    return numbers if isinstance(numbers, float) else tuple(numbers)


NATIVE_OPS = OPS.with_lattice(DifferentiableNativeLattice)


def ops_for(engine: str) -> Ops:
    """The operations table of an engine chosen by impls._engines.choose_engine."""
    return NATIVE_OPS if engine == "native" else OPS
