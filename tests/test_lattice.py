"""The permutohedral lattice: against the exact Gaussian filter, across backends, its
adjoint, its gradients."""

import numpy as np
import pytest

from impls import native
from impls.testing import Backend, assert_close, to_numpy
from tests.strategies import PROFILES, check, installed_frameworks, lattice_cases, lay_out, to_backend


def _points(rng, count, dim, box, channels=4, dtype=np.float64):
    return (rng.random((count, channels)).astype(dtype), (rng.random((count, dim)) * box).astype(dtype))


def _filter(backend, values, features, *, exact=False):
    op = backend.module.gaussian_filter_exact if exact else backend.module.permutohedral_filter
    return to_numpy(op(backend.tensor(values), backend.tensor(features)))


@pytest.mark.parametrize("dim, box, max_raw, max_normalized", [
    (2, 2.0, 0.20, 0.010), (2, 8.0, 0.15, 0.035), (5, 2.0, 0.45, 0.020), (5, 8.0, 0.70, 0.35),
])
def test_feature_approximates_the_exact_gaussian_filter(backend, dim, box, max_raw, max_normalized, rng):
    """Bounds of the docstring of permutohedral_filter: raw relative error (a gain the
    lattice's kernel has) and the error after normalisation (K v / K 1), which the CRF uses."""
    values, features = _points(rng, 300, dim, box)
    approx = _filter(backend, values, features)
    exact = _filter(backend, values, features, exact=True)
    raw = np.linalg.norm(approx - exact) / np.linalg.norm(exact)
    ones = np.ones((300, 1))
    normalized = np.abs(approx / _filter(backend, ones, features)
                        - exact / _filter(backend, ones, features, exact=True))
    assert raw < max_raw, f"raw relative error {raw:.3f}"
    assert normalized.max() < max_normalized, f"normalised max error {normalized.max():.4f}"


def test_feature_exact_filter_is_the_definition(backend, rng):
    values, features = _points(rng, 30, 3, 2.0)
    expected = np.array([[np.exp(-0.5 * np.sum((f - g) ** 2)) for g in features] for f in features]) @ values
    assert_close(_filter(backend, values, features, exact=True), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 8, 16])
def test_feature_backends_agree(dim, rng):
    """Same algorithm and operation order: float32 results agree to float32 tolerance."""
    values, features = _points(rng, 500, dim, 3.0, dtype=np.float32)
    results = {}
    for name in ("numpy", "torch", "tf"):
        pytest.importorskip({"numpy": "numpy", "torch": "torch", "tf": "tensorflow"}[name])
        results[name] = _filter(Backend(name), values, features)
    assert_close(results["torch"], results["numpy"], msg=f"torch vs numpy, d={dim}")
    assert_close(results["tf"], results["numpy"], msg=f"tf vs numpy, d={dim}")


def test_feature_wide_features_take_the_row_path(backend, rng):
    """d = 16 features spread over thousands of lattice units do not fit one int64 key:
    the lattice falls back to row-wise unique and must give the same result."""
    values, features = _points(rng, 200, 16, 4000.0)
    oracle = _filter(Backend("numpy"), values, features)
    assert_close(_filter(backend, values, features), oracle)
    # Points that far apart only see themselves: each output is its own input times a gain.
    gains = oracle / values
    assert_close(gains, np.repeat(gains[:, :1], values.shape[1], axis=1), rtol=1e-9)
    assert (gains > 0).all()


def test_feature_reverse_blur_is_the_adjoint(rng):
    """<K v, w> = <v, K^T w>: blurring the directions in reverse order transposes the filter."""
    from impls.numpy import PermutohedralLattice

    values, features = _points(rng, 400, 5, 3.0)
    other = rng.random(values.shape)
    lattice = PermutohedralLattice(features)
    forward = np.vdot(lattice.filter(values), other)
    backward = np.vdot(values, lattice.filter(other, reverse=True))
    assert_close(forward, backward, rtol=1e-12)


def test_feature_lattice_is_reusable(backend, rng):
    values, features = _points(rng, 200, 3, 2.0)
    lattice = backend.module.PermutohedralLattice(backend.tensor(features))
    first = to_numpy(lattice.filter(backend.tensor(values)))
    assert_close(to_numpy(lattice.filter(backend.tensor(values))), first, rtol=0, atol=0)
    assert_close(to_numpy(lattice.filter(backend.tensor(values[:, :1]))), first[:, :1])
    weights = to_numpy(lattice.weights)
    assert_close(weights.sum(axis=1), np.ones(200))
    assert (weights >= -1e-12).all()


@pytest.mark.parametrize("dim", [2, 5])
def test_gradcheck_torch_filter_in_float64(dim, rng):
    torch = pytest.importorskip("torch")
    import impls.torch

    values, features = _points(rng, 40, dim, 2.0, channels=2)
    values = torch.from_numpy(values).requires_grad_(True)
    features = torch.from_numpy(features)
    assert torch.autograd.gradcheck(lambda v: impls.torch.permutohedral_filter(v, features), (values,))


