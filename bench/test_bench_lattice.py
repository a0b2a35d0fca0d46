"""The permutohedral filter alone, with the lattice build and the filter timed apart, on the
5-D bilateral features (x/80, y/80, r/13, g/13, b/13) of a real image and 21 channels of
values, at every size of the sweep.

Each backend's filtered values are checked against the NumPy oracle's lattice before they
are timed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest

from bench.variants import Variant
from impls import BACKEND_INFO
from impls.testing import Backend, assert_close, to_numpy
from tests.inputs import crf_image

CHANNELS = 21
SOURCE_IMAGE = "astronaut"


@functools.lru_cache(maxsize=1)
def filter_inputs(size):
    """(features float32 (P, 5), values float32 (P, C)) for an image of `size` (height, width)."""
    height, width = size
    image = crf_image(SOURCE_IMAGE, size=size).astype(np.float64)
    y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    features = np.concatenate([np.stack([x.ravel(), y.ravel()], 1) / 80.0, image.reshape(-1, 3) / 13.0], axis=1)
    values = np.random.default_rng(0).random((height * width, CHANNELS))
    return features.astype(np.float32), values.astype(np.float32)


@functools.lru_cache(maxsize=1)
def oracle_filtered(size):
    import impls.numpy

    features, values = filter_inputs(size)
    return impls.numpy.PermutohedralLattice(features).filter(values)


def lattice_calls(variant: Variant, features: np.ndarray, values: np.ndarray) -> tuple[Callable, Callable]:
    """(build, filter): `build()` makes the lattice of `variant`, `filter(lattice)` returns the
    filtered values; both synchronised with the device."""
    backend, device = variant.backend, variant.device
    features, values = _on_backend(features, variant), _on_backend(values, variant)
    if backend == "native":
        from impls.native import Lattice
    else:
        Lattice = Backend(backend, device).module.PermutohedralLattice  # noqa: N806 (a class)
    return (lambda: _synchronized(device, Lattice(features)),
            lambda lattice: _synchronized(device, lattice.filter(values)))


def _on_backend(matrix: np.ndarray, variant: Variant):
    """`matrix` where `variant` reads it: its backend's tensor, torch's on CUDA for native."""
    if variant.backend in BACKEND_INFO:
        return Backend(variant.backend, variant.device).tensor(matrix)
    if variant.device == "cuda":
        return Backend("torch", "cuda").tensor(matrix)
    return matrix


def _synchronized(device, result):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    return result


@pytest.mark.parametrize("phase", ["build", "filter"])
def test_lattice(benchmark, budget, filter_backend, sweep_size, phase):
    """`build`: the lattice of the features (hash table, neighbours); `filter`: splat, blur, slice."""
    height, width = sweep_size
    features, values = filter_inputs(sweep_size)
    work = height * width * (CHANNELS + 8)
    budget.check(f"lattice {phase}", filter_backend, work)
    build, filter_values = lattice_calls(filter_backend, features, values)
    lattice = build()
    # Lattices of different backends agree to float32 rounding of their sums (tests/test_native_lattice.py).
    assert_close(to_numpy(filter_values(lattice)), oracle_filtered(sweep_size), rtol=1e-4, atol=1e-4,
                 msg=f"{filter_backend} filter")
    benchmark.group = f"lattice {phase} {width}x{height}, 5-D features, {CHANNELS} channels"
    benchmark.extra_info.update(op=f"lattice {phase}", case=f"{width}x{height}", backend=filter_backend.name,
                                device=filter_backend.device, pixels=height * width, channels=CHANNELS)
    run = build if phase == "build" else lambda: filter_values(lattice)
    benchmark.pedantic(run, rounds=3 if budget.predict(f"lattice {phase}", filter_backend, work) > 0.5 else 5,
                       warmup_rounds=1, iterations=1)
    budget.record(f"lattice {phase}", filter_backend, work, benchmark)
