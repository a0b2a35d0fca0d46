"""The native C++ lattice and mean field: equal to the NumPy oracle (same algorithm),
deterministic, differentiable through the torch and TF wrappers, and strict with bad input."""

import logging

import numpy as np
import pytest
from hypothesis import strategies as st

from impls import native
from impls.numpy import PermutohedralLattice
from impls.numpy.crf import dense_crf as oracle_dense_crf
from impls.testing import assert_close
from tests.inputs import crf_image, smooth_unary
from tests.strategies import PROFILES, THREAD_COUNTS, check, lattice_cases, lay_out, rng_of

pytestmark = pytest.mark.skipif(not native.available(), reason="impls._native is not built")


def _points(rng, count, dim, box=3.0, channels=5, dtype=np.float32):
    return (rng.random((count, dim)) * box).astype(np.float32), rng.random((count, channels)).astype(dtype)


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 8, 16])
def test_feature_native_lattice_equals_numpy_oracle(dim, rng):
    features, values = _points(rng, 2000, dim)
    oracle = PermutohedralLattice(features)
    lattice = native.Lattice(features)
    assert lattice.num_vertices == oracle.num_vertices
    assert_close(lattice.weights, oracle.weights)
    assert_close(lattice.filter(values), oracle.filter(values))
    assert_close(lattice.filter(values, reverse=True), oracle.filter(values, reverse=True))


@pytest.mark.parametrize("count, dim, box, packed", [(9000, 5, 3.0, True), (4200, 10, 1.0, False),
                                                    (60, 63, 0.5, False), (20000, 2, 400.0, True)])
@pytest.mark.skipif(native.available() and native.host_target() != "cpu", reason="the CPU engine's two builds")
def test_feature_both_builds_equal_numpy_over_many_batches(count, dim, box, packed, rng):
    """Keys packed into 64 bits (parallel build) or too wide for it (general build), each over
    more points than one batch of either."""
    features, values = _points(rng, count, dim, box=box, channels=3)
    oracle = PermutohedralLattice(features)
    lattice = native._module().Lattice(features)
    assert lattice.packed_keys is packed
    assert lattice.num_vertices == oracle.num_vertices
    assert_close(lattice.filter(values), oracle.filter(values))


@pytest.mark.parametrize("channels", [1, 7, 8, 21, 24, 33, 60])
def test_feature_any_number_of_channels(channels, rng):
    features, values = _points(rng, 500, 5, channels=channels)
    assert_close(native.Lattice(features).filter(values), PermutohedralLattice(features).filter(values))


def test_feature_results_do_not_change_from_run_to_run(rng):
    image = crf_image("im2")
    unary = smooth_unary(*image.shape[:2], 21, seed=2)
    first = oracle_dense_crf(unary[None], image[None], iterations=5, engine="native")
    for _ in range(2):
        again = oracle_dense_crf(unary[None], image[None], iterations=5, engine="native")
        assert np.array_equal(first, again)


@pytest.mark.parametrize("normalization", ["symmetric", "before", "after", "none"])
@pytest.mark.parametrize("form", ["potts", "diagonal", "matrix"])
def test_feature_native_mean_field_equals_numpy_mean_field(normalization, form, rng):
    """Same algorithm as the NumPy oracle: equal to float32 tolerance (and with no
    normalisation, where logits reach thousands, to the rounding of those logits)."""
    image = crf_image("im1")[:90, :120].copy()
    labels = 6
    unary = smooth_unary(90, 120, labels, seed=3)
    symmetric = rng.random((labels, labels))
    compat = {"potts": (3.0, 10.0), "diagonal": (-np.linspace(2, 4, labels), -np.linspace(8, 12, labels)),
              "matrix": (-3 * np.eye(labels) + symmetric + symmetric.T, -10 * np.eye(labels) + symmetric)}[form]
    options = dict(gaussian_compat=compat[0], bilateral_compat=compat[1], normalization=normalization, iterations=5)
    ours = oracle_dense_crf(unary[None], image[None], engine="native", **options)
    expected = oracle_dense_crf(unary[None], image[None], engine="framework", **options)
    atol = 1e-2 if normalization == "none" else None  # float32 rounding of logits in the thousands
    assert_close(ours, expected, atol=atol)
    assert np.mean(ours.argmax(-1) == expected.argmax(-1)) >= 0.999


def test_feature_step_and_inference_agree():
    image = crf_image("im3")[:50, :60].copy()
    unary = smooth_unary(50, 60, 4, seed=4).reshape(-1, 4)
    crf = native.DenseCrf(unary)
    positions = np.stack(np.meshgrid(np.arange(60), np.arange(50))[::-1], -1).reshape(-1, 2)[:, ::-1]
    crf.add_kernel(positions / 3.0, 3.0)
    crf.add_kernel(np.concatenate([positions / 80.0, image.reshape(-1, 3) / 13.0], 1), 10.0)
    q = crf.inference(0)
    for _ in range(3):
        crf.step(q)
    assert_close(q, crf.inference(3))
    assert_close(q.sum(axis=1), np.ones(len(q)))


