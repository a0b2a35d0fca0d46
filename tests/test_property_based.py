"""Property-based tests (hypothesis) of every public entry point against the NumPy oracle.

Random sizes from 1x1 and odd shapes, 2 to 300 labels, batches of 1 to 3, strided and
non-contiguous inputs, float32 and float64. Each property runs twice: with a few examples
in the default run and with many under the `slow` marker (CI runs both); examples are
derandomised, so a failure reproduces.

Invariants: the backends and the native engine agree with the NumPy oracle; Q is a
distribution per pixel; inputs are never mutated; a batch of N equals N single calls;
permuting the labels commutes with a Potts CRF; native results are bit-identical run to
run on a fixed thread count; every bad input gets a TypeError or ValueError that names the
argument, never a crash or a silent result.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impls.testing import Backend, assert_close

_COMMON = dict(deadline=None, database=None, derandomize=True, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILES = [pytest.param(settings(max_examples=12, **_COMMON), id="few"),
            pytest.param(settings(max_examples=100, **_COMMON), id="many", marks=pytest.mark.slow)]
FRAMEWORKS = ("torch", "tf")
DTYPES = st.sampled_from([np.float32, np.float64])


def check(profile, strategy, prop):
    """Run `prop` on examples drawn from `strategy` under the settings `profile`."""
    profile(given(strategy)(prop))()


def framework(name):
    pytest.importorskip({"torch": "torch", "tf": "tensorflow"}[name], reason=f"{name} is not installed")
    return Backend(name)


def non_contiguous(array, how):
    """The same values as `array`, laid out in memory as asked: "c", "fortran", or "strided"
    (a view with a step into a larger buffer)."""
    if how == "fortran":
        return np.asfortranarray(array)
    if how == "strided":
        buffer = np.zeros((array.shape[0] * 2,) + array.shape[1:], array.dtype)
        buffer[::2] = array
        return buffer[::2]
    return np.ascontiguousarray(array)


LAYOUTS = st.sampled_from(["c", "fortran", "strided"])


# --- upsampling ------------------------------------------------------------------------------------

@st.composite
def upsample_cases(draw):
    dtype = draw(DTYPES)
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7)), draw(st.integers(1, 4)))
    seed = draw(st.integers(0, 2**31 - 1))
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return non_contiguous(x, draw(LAYOUTS)), draw(st.integers(1, 5))


@pytest.mark.parametrize("profile", PROFILES)
def test_property_upsample_backends_equal_numpy_batch_equals_singles(profile):
    import impls.numpy

    backends = [framework(name) for name in FRAMEWORKS if _importable(name)]

    def prop(case):
        x, factor = case
        before = x.copy()
        expected = impls.numpy.upsample_bilinear(x, factor)
        assert expected.shape == (x.shape[0], x.shape[1] * factor, x.shape[2] * factor, x.shape[3])
        np.testing.assert_array_equal(x, before)
        singles = np.concatenate([impls.numpy.upsample_bilinear(x[n:n + 1], factor) for n in range(len(x))])
        assert_close(singles, expected)
        for backend in backends:
            got = backend.to_nhwc(backend.module.upsample_bilinear(backend.from_nhwc(x), factor))
            assert_close(got, expected, msg=f"{backend} factor {factor}")

    check(profile, upsample_cases(), prop)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_bilinear_kernel_sums_to_factor_squared_everywhere(profile):
    import impls.numpy
    from impls import native

    def prop(factor):
        kernel = impls.numpy.bilinear_kernel(factor)
        assert kernel.shape == (2 * factor - factor % 2,) * 2
        assert np.isclose(kernel.sum(), factor**2) and (kernel >= 0).all()
        np.testing.assert_array_equal(kernel, kernel.T)
        if native.available():
            np.testing.assert_allclose(native.bilinear_kernel(factor), kernel, rtol=0, atol=1e-15)

    check(profile, st.integers(1, 40), prop)


# --- the permutohedral lattice ------------------------------------------------------------------------

@st.composite
def lattice_cases(draw):
    dtype = draw(DTYPES)
    points, dim, channels = draw(st.integers(1, 60)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    spread = draw(st.sampled_from([0.3, 1.0, 5.0]))
    features = (rng.standard_normal((points, dim)) * spread).astype(dtype)
    values = rng.standard_normal((points, channels)).astype(dtype)
    return non_contiguous(values, draw(LAYOUTS)), non_contiguous(features, draw(LAYOUTS))


@pytest.mark.parametrize("profile", PROFILES)
def test_property_lattice_filter_native_and_frameworks_equal_numpy(profile):
    import impls.numpy
    from impls import native

    backends = [framework(name) for name in FRAMEWORKS if _importable(name)]

    def prop(case):
        values, features = case
        kept = values.copy(), features.copy()
        expected = impls.numpy.permutohedral_filter(values, features)
        np.testing.assert_array_equal(values, kept[0])
        np.testing.assert_array_equal(features, kept[1])
        for backend in backends:
            got = backend.module.permutohedral_filter(backend.tensor(values), backend.tensor(features))
            assert_close(np.asarray(got), expected, msg=str(backend))
        if native.available():
            # The native lattice is built in float32 (as pydensecrf's), values filtered in their dtype.
            reference = impls.numpy.permutohedral_filter(values, features.astype(np.float32))
            lattice = native.Lattice(features)
            assert_close(lattice.filter(values), reference.astype(values.dtype), rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(features, kept[1])

    check(profile, lattice_cases(), prop)


# --- the dense CRF ------------------------------------------------------------------------------------

@st.composite
def crf_cases(draw, dtypes=DTYPES):
    dtype = draw(dtypes)
    labels = draw(st.sampled_from([2, 3, 5, 21, 300]))
    side = 3 if labels > 21 else 7
    batch, height, width = draw(st.integers(1, 3)), draw(st.integers(1, side)), draw(st.integers(1, side))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    unary = (rng.standard_normal((batch, height, width, labels)) * draw(st.sampled_from([0.5, 3.0]))).astype(dtype)
    image = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    options = dict(iterations=draw(st.integers(1, 4)),
                   normalization=draw(st.sampled_from(["symmetric", "before", "after", "none"])),
                   gaussian_sxy=draw(st.sampled_from([1, 3, (2, 5)])),
                   bilateral_sxy=draw(st.sampled_from([2, 80])), bilateral_srgb=draw(st.sampled_from([5, 13])),
                   gaussian_compat=draw(st.sampled_from([0, 3])), bilateral_compat=draw(st.sampled_from([1, 10])))
    return non_contiguous(unary, draw(LAYOUTS)), image, options


def _distribution(q):
    assert np.isfinite(q).all() and (q >= 0).all()
    assert_close(q.sum(-1), np.ones(q.shape[:-1], q.dtype), rtol=0, atol=1e-5 if q.dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_dense_crf_oracle_is_a_distribution_unmutated_and_batch_equals_singles(profile):
    import impls.numpy

    def prop(case):
        unary, image, options = case
        kept = unary.copy(), image.copy()
        q = impls.numpy.dense_crf(unary, image, engine="framework", **options)
        np.testing.assert_array_equal(unary, kept[0])
        np.testing.assert_array_equal(image, kept[1])
        assert q.shape == unary.shape and q.dtype == unary.dtype
        _distribution(q)
        singles = np.concatenate([impls.numpy.dense_crf(unary[n:n + 1], image[n:n + 1], engine="framework",
                                                        **options) for n in range(len(unary))])
        np.testing.assert_array_equal(singles, q)

    check(profile, crf_cases(), prop)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_potts_crf_commutes_with_permuting_labels(profile):
    import impls.numpy

    def prop(case_and_seed):
        (unary, image, options), seed = case_and_seed
        permutation = np.random.default_rng(seed).permutation(unary.shape[-1])
        q = impls.numpy.dense_crf(unary, image, engine="framework", **options)
        permuted = impls.numpy.dense_crf(unary[..., permutation], image, engine="framework", **options)
        assert_close(permuted, q[..., permutation], rtol=0, atol=1e-5 if q.dtype == np.float32 else 1e-12)

    check(profile, st.tuples(crf_cases(), st.integers(0, 2**31 - 1)), prop)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_native_dense_crf_equals_oracle_and_is_deterministic(profile):
    import impls.numpy
    from impls import native

    if not native.available():
        pytest.skip("impls._native is not built")

    def prop(case):
        unary, image, options = case
        kept = unary.copy()
        expected = impls.numpy.dense_crf(unary, image, engine="framework", **options)
        with native.threads(2):
            first = impls.numpy.dense_crf(unary, image, engine="native", **options)
            again = impls.numpy.dense_crf(unary, image, engine="native", **options)
        np.testing.assert_array_equal(unary, kept)
        np.testing.assert_array_equal(first, again)
        _distribution(first)
        assert_close(first, expected, rtol=0, atol=1e-4)

    check(profile, crf_cases(dtypes=st.just(np.float32)), prop)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_property_framework_dense_crf_equals_oracle(profile, name):
    import impls.numpy

    backend = framework(name)

    def prop(case):
        unary, image, options = case
        expected = impls.numpy.dense_crf(unary, image, engine="framework", **options)
        for engine in ("framework", "auto"):
            q = backend.to_nhwc(backend.module.dense_crf(_strided(backend, unary), _strided(backend, image),
                                                         engine=engine, **options))
            tolerance = 1e-4 if unary.dtype == np.float32 else 1e-9
            assert_close(q, expected, rtol=0, atol=tolerance, msg=f"{backend} engine={engine}")

    check(profile, crf_cases(), prop)


def _strided(backend, array):
    """A backend tensor of NHWC `array` in its layout, as a strided view where the framework keeps
    strides (torch: the NCHW view of the NumPy buffer, no copy)."""
    if backend.name == "torch":
        import torch

        return torch.from_numpy(np.moveaxis(array, -1, 1))
    return backend.from_nhwc(array)


# --- CRF-as-RNN -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_property_crfrnn_with_initial_weights_equals_the_dense_crf_oracle(profile, name):
    """With its initial weights (spatial 3 I, bilateral 5 I, compatibility -I), softmax of the
    layer's output is dense_crf(-logits, normalization="after") (impls._crfrnn's docstring)."""
    import impls.numpy

    backend = framework(name)

    def prop(case):
        unary, image, options = case
        logits = -unary.astype(np.float32)
        iterations = options["iterations"]
        layer = backend.module.CrfRnn(logits.shape[-1], theta_alpha=80, theta_beta=13, theta_gamma=3,
                                      iterations=iterations)
        out = backend.to_nhwc(_call_layer(backend, layer, logits, image))
        q = np.exp(out - out.max(-1, keepdims=True))
        q /= q.sum(-1, keepdims=True)
        expected = impls.numpy.dense_crf(-logits, image, gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80,
                                         bilateral_srgb=13, bilateral_compat=5, iterations=iterations,
                                         normalization="after", engine="framework")
        assert_close(q, expected, rtol=0, atol=1e-4, msg=str(backend))

    check(profile, crf_cases(dtypes=st.just(np.float32)), prop)


def _call_layer(backend, layer, logits, image):
    if backend.name == "torch":
        import torch

        with torch.no_grad():
            return layer(backend.from_nhwc(logits), backend.from_nhwc(image))
    return layer(backend.from_nhwc(logits), backend.from_nhwc(image))


@pytest.mark.parametrize("profile", PROFILES)
def test_property_port_round_trip_restores_crfrnn_weights_exactly(profile):
    framework("torch"), framework("tf")
    import torch

    import impls.tf
    import impls.torch
    from impls import port

    def prop(classes_and_seed):
        classes, seed = classes_and_seed
        torch.manual_seed(seed)
        source = impls.torch.CrfRnn(classes)
        with torch.no_grad():
            for parameter in source.parameters():
                parameter.copy_(torch.randn_like(parameter))
        keras_layer = impls.tf.CrfRnn(classes)
        keras_layer.build(None)
        port.torch_to_tf(source, keras_layer)
        back = impls.torch.CrfRnn(classes)
        port.tf_to_torch(keras_layer, back)
        for name, parameter in source.named_parameters():
            np.testing.assert_array_equal(dict(back.named_parameters())[name].detach().numpy(),
                                          parameter.detach().numpy())

    check(profile, st.tuples(st.integers(2, 30), st.integers(0, 2**31 - 1)), prop)


# --- metrics ----------------------------------------------------------------------------------------------

@st.composite
def label_maps(draw):
    classes = draw(st.integers(1, 40))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    label = rng.integers(0, classes, shape).astype(draw(st.sampled_from([np.uint8, np.int32, np.int64])))
    label[rng.random(shape) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = 255 if label.dtype == np.uint8 else 255
    pred = rng.integers(0, classes, shape).astype(np.int64)
    return pred, label, classes


@pytest.mark.parametrize("profile", PROFILES)
def test_property_metrics_backends_equal_numpy_and_count_every_labelled_pixel(profile):
    import impls.numpy

    backends = [framework(name) for name in FRAMEWORKS if _importable(name)]

    def prop(case):
        pred, label, classes = case
        kept = pred.copy(), label.copy()
        confusion = impls.numpy.confusion_matrix(pred, label, classes)
        np.testing.assert_array_equal(pred, kept[0])
        np.testing.assert_array_equal(label, kept[1])
        assert confusion.shape == (classes, classes) and confusion.sum() == np.count_nonzero(label != 255)
        expected = np.zeros((classes, classes), np.int64)
        np.add.at(expected, (label[label != 255].astype(np.int64), pred[label != 255]), 1)
        np.testing.assert_array_equal(confusion, expected)
        scores = {name: getattr(impls.numpy, name)(confusion)
                  for name in ("per_class_iou", "mean_iou", "pixel_accuracy", "frequency_weighted_iou")}
        for value in np.atleast_1d(scores["per_class_iou"]):
            assert np.isnan(value) or 0 <= value <= 1
        for backend in backends:
            got = backend.module.confusion_matrix(backend.tensor(pred), backend.tensor(label), classes)
            np.testing.assert_array_equal(np.asarray(got), confusion)
            for name, value in scores.items():
                assert_close(np.asarray(getattr(backend.module, name)(got)), np.asarray(value), equal_nan=True,
                             rtol=1e-6, atol=1e-12, msg=f"{backend} {name}")

    check(profile, label_maps(), prop)


# --- bad input ----------------------------------------------------------------------------------------------

def _crf_faults():
    """(argument name, how to break a valid (unary, image, options) case)."""
    nan = np.float32("nan")
    return [
        ("unary", lambda u, i, o: (u[0], i, o)),
        ("unary", lambda u, i, o: (u.astype(np.int32), i, o)),
        ("unary", lambda u, i, o: (np.where(u > 0, nan, u).astype(u.dtype) + nan, i, o)),
        ("unary", lambda u, i, o: (u[..., :1], i, o)),
        ("image", lambda u, i, o: (u, i.astype(np.float32), o)),
        ("image", lambda u, i, o: (u, i[..., :2], o)),
        ("image", lambda u, i, o: (u, np.concatenate([i, i], axis=1), o)),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": 0})),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": 2.5})),
        ("gaussian_sxy", lambda u, i, o: (u, i, {**o, "gaussian_sxy": -1})),
        ("bilateral_srgb", lambda u, i, o: (u, i, {**o, "bilateral_srgb": (1, 2)})),
        ("bilateral_sxy", lambda u, i, o: (u, i, {**o, "bilateral_sxy": "wide"})),
        ("gaussian_compat", lambda u, i, o: (u, i, {**o, "gaussian_compat": np.ones(u.shape[-1] + 1)})),
        ("bilateral_compat", lambda u, i, o: (u, i, {**o, "bilateral_compat": float("inf")})),
        ("normalization", lambda u, i, o: (u, i, {**o, "normalization": "both"})),
        ("engine", lambda u, i, o: (u, i, {**o, "engine": "cuda"})),
    ]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", ("numpy",) + FRAMEWORKS)
def test_exception_every_bad_dense_crf_input_names_its_argument(profile, name):
    backend = Backend("numpy") if name == "numpy" else framework(name)
    faults = _crf_faults()

    def prop(case_and_fault):
        (unary, image, options), which = case_and_fault
        argument, corrupt = faults[which]
        bad_unary, bad_image, bad_options = corrupt(unary, image, options)
        with pytest.raises((TypeError, ValueError), match=f"argument '{argument}'"):
            backend.module.dense_crf(_as_backend(backend, bad_unary), _as_backend(backend, bad_image), **bad_options)

    check(profile, st.tuples(crf_cases(dtypes=st.just(np.float32)), st.integers(0, len(faults) - 1)), prop)


def _as_backend(backend, array):
    """A backend tensor of `array` in its layout; arrays that are not 4-D keep their axes."""
    return backend.from_nhwc(array) if array.ndim == 4 else backend.tensor(array)


@pytest.mark.parametrize("profile", PROFILES)
def test_exception_bad_upsample_and_metric_inputs_name_their_argument(profile):
    import impls.numpy

    cases = [
        ("factor", lambda: impls.numpy.upsample_bilinear(np.zeros((1, 2, 2, 1), np.float32), 0)),
        ("factor", lambda: impls.numpy.upsample_bilinear(np.zeros((1, 2, 2, 1), np.float32), 1.5)),
        ("x", lambda: impls.numpy.upsample_bilinear(np.zeros((2, 2, 1), np.float32), 2)),
        ("x", lambda: impls.numpy.upsample_bilinear(np.zeros((1, 2, 2, 1), np.int64), 2)),
        ("x", lambda: impls.numpy.upsample_bilinear(np.zeros((1, 0, 2, 1), np.float32), 2)),
        ("factor", lambda: impls.numpy.bilinear_kernel(-3)),
        ("num_classes", lambda: impls.numpy.confusion_matrix(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), int), 0)),
        ("pred", lambda: impls.numpy.confusion_matrix(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), int), 3)),
        ("label", lambda: impls.numpy.confusion_matrix(np.zeros((1, 2, 2), int), np.full((1, 2, 2), 7), 3)),
        ("confusion", lambda: impls.numpy.mean_iou(np.zeros((2, 3)))),
        ("values", lambda: impls.numpy.permutohedral_filter(np.zeros((3, 1)), np.zeros((4, 2)))),
        ("features", lambda: impls.numpy.permutohedral_filter(np.zeros((4, 1)), np.zeros((4, 0)))),
        ("features", lambda: impls.numpy.permutohedral_filter(np.zeros((4, 1)), np.full((4, 2), np.nan))),
    ]

    def prop(which):
        argument, call = cases[which]
        with pytest.raises((TypeError, ValueError), match=f"argument '{argument}'"):
            call()

    check(profile, st.integers(0, len(cases) - 1), prop)


def _importable(name):
    import importlib.util

    return importlib.util.find_spec({"torch": "torch", "tf": "tensorflow"}[name]) is not None
