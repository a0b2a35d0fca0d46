"""Fully-connected CRF mean-field inference in PyTorch, layout (N, L, H, W); each image
gets its own lattices, built on the tensors' device."""

from __future__ import annotations

import logging

import torch

from impls import native
from impls._crf_args import check_crf_inputs, choose_engine, crf_parameters, normalized_sides
from impls._docs import same_doc_as
from impls.numpy import crf as reference
from impls.torch.lattice import NativeLattice, PermutohedralLattice

log = logging.getLogger("impls")

__all__ = ["dense_crf"]


@same_doc_as(reference.dense_crf)
def dense_crf(unary, image, *, gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13,
              bilateral_compat=10, iterations=5, normalization="symmetric", engine="auto"):
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
    params = crf_parameters(labels, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
                            bilateral_compat, iterations, normalization)
    on_device = unary.device.type == "cpu" or (unary.device.type == "cuda" and native.has_cuda())
    chosen = choose_engine(engine, native_usable=native.available() and unary.dtype == torch.float32 and on_device,
                           why_not="it needs impls._native built, a float32 unary, and for CUDA tensors a "
                                   "CUDA build with a visible GPU")
    whole_loop = chosen == "native" and not (torch.is_grad_enabled() and unary.requires_grad)
    log.info("impls.torch.dense_crf: %s", "native mean field" if whole_loop else
             "native lattice under autograd" if chosen == "native" else f"torch ops on {unary.device}")
    results = []
    for n in range(batch):
        kernels = crf_features(image[n], params, unary.dtype)
        pixels = unary[n].permute(1, 2, 0).reshape(-1, labels)
        if whole_loop:
            crf = native.DenseCrf(pixels)
            for features, compat in kernels:
                crf.add_kernel(features, compat.cpu().numpy(), params["normalization"])
            q = crf.inference(params["iterations"])
            q = q if isinstance(q, torch.Tensor) else torch.from_numpy(q)
        else:
            lattice = NativeLattice if chosen == "native" else PermutohedralLattice
            terms = [PairwiseTerm(features, compat, params["normalization"], lattice=lattice)
                     for features, compat in kernels]
            q = mean_field(pixels, terms, params["iterations"])
        results.append(q.reshape(height, width, labels).permute(2, 0, 1))
    return torch.stack(results)


class PairwiseTerm:
    """One Gaussian kernel with its normalisation and compatibility (see impls.numpy.crf)."""

    def __init__(self, features, compat, normalization, *, lattice=PermutohedralLattice):
        self.lattice = lattice(features)
        self.compat = compat
        self.normalization = normalization
        with torch.no_grad():
            norm = self.lattice.filter(features.new_ones(self.lattice.num_points, 1))[:, 0]
        wide = norm.double() + 1e-20
        inverse = wide.rsqrt() if normalization == "symmetric" else wide.reciprocal()
        self.scale = inverse.to(norm.dtype)[:, None]

    def filter(self, q, *, transpose=False):
        scaled_before, scaled_after = normalized_sides(self.normalization, transpose=transpose)
        values = q * self.scale if scaled_before else q
        values = self.lattice.filter(values, reverse=transpose)
        return values * self.scale if scaled_after else values

    def message(self, q):
        return apply_compat(self.compat, self.filter(q))


def apply_compat(compat, filtered):
    if compat.ndim == 0:
        return -compat * filtered
    if compat.ndim == 1:
        return filtered * compat
    return filtered @ compat.T


def mean_field(unary, terms, iterations):
    q = torch.softmax(-unary, dim=-1)
    for _ in range(iterations):
        logits = -unary
        for term in terms:
            logits = logits - term.message(q)
        q = torch.softmax(logits, dim=-1)
    return q


def crf_features(image, params, dtype):
    """[(features (P, d), compat)] of one (3, H, W) image, as impls.numpy.crf.crf_features."""
    _, height, width = image.shape
    device = image.device
    y, x = torch.meshgrid(torch.arange(height, dtype=dtype, device=device),
                          torch.arange(width, dtype=dtype, device=device), indexing="ij")
    positions = torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)
    kernels = []
    if not _is_zero(params["gaussian_compat"]):
        sxy = torch.tensor(params["gaussian_sxy"], dtype=dtype, device=device)
        kernels.append((positions / sxy, torch.as_tensor(params["gaussian_compat"], dtype=dtype, device=device)))
    if not _is_zero(params["bilateral_compat"]):
        srgb = torch.tensor(params["bilateral_srgb"], dtype=dtype, device=device)
        sxy = torch.tensor(params["bilateral_sxy"], dtype=dtype, device=device)
        colours = image.permute(1, 2, 0).reshape(-1, 3).to(dtype) / srgb
        features = torch.cat([positions / sxy, colours], dim=1)
        kernels.append((features, torch.as_tensor(params["bilateral_compat"], dtype=dtype, device=device)))
    return kernels


def _is_zero(compat):
    return compat.ndim == 0 and compat == 0