def test_gradcheck_torch_native_filter_in_float64(rng):
    torch = pytest.importorskip("torch")
    from impls.torch.lattice import DifferentiableNativeLattice

    features, values = _points(rng, 40, 3, channels=2, dtype=np.float64)
    lattice = DifferentiableNativeLattice(torch.from_numpy(features))
    values = torch.from_numpy(values).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: lattice.filter(v), (values,))
    assert torch.autograd.gradgradcheck(lambda v: lattice.filter(v), (values,))


def test_gradcheck_tf_native_gradient_matches_torch(rng):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("tensorflow")
    from impls.tf.lattice import DifferentiableNativeLattice as TfNativeLattice
    from impls.torch.lattice import DifferentiableNativeLattice as TorchNativeLattice

    features, values = _points(rng, 60, 5, channels=3, dtype=np.float64)
    upstream = rng.random(values.shape)
    tf_values = tf.constant(values)
    with tf.GradientTape() as tape:
        tape.watch(tf_values)
        out = TfNativeLattice(features).filter(tf_values)
    tf_grad = tape.gradient(out, tf_values, output_gradients=tf.constant(upstream))
    torch_values = torch.from_numpy(values).requires_grad_(True)
    TorchNativeLattice(torch.from_numpy(features)).filter(torch_values).backward(torch.from_numpy(upstream))
    assert_close(tf_grad, torch_values.grad)
    theoretical, numerical = tf.test.compute_gradient(lambda v: TfNativeLattice(features).filter(v), [tf_values])
    assert_close(theoretical[0], numerical[0], rtol=1e-6, atol=1e-6)


def test_feature_torch_dense_crf_uses_the_native_filter_under_autograd(caplog):
    torch = pytest.importorskip("torch")
    import impls.torch

    image = crf_image("im1")[:30, :40].copy()
    unary = torch.from_numpy(smooth_unary(30, 40, 3, seed=5)).permute(2, 0, 1)[None].contiguous().requires_grad_(True)
    image = torch.from_numpy(image).permute(2, 0, 1)[None]
    with caplog.at_level(logging.INFO, logger="impls"):
        q = impls.torch.dense_crf(unary, image, iterations=2)
    assert "native lattice under autograd" in caplog.text
    q[..., 0, :, :].sum().backward()
    with torch.no_grad():
        framework = impls.torch.dense_crf(unary, image, iterations=2, engine="framework")
    assert_close(q, framework, atol=1e-5)
    assert unary.grad is not None and torch.isfinite(unary.grad).all()


def test_feature_engine_choice_is_logged_and_can_be_forced(caplog):
    image, unary = crf_image("im1")[None, :20, :20].copy(), smooth_unary(20, 20, 3)[None]
    with caplog.at_level(logging.INFO, logger="impls"):
        oracle_dense_crf(unary, image)
    assert "impls.numpy.dense_crf: native engine" in caplog.text
    with pytest.raises(ValueError, match="engine='native' cannot serve these inputs"):
        oracle_dense_crf(unary.astype(np.float64), image, engine="native")
    with pytest.raises(ValueError, match="argument 'engine' must be one of"):
        oracle_dense_crf(unary, image, engine="cuda")


@pytest.mark.slow
def test_feature_4k_image_with_21_labels_fits_in_memory():
    """3840x2160, 21 labels: peak resident memory of the whole process is reported and bounded."""
    import resource

    height, width, labels = 2160, 3840, 21
    image = np.resize(crf_image("im1"), (height, width, 3)).astype(np.uint8)
    unary = np.random.default_rng(0).random((height, width, labels), dtype=np.float32) * 5
    q = oracle_dense_crf(unary[None], image[None], iterations=2, engine="native")
    assert q.shape == (1, height, width, labels) and np.isfinite(q).all()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory with a 4K image, 21 labels: {peak_gb:.1f} GB")
    assert peak_gb < 20


class _DeviceStub:
    """Looks like a CUDA tensor to impls.native (only its device is read before refusing)."""

    device = "cuda:0"
    shape = (10, 2)


