"""The hypothesis strategies and settings of the property tests, shared by the op test files
(test_upsample, test_lattice, test_native_lattice, test_dense_crf, test_crfrnn, test_metrics).

Inputs: random sizes from 1x1 and odd shapes, 2 to 300 labels (300 only on tiny images), batches of
1 to 3, float32 and float64, laid out C-contiguous, in Fortran order, as views with a step into a
larger buffer, or as transposed views (`lay_out`). Each property runs under the two settings of
`PROFILES`: a few examples in the default selection ("few", 12: the `tests` tox env) and many under
the `slow` marker ("many", 100: the `slow` env). Examples are derandomised and nothing is stored in a
database, so a failure reproduces in CI.

A property test is written as

    @pytest.mark.parametrize("profile", PROFILES)
    def test_property_...(profile):
        def prop(case):
            ...
        check(profile, some_cases(), prop)

Invariants the op files check with these: backends (torch, TF, the native engine) agree with the NumPy
oracle; Q is a distribution per pixel; inputs are not mutated; a batch of N equals N single calls;
permuting the labels commutes with a Potts CRF (and permutes a confusion matrix); native results are
bit-identical run to run on a fixed thread count; a port round trip restores CrfRnn weights exactly.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impls.testing import Backend

_COMMON = dict(deadline=None, database=None, derandomize=True, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
PROFILES = [pytest.param(settings(max_examples=12, **_COMMON), id="few"),
            pytest.param(settings(max_examples=100, **_COMMON), id="many", marks=pytest.mark.slow)]
FRAMEWORKS = ("torch", "tf")
MODULES = {"torch": "torch", "tf": "tensorflow"}

DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["c", "fortran", "strided", "transposed"])
SEEDS = st.integers(0, 2**32 - 1)
THREAD_COUNTS = st.integers(1, 3)  # native.threads(count) of the determinism properties


def check(profile, strategy, prop):
    """Run `prop` on the examples `strategy` draws, under the settings `profile` (one of PROFILES)."""
    profile(given(strategy)(prop))()


def framework(name):
    """The CPU backend `name` ("torch" or "tf"), or a skip when its framework is not installed."""
    pytest.importorskip(MODULES[name], reason=f"{MODULES[name]} is not installed")
    return Backend(name)


def installed_frameworks():
    """The CPU backends of the installed frameworks, for properties that compare all of them at once."""
    return [Backend(name) for name in FRAMEWORKS if importlib.util.find_spec(MODULES[name]) is not None]


def rng_of(seed):
    return np.random.default_rng(seed)


# --- memory layouts ------------------------------------------------------------------------------------

def lay_out(array, how):
    """The values of `array` in the memory layout `how`: "c" (contiguous), "fortran", "strided" (a view
    taking every other element of a buffer twice as large along each axis) or "transposed" (the
    transpose of a contiguous array of the reversed shape: strides in reverse order)."""
    array = np.asarray(array)
    if how == "fortran":
        return np.asfortranarray(array)
    if how == "strided":
        buffer = np.full(tuple(2 * n for n in array.shape), 7, array.dtype)
        view = buffer[tuple(slice(None, None, 2) for _ in array.shape)]
        view[...] = array
        return view
    if how == "transposed":
        return np.ascontiguousarray(array.T).T
    return np.ascontiguousarray(array)


def torch_nchw(array, how="c"):
    """A torch NCHW view (no copy) of NHWC `array` laid out as `how`: never contiguous for C > 1."""
    import torch

    return torch.from_numpy(np.moveaxis(lay_out(array, how), -1, 1))


def to_backend(backend, array, how="c"):
    """`array` (NHWC if 4-D) as a tensor of `backend` in its layout, a view of `how` where the
    framework keeps strides (torch); TF copies into its own tensors."""
    array = np.asarray(array)
    if backend.name == "torch":
        import torch

        return torch_nchw(array, how) if array.ndim == 4 else torch.from_numpy(lay_out(array, how))
    if backend.name == "tf":
        return backend.tensor(lay_out(array, how))
    return lay_out(array, how)


# --- the inputs of each op -------------------------------------------------------------------------------

@st.composite
def upsample_cases(draw):
    """(x NHWC, factor 1..6, layout) for upsample_bilinear."""
    dtype = draw(DTYPES)
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 4)))
    x = rng_of(draw(SEEDS)).standard_normal(shape).astype(dtype)
    return x, draw(st.integers(1, 6)), draw(LAYOUTS)


@st.composite
def lattice_cases(draw):
    """(values (P, C), features (P, d), layout of values, layout of features) for the lattice filter:
    1 to 80 points, 1 to 6 dimensions, features spread narrowly to widely."""
    dtype = draw(DTYPES)
    points, dim, channels = draw(st.integers(1, 80)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    rng = rng_of(draw(SEEDS))
    features = (rng.standard_normal((points, dim)) * draw(st.sampled_from([0.2, 1.0, 6.0]))).astype(dtype)
    values = rng.standard_normal((points, channels)).astype(dtype)
    return values, features, draw(LAYOUTS), draw(LAYOUTS)


@st.composite
def crf_cases(draw, dtypes=DTYPES, potts=False):
    """(unary NHWC, image uint8 NHWC, dense_crf keyword options, layout): every normalisation, scalar
    and tuple kernel widths, and Potts, vector or matrix compatibilities (only Potts with `potts`)."""
    dtype = draw(dtypes)
    labels = draw(st.sampled_from([2, 3, 5, 21, 300]))
    side = 3 if labels > 21 else 8
    batch = draw(st.integers(1, 2 if labels > 21 else 3))
    height, width = draw(st.integers(1, side)), draw(st.integers(1, side))
    rng = rng_of(draw(SEEDS))
    unary = (rng.standard_normal((batch, height, width, labels)) * draw(st.sampled_from([0.5, 3.0]))).astype(dtype)
    image = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    compat = st.sampled_from([0, 3, 10]) if potts else st.sampled_from(["potts", "vector", "matrix"]).map(
        lambda kind: {"potts": 3, "vector": rng.uniform(0, 5, labels), "matrix": rng.uniform(-2, 5, (labels,) * 2)}[
            kind])
    options = dict(iterations=draw(st.integers(1, 4)),
                   normalization=draw(st.sampled_from(["symmetric", "before", "after", "none"])),
                   gaussian_sxy=draw(st.sampled_from([1, 3, (2, 5)])),
                   bilateral_sxy=draw(st.sampled_from([2, 80, (10, 40)])),
                   bilateral_srgb=draw(st.sampled_from([5, 13, (5, 20, 40)])),
                   gaussian_compat=draw(compat), bilateral_compat=draw(compat))
    return unary, image, options, draw(LAYOUTS)


@st.composite
def crfrnn_cases(draw):
    """(logits float32 NHWC, image uint8 NHWC, CrfRnn thetas and iterations, layout, seed)."""
    classes = draw(st.sampled_from([2, 3, 5, 21]))
    batch, height, width = draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    rng = rng_of(draw(SEEDS))
    logits = (rng.standard_normal((batch, height, width, classes)) * 2).astype(np.float32)
    image = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    thetas = dict(theta_alpha=draw(st.sampled_from([3, 80, 160])), theta_beta=draw(st.sampled_from([3, 13])),
                  theta_gamma=draw(st.sampled_from([1, 3])), iterations=draw(st.integers(1, 3)))
    return logits, image, thetas, draw(LAYOUTS), draw(SEEDS)


@st.composite
def label_map_cases(draw):
    """(pred (N, H, W), label (N, H, W) with some or all pixels 255 (ignored), classes 1..255, layout,
    seed): integer dtypes of both, up to 255 classes on small maps."""
    classes = draw(st.integers(1, 255))  # 255 is the ignore label
    side = 4 if classes > 40 else 9
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, side)), draw(st.integers(1, side)))
    rng = rng_of(draw(SEEDS))
    label_dtype = draw(st.sampled_from([np.uint8, np.int32, np.int64]))
    label = rng.integers(0, classes, shape).astype(label_dtype)
    label[rng.random(shape) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = 255
    pred = rng.integers(0, classes, shape).astype(draw(st.sampled_from([np.int32, np.int64])))
    return pred, label, classes, draw(LAYOUTS), draw(SEEDS)