def test_gradcheck_tf_gradient_matches_numeric_and_torch(rng):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("tensorflow")
    import impls.tf
    import impls.torch

    values, features = _points(rng, 30, 3, 2.0, channels=2)
    theoretical, numerical = tf.test.compute_gradient(
        lambda v: impls.tf.permutohedral_filter(v, tf.constant(features)), [tf.constant(values)])
    assert_close(theoretical[0], numerical[0], rtol=1e-6, atol=1e-6)
    upstream = rng.random(values.shape)
    with tf.GradientTape() as tape:
        tf_values = tf.constant(values)
        tape.watch(tf_values)
        tf_out = impls.tf.permutohedral_filter(tf_values, tf.constant(features))
    tf_grad = tape.gradient(tf_out, tf_values, output_gradients=tf.constant(upstream))
    torch_values = torch.from_numpy(values).requires_grad_(True)
    impls.torch.permutohedral_filter(torch_values, torch.from_numpy(features)).backward(torch.from_numpy(upstream))
    assert_close(tf_grad, torch_values.grad, msg="TF vs torch gradient")


@pytest.mark.parametrize("values_shape, features_shape, features_dtype, error, match", [
    ((10, 2), (10,), "float64", ValueError, "argument 'features' must be 2-D"),
    ((10, 2), (0, 3), "float64", ValueError, "argument 'features' must not be empty"),
    ((10, 2), (10, 3), "int32", TypeError, "argument 'features' must have a floating dtype"),
    ((9, 2), (10, 3), "float64", ValueError, r"argument 'values' must have shape \(10, C\)"),
    ((10,), (10, 3), "float64", ValueError, r"argument 'values' must have shape \(10, C\)"),
])
def test_exception_bad_shapes_and_dtypes(backend, values_shape, features_shape, features_dtype, error, match):
    values = np.ones(values_shape)
    features = np.ones(features_shape, features_dtype)
    with pytest.raises(error, match=match):
        backend.module.permutohedral_filter(backend.tensor(values), backend.tensor(features))


def test_exception_non_finite_features(backend):
    features = np.ones((10, 2))
    features[3, 1] = np.nan
    with pytest.raises(ValueError, match="argument 'features' must be finite"):
        backend.module.permutohedral_filter(backend.tensor(np.ones((10, 1))), backend.tensor(features))


def test_feature_wide_features_take_the_row_path_inside_tf_function(rng):
    """Inside tf.function the overflow check is symbolic; the row path used to be skipped
    there, so the packed int64 codes overflowed and the filter came out wrong, silently."""
    tf = pytest.importorskip("tensorflow")
    from impls.tf.lattice import PermutohedralLattice

    values, features = _points(rng, 200, 16, 4000.0)
    oracle = _filter(Backend("numpy"), values, features)
    graph_filter = tf.function(lambda v, f: PermutohedralLattice(f).filter(v))
    assert_close(graph_filter(tf.constant(values), tf.constant(features)), oracle)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_lattice_filter_is_linear_per_channel_and_backends_equal_numpy_oracle(profile):
    """Hypothesis (tests/strategies.py): every layout, 1 to 80 points in 1 to 6 dimensions."""
    import impls.numpy

    backends = installed_frameworks()

    def prop(case):
        values, features, how_v, how_f = case
        expected = impls.numpy.permutohedral_filter(values, features)
        assert expected.shape == values.shape and expected.dtype == features.dtype
        v, f = lay_out(values, how_v), lay_out(features, how_f)
        got = impls.numpy.permutohedral_filter(v, f)
        np.testing.assert_array_equal(v, values)
        np.testing.assert_array_equal(f, features)
        assert_close(got, expected, msg=f"layouts {how_v}/{how_f}")
        # Channels are filtered independently ("a batch of channels equals single channels").
        columns = np.concatenate([impls.numpy.permutohedral_filter(v[:, c:c + 1], f) for c in range(v.shape[1])],
                                 axis=1)
        assert_close(columns, expected, msg="channels != single channels")
        # Linear in the values.
        scale = 2.5
        combined = impls.numpy.permutohedral_filter(scale * values + 1.0, features)
        ones = impls.numpy.permutohedral_filter(np.ones_like(values), features)
        size = float(np.abs(combined).max())
        assert_close(combined, scale * expected + ones, rtol=1e-4, atol=1e-5 * (1 + size), msg="not linear")
        for backend in backends:
            tv, tf_ = to_backend(backend, values, how_v), to_backend(backend, features, how_f)
            out = np.asarray(backend.module.permutohedral_filter(tv, tf_))
            assert_close(out, expected, msg=f"{backend} layouts {how_v}/{how_f}")
        if native.available():
            # The native lattice is built in float32 (as pydensecrf's); values filter in their dtype.
            oracle = impls.numpy.permutohedral_filter(values, features.astype(np.float32))
            out = native.Lattice(f).filter(v)
            np.testing.assert_array_equal(v, values)
            np.testing.assert_array_equal(f, features)
            assert out.dtype == values.dtype
            assert_close(out, oracle.astype(values.dtype), rtol=1e-4, atol=1e-5, msg="native")

    check(profile, lattice_cases(), prop)