@pytest.mark.parametrize("make, error, match", [
    (lambda: native.Lattice(np.ones((10,), np.float32)), ValueError, "argument 'features' must be 2-D"),
    (lambda: native.Lattice(np.ones((10, 2), np.int32)), TypeError, "argument 'features' must have dtype"),
    (lambda: native.Lattice(np.full((10, 2), np.nan, np.float32)), ValueError, "argument 'features' must be finite"),
    (lambda: native.Lattice(np.ones((0, 2), np.float32)), ValueError, "argument 'features' must not be empty"),
    (lambda: native.Lattice(np.ones((10, 64), np.float32)), ValueError, "at most 63 dimensions"),
    (lambda: native.Lattice(_DeviceStub()), ValueError, "is on cuda:0, but the native CUDA lattice is not available"),
    (lambda: native.Lattice(np.ones((10, 2), np.float32)).filter(np.ones((9, 3), np.float32)), ValueError,
     r"argument 'values' must have shape \(10, C\)"),
    (lambda: native.Lattice(np.ones((10, 2), np.float32)).filter(np.ones((10, 3), np.int64)), TypeError,
     "argument 'values' must be float32 or float64"),
    (lambda: native.DenseCrf(np.ones((10, 1), np.float32)), ValueError, "at least 2 labels"),
    (lambda: native.DenseCrf(np.full((10, 2), np.inf, np.float32)), ValueError, "argument 'unary' must be finite"),
    (lambda: native.DenseCrf(np.ones((10, 2), np.float32)).add_kernel(np.ones((9, 2)), 1.0), ValueError,
     "argument 'features' must have 10 rows"),
    (lambda: native.DenseCrf(np.ones((10, 2), np.float32)).add_kernel(np.ones((10, 2)), np.ones(3)), ValueError,
     "argument 'compat' must be a number"),
    (lambda: native.DenseCrf(np.ones((10, 2), np.float32)).inference(-1), ValueError,
     "argument 'iterations' must be a non-negative integer"),
])
def test_exception_bad_input_is_a_python_error(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_exception_the_binding_itself_rejects_mismatched_shapes():
    """Below the Python wrapper the C++ side checks again: ValueError, not a crash."""
    lattice = native._module().Lattice(np.ones((10, 2), np.float32))
    with pytest.raises(ValueError, match="values must have 10 rows"):
        lattice.filter(np.ones((9, 2), np.float32))
    with pytest.raises(TypeError):
        lattice.filter(np.ones((10, 2), np.int32))
    with pytest.raises(ValueError, match="argument 'features' must be finite"):
        native._module().Lattice(np.full((4, 2), np.nan, np.float32))


def test_exception_native_lattice_filter_of_a_python_list_names_values():
    """Found by the properties: Lattice.filter read `values.ndim` before converting, so a list
    raised AttributeError. A list of floats is now filtered; a list of ints is refused by name."""
    lattice = native.Lattice(np.zeros((4, 2), np.float32))
    assert lattice.filter([[1.0]] * 4).shape == (4, 1)
    with pytest.raises(TypeError, match="argument 'values'"):
        lattice.filter([[1]] * 4)


def test_feature_non_contiguous_inputs_give_the_same_answer(rng):
    features, values = _points(rng, 300, 3, channels=6)
    lattice = native.Lattice(np.asfortranarray(features))
    assert_close(lattice.filter(np.asfortranarray(values)), native.Lattice(features).filter(values))
    assert_close(lattice.filter(values[:, ::2]), native.Lattice(features).filter(values[:, ::2].copy()))


@pytest.mark.parametrize("profile", PROFILES)
def test_property_native_lattice_is_bit_deterministic_per_thread_count_and_reverse_is_its_adjoint(profile):
    """Hypothesis (tests/strategies.py): every layout, 1 to 80 points in 1 to 6 dimensions, 1 to 3 threads."""
    def prop(case_and_threads):
        (values, features, how_v, how_f), count = case_and_threads
        v, f = lay_out(values, how_v), lay_out(features, how_f)
        with native.threads(count):
            first = native.Lattice(f)
            second = native.Lattice(f)
            out = [first.filter(v), first.filter(v), second.filter(v)]
            back = first.filter(v, reverse=True)
        np.testing.assert_array_equal(out[0], out[1])
        np.testing.assert_array_equal(out[0], out[2])
        np.testing.assert_array_equal(first.weights, second.weights)
        assert first.num_points == len(values) and first.dim == features.shape[1]
        weights = np.asarray(first.weights)
        assert (weights >= -1e-6).all()
        assert_close(weights.sum(1), np.ones(len(values)), rtol=0, atol=1e-5, msg="barycentric weights")
        # <u, K v> == <K^T u, v>: `reverse` applies the transposed filter.
        u = rng_of(len(values)).standard_normal(values.shape).astype(values.dtype)
        with native.threads(count):
            forward = np.sum(u * first.filter(v).astype(np.float64))
            backward = np.sum(first.filter(u, reverse=True).astype(np.float64) * values)
        assert np.isclose(forward, backward, rtol=1e-4, atol=1e-4), (forward, backward)
        assert back.shape == values.shape

    check(profile, st.tuples(lattice_cases(), THREAD_COUNTS), prop)
