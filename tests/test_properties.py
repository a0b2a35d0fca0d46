"""Property-based tests (hypothesis) of every public entry point against the NumPy oracle.

Inputs: random sizes from 1x1 and odd shapes, 2 to 300 labels (300 only on tiny images), batches of
1 to 3, float32 and float64, laid out C-contiguous, in Fortran order, as views with a step into a
larger buffer, or as transposed views. Each property runs on a few examples in the default
selection ("few") and on many under the `slow` marker ("many"); examples are derandomised, so a
failure reproduces in CI.

Invariants: backends (torch, TF, the native engine) agree with the NumPy oracle
(`impls.numpy.dense_crf(..., engine="framework")` for the CRF); Q is a distribution per pixel;
inputs are not mutated; a batch of N equals N single calls; permuting the labels commutes with a
Potts CRF (and permutes a confusion matrix); native results are bit-identical run to run on a fixed
thread count; a port round trip restores CrfRnn weights exactly; every bad input gets a TypeError or
ValueError naming the argument.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impls import native
from impls._crfrnn import WEIGHT_NAMES
from impls.testing import Backend, assert_close

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
needs_native = pytest.mark.skipif(not native.available(), reason="impls._native is not built")


def check(profile, strategy, prop):
    """Run `prop` on the examples `strategy` draws, under the settings `profile`."""
    profile(given(strategy)(prop))()


def framework(name):
    """The CPU backend `name`, or a skip when its framework is not installed."""
    pytest.importorskip(MODULES[name], reason=f"{MODULES[name]} is not installed")
    return Backend(name)


def installed_frameworks():
    return [Backend(name) for name in FRAMEWORKS if importlib.util.find_spec(MODULES[name]) is not None]


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


def rng_of(seed):
    return np.random.default_rng(seed)


def _distribution(q):
    assert np.isfinite(q).all() and (q >= 0).all()
    assert_close(q.sum(-1), np.ones(q.shape[:-1]), rtol=0, atol=1e-5 if q.dtype == np.float32 else 1e-12)


def _crf_tolerance(dtype):
    return 1e-4 if np.dtype(dtype) == np.float32 else 1e-9


# --- upsampling ----------------------------------------------------------------------------------------

@st.composite
def upsample_cases(draw):
    dtype = draw(DTYPES)
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 4)))
    x = rng_of(draw(SEEDS)).standard_normal(shape).astype(dtype)
    return x, draw(st.integers(1, 6)), draw(LAYOUTS)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_upsample_backends_and_layouts_equal_numpy_oracle_batch_equals_singles(profile):
    import impls.numpy

    backends = installed_frameworks()

    def prop(case):
        x, factor, how = case
        expected = impls.numpy.upsample_bilinear(x, factor)
        assert expected.shape == (x.shape[0], x.shape[1] * factor, x.shape[2] * factor, x.shape[3])
        assert expected.dtype == x.dtype
        view = lay_out(x, how)
        got = impls.numpy.upsample_bilinear(view, factor)
        np.testing.assert_array_equal(view, x)  # not mutated
        assert_close(got, expected, msg=f"layout {how}")
        singles = np.concatenate([impls.numpy.upsample_bilinear(view[n:n + 1], factor) for n in range(len(x))])
        assert_close(singles, expected, msg="batch != singles")
        for backend in backends:
            tensor = to_backend(backend, x, how)
            out = backend.to_nhwc(backend.module.upsample_bilinear(tensor, factor))
            assert_close(backend.to_nhwc(tensor), x, rtol=0, atol=0, msg=f"{backend} mutated x")
            assert out.dtype == x.dtype
            assert_close(out, expected, msg=f"{backend} factor {factor} layout {how}")

    check(profile, upsample_cases(), prop)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_bilinear_kernel_is_a_symmetric_rank_one_tent_equal_in_every_backend(profile):
    import impls.numpy

    backends = installed_frameworks()

    def prop(factor):
        kernel = impls.numpy.bilinear_kernel(factor)
        size = 2 * factor - factor % 2
        assert kernel.shape == (size, size) and (kernel >= 0).all() and (kernel > 0).any()
        np.testing.assert_array_equal(kernel, kernel.T)
        np.testing.assert_array_equal(kernel, kernel[::-1, ::-1])
        taps = kernel[size // 2] / np.sqrt(kernel[size // 2, size // 2])
        assert_close(kernel, np.outer(taps, taps), rtol=1e-12, atol=1e-15, msg="not rank one")
        assert np.isclose(kernel.sum(), factor**2)
        if native.available():
            assert_close(native.bilinear_kernel(factor), kernel, rtol=0, atol=1e-15, msg="native")
        for backend in backends:
            assert_close(np.asarray(backend.module.bilinear_kernel(factor)), kernel, rtol=0, atol=1e-7,
                         msg=str(backend))

    check(profile, st.integers(1, 64), prop)


# --- the permutohedral lattice ---------------------------------------------------------------------------

@st.composite
def lattice_cases(draw):
    dtype = draw(DTYPES)
    points, dim, channels = draw(st.integers(1, 80)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    rng = rng_of(draw(SEEDS))
    features = (rng.standard_normal((points, dim)) * draw(st.sampled_from([0.2, 1.0, 6.0]))).astype(dtype)
    values = rng.standard_normal((points, channels)).astype(dtype)
    return values, features, draw(LAYOUTS), draw(LAYOUTS)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_lattice_filter_is_linear_per_channel_and_backends_equal_numpy_oracle(profile):
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
            reference = impls.numpy.permutohedral_filter(values, features.astype(np.float32))
            out = native.Lattice(f).filter(v)
            np.testing.assert_array_equal(v, values)
            np.testing.assert_array_equal(f, features)
            assert out.dtype == values.dtype
            assert_close(out, reference.astype(values.dtype), rtol=1e-4, atol=1e-5, msg="native")

    check(profile, lattice_cases(), prop)


@needs_native
@pytest.mark.parametrize("profile", PROFILES)
def test_property_native_lattice_is_bit_deterministic_per_thread_count_and_reverse_is_its_adjoint(profile):
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

    check(profile, st.tuples(lattice_cases(), st.integers(1, 3)), prop)


# --- the dense CRF -----------------------------------------------------------------------------------------

@st.composite
def crf_cases(draw, dtypes=DTYPES, potts=False):
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


@pytest.mark.parametrize("profile", PROFILES)
def test_property_dense_crf_oracle_is_a_distribution_unmutated_layout_free_and_batch_equals_singles(profile):
    import impls.numpy

    def prop(case):
        unary, image, options, how = case
        u, i = lay_out(unary, how), lay_out(image, how)
        kept = {k: np.copy(v) for k, v in options.items() if isinstance(v, np.ndarray)}
        q = impls.numpy.dense_crf(u, i, engine="framework", **options)
        np.testing.assert_array_equal(u, unary)
        np.testing.assert_array_equal(i, image)
        for name, value in kept.items():
            np.testing.assert_array_equal(options[name], value, err_msg=f"{name} mutated")
        assert q.shape == unary.shape and q.dtype == unary.dtype
        _distribution(q)
        contiguous = impls.numpy.dense_crf(unary, image, engine="framework", **options)
        assert_close(q, contiguous, rtol=0, atol=_crf_tolerance(unary.dtype) / 100, msg=f"layout {how}")
        singles = np.concatenate([impls.numpy.dense_crf(u[n:n + 1], i[n:n + 1], engine="framework", **options)
                                  for n in range(len(unary))])
        assert_close(singles, q, rtol=0, atol=_crf_tolerance(unary.dtype) / 100, msg="batch != singles")

    check(profile, crf_cases(), prop)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_potts_dense_crf_commutes_with_permuting_labels(profile):
    import impls.numpy

    def prop(case_and_seed):
        (unary, image, options, how), seed = case_and_seed
        permutation = rng_of(seed).permutation(unary.shape[-1])
        q = impls.numpy.dense_crf(unary, image, engine="framework", **options)
        permuted = impls.numpy.dense_crf(lay_out(unary[..., permutation], how), image, engine="framework", **options)
        assert_close(permuted, q[..., permutation], rtol=0, atol=_crf_tolerance(unary.dtype) / 10)

    check(profile, st.tuples(crf_cases(potts=True), SEEDS), prop)


@needs_native
@pytest.mark.parametrize("profile", PROFILES)
def test_property_native_dense_crf_equals_oracle_and_is_bit_deterministic_per_thread_count(profile):
    import impls.numpy

    def prop(case_and_threads):
        (unary, image, options, how), count = case_and_threads
        u, i = lay_out(unary, how), lay_out(image, how)
        expected = impls.numpy.dense_crf(unary, image, engine="framework", **options)
        with native.threads(count):
            first = impls.numpy.dense_crf(u, i, engine="native", **options)
            again = impls.numpy.dense_crf(u, i, engine="native", **options)
            auto = impls.numpy.dense_crf(u, i, **options)
        np.testing.assert_array_equal(u, unary)
        np.testing.assert_array_equal(i, image)
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(first, auto)
        assert first.dtype == np.float32
        _distribution(first)
        assert_close(first, expected, rtol=0, atol=1e-4, msg=f"native, {count} threads")

    check(profile, st.tuples(crf_cases(dtypes=st.just(np.float32)), st.integers(1, 3)), prop)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_property_framework_dense_crf_equals_oracle_unmutated_and_batch_equals_singles(profile, name):
    import impls.numpy

    backend = framework(name)

    def prop(case):
        unary, image, options, how = case
        expected = impls.numpy.dense_crf(unary, image, engine="framework", **options)
        tolerance = _crf_tolerance(unary.dtype)
        u, i = to_backend(backend, unary, how), to_backend(backend, image, how)
        for engine in ("framework", "auto"):
            q = backend.to_nhwc(backend.module.dense_crf(u, i, engine=engine, **options))
            assert q.dtype == unary.dtype
            assert_close(q, expected, rtol=0, atol=tolerance, msg=f"{backend} engine={engine} layout {how}")
        assert_close(backend.to_nhwc(u), unary, rtol=0, atol=0, msg="unary mutated")
        assert_close(backend.to_nhwc(i), image, rtol=0, atol=0, msg="image mutated")
        if len(unary) > 1:
            singles = np.concatenate([backend.to_nhwc(backend.module.dense_crf(
                to_backend(backend, unary[n:n + 1]), to_backend(backend, image[n:n + 1]), engine="framework",
                **options)) for n in range(len(unary))])
            assert_close(singles, expected, rtol=0, atol=tolerance, msg=f"{backend} singles")

    check(profile, crf_cases(), prop)


# --- CRF-as-RNN ----------------------------------------------------------------------------------------------

def _call_layer(backend, layer, logits, image, how="c"):
    """The layer's NHWC output on NHWC inputs given in the backend's layout."""
    if backend.name == "torch":
        import torch

        with torch.no_grad():
            return backend.to_nhwc(layer(torch_nchw(logits, how), torch_nchw(image, how)))
    return backend.to_nhwc(layer(backend.tensor(lay_out(logits, how)), backend.tensor(lay_out(image, how))))


def _set_weights(backend, layer, weights):
    for name, value in zip(WEIGHT_NAMES, weights, strict=True):
        target = getattr(layer, name)
        if backend.name == "torch":
            import torch

            with torch.no_grad():
                target.copy_(torch.from_numpy(value))
        else:
            target.assign(value)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@st.composite
def crfrnn_cases(draw):
    classes = draw(st.sampled_from([2, 3, 5, 21]))
    batch, height, width = draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    rng = rng_of(draw(SEEDS))
    logits = (rng.standard_normal((batch, height, width, classes)) * 2).astype(np.float32)
    image = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    thetas = dict(theta_alpha=draw(st.sampled_from([3, 80, 160])), theta_beta=draw(st.sampled_from([3, 13])),
                  theta_gamma=draw(st.sampled_from([1, 3])), iterations=draw(st.integers(1, 3)))
    return logits, image, thetas, draw(LAYOUTS), draw(SEEDS)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_property_crfrnn_with_initial_weights_equals_dense_crf_oracle_and_batch_equals_singles(profile, name):
    """softmax(CrfRnn(logits)) with the initial weights (spatial 3 I, bilateral 5 I, compatibility -I) is
    dense_crf(-logits, normalization="after") (impls._crfrnn's docstring)."""
    import impls.numpy

    backend = framework(name)

    def prop(case):
        logits, image, thetas, how, _ = case
        layer = backend.module.CrfRnn(logits.shape[-1], **thetas)
        out = _call_layer(backend, layer, logits, image, how)
        assert out.shape == logits.shape
        expected = impls.numpy.dense_crf(-logits, image, gaussian_sxy=thetas["theta_gamma"], gaussian_compat=3,
                                         bilateral_sxy=thetas["theta_alpha"], bilateral_srgb=thetas["theta_beta"],
                                         bilateral_compat=5, iterations=thetas["iterations"],
                                         normalization="after", engine="framework")
        assert_close(_softmax(out.astype(np.float64)), expected, rtol=0, atol=1e-4, msg=f"{backend} layout {how}")
        singles = np.concatenate([_call_layer(backend, layer, logits[n:n + 1], image[n:n + 1])
                                  for n in range(len(logits))])
        assert_close(singles, out, rtol=1e-5, atol=1e-4, msg=f"{backend} singles")

    check(profile, crfrnn_cases(), prop)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_crfrnn_torch_and_keras_agree_with_random_weights_and_leave_inputs_unmutated(profile):
    torch_backend, tf_backend = framework("torch"), framework("tf")

    def prop(case):
        logits, image, thetas, how, seed = case
        classes = logits.shape[-1]
        weights = [rng_of(seed + k).standard_normal((classes, classes)).astype(np.float32) for k in range(3)]
        outputs = []
        for backend in (torch_backend, tf_backend):
            layer = backend.module.CrfRnn(classes, **thetas)
            if backend.name == "tf":
                layer.build(None)
            _set_weights(backend, layer, weights)
            x, i = lay_out(logits, how), lay_out(image, how)
            outputs.append(_call_layer(backend, layer, x, i, how))
            np.testing.assert_array_equal(x, logits)
            np.testing.assert_array_equal(i, image)
        assert np.isfinite(outputs[0]).all()
        assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4, msg="torch vs keras")

    check(profile, crfrnn_cases(), prop)


@pytest.mark.parametrize("profile", PROFILES)
def test_property_port_round_trip_restores_crfrnn_weights_exactly(profile):
    framework("torch"), framework("tf")
    import torch

    import impls.tf
    import impls.torch
    from impls import port

    def prop(classes_and_seed):
        classes, seed, scale = classes_and_seed
        torch.manual_seed(seed)
        source = impls.torch.CrfRnn(classes)
        with torch.no_grad():
            for parameter in source.parameters():
                parameter.copy_(torch.randn_like(parameter) * scale)
        original = {name: p.detach().numpy().copy() for name, p in source.named_parameters()}
        keras_layer = impls.tf.CrfRnn(classes)
        keras_layer.build(None)
        port.torch_to_tf(source, keras_layer)
        for name in WEIGHT_NAMES:
            np.testing.assert_array_equal(np.asarray(getattr(keras_layer, name).numpy()), original[name],
                                          err_msg=f"torch_to_tf {name}")
        back = impls.torch.CrfRnn(classes)
        port.tf_to_torch(keras_layer, back)
        restored = dict(back.named_parameters())
        assert set(restored) == set(original)
        for name, value in original.items():
            np.testing.assert_array_equal(restored[name].detach().numpy(), value, err_msg=f"round trip {name}")
            np.testing.assert_array_equal(dict(source.named_parameters())[name].detach().numpy(), value)

    check(profile, st.tuples(st.integers(2, 30), SEEDS, st.sampled_from([1e-30, 1.0, 1e30])), prop)


# --- metrics --------------------------------------------------------------------------------------------------

@st.composite
def label_map_cases(draw):
    classes = draw(st.integers(1, 255))  # 255 is the ignore label
    side = 4 if classes > 40 else 9
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, side)), draw(st.integers(1, side)))
    rng = rng_of(draw(SEEDS))
    label_dtype = draw(st.sampled_from([np.uint8, np.int32, np.int64]))
    label = rng.integers(0, classes, shape).astype(label_dtype)
    label[rng.random(shape) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = 255
    pred = rng.integers(0, classes, shape).astype(draw(st.sampled_from([np.int32, np.int64])))
    return pred, label, classes, draw(LAYOUTS), draw(SEEDS)


def _brute_force_confusion(pred, label, classes):
    confusion = np.zeros((classes, classes), np.int64)
    for truth, guess in zip(label.ravel().tolist(), pred.ravel().tolist(), strict=True):
        if truth != 255:
            confusion[truth, guess] += 1
    return confusion


@pytest.mark.parametrize("profile", PROFILES)
def test_property_metrics_equal_brute_force_and_backends_batch_sums_and_labels_permute(profile):
    import impls.numpy

    backends = installed_frameworks()

    def prop(case):
        pred, label, classes, how, seed = case
        p, t = lay_out(pred, how), lay_out(label, how)
        confusion = impls.numpy.confusion_matrix(p, t, classes)
        np.testing.assert_array_equal(p, pred)
        np.testing.assert_array_equal(t, label)
        assert confusion.dtype == np.int64 and confusion.shape == (classes, classes)
        np.testing.assert_array_equal(confusion, _brute_force_confusion(pred, label, classes))
        # A batch's confusion is the sum of its images'.
        np.testing.assert_array_equal(sum(impls.numpy.confusion_matrix(p[n], t[n], classes) for n in range(len(p))),
                                      confusion)
        iou = impls.numpy.per_class_iou(confusion)
        assert iou.shape == (classes,)
        assert np.all(np.isnan(iou) | ((iou >= 0) & (iou <= 1)))
        mean = impls.numpy.mean_iou(confusion)
        if np.isnan(iou).all():
            assert np.isnan(mean)
        else:
            assert np.isclose(mean, np.nanmean(iou))
        accuracy = impls.numpy.pixel_accuracy(confusion)
        labelled = np.count_nonzero(label != 255)
        if labelled:
            assert np.isclose(accuracy, np.count_nonzero((pred == label) & (label != 255)) / labelled)
        else:
            assert np.isnan(accuracy)
        # Renaming the classes permutes the matrix and leaves the scores unchanged.
        permutation = rng_of(seed).permutation(classes)
        relabel = np.where(label == 255, 255, permutation[np.minimum(label, classes - 1)])
        permuted = impls.numpy.confusion_matrix(permutation[pred], relabel, classes)
        expected = np.zeros_like(confusion)
        expected[np.ix_(permutation, permutation)] = confusion
        np.testing.assert_array_equal(permuted, expected)
        assert_close(impls.numpy.per_class_iou(permuted)[permutation], iou, equal_nan=True)
        assert_close(impls.numpy.mean_iou(permuted), mean, equal_nan=True)
        assert_close(impls.numpy.pixel_accuracy(permuted), accuracy, equal_nan=True)
        for backend in backends:
            got = backend.module.confusion_matrix(to_backend(backend, pred, how), to_backend(backend, label, how),
                                                  classes)
            np.testing.assert_array_equal(np.asarray(got), confusion, err_msg=str(backend))
            for score, value in (("per_class_iou", iou), ("mean_iou", mean), ("pixel_accuracy", accuracy)):
                assert_close(np.asarray(getattr(backend.module, score)(got)), np.asarray(value), equal_nan=True,
                             rtol=1e-6, atol=1e-12, msg=f"{backend} {score}")

    check(profile, label_map_cases(), prop)


# --- bad input -----------------------------------------------------------------------------------------------

NAN = float("nan")


def named(argument):
    """The pattern of a message naming `argument`: "argument 'x'", or "arguments 'a' and 'x'" where the
    fault is a mismatch between two arguments (confusion_matrix's pred/label, CrfRnn's logits/image)."""
    return rf"argument '{argument}'|arguments '\w+' and '{argument}'|arguments '{argument}' and '\w+'"


def _crf_faults():
    """(argument, how to break a valid NHWC (unary, image, options)): wrong ndim, dtype, label count, NaN,
    non-positive sizes and parameters, wrong Python types."""
    return [
        ("unary", lambda u, i, o: (u[0], i, o)),
        ("unary", lambda u, i, o: (u[..., None], i, o)),
        ("unary", lambda u, i, o: (u.astype(np.int32), i, o)),
        ("unary", lambda u, i, o: (u.astype(np.float16), i, o)),
        ("unary", lambda u, i, o: (np.where(np.arange(u.size).reshape(u.shape) == u.size // 2, NAN, u)
                                   .astype(u.dtype), i, o)),
        ("unary", lambda u, i, o: (np.full_like(u, np.inf), i, o)),
        ("unary", lambda u, i, o: (u[..., :1], i, o)),
        ("unary", lambda u, i, o: (u[:, :0], i[:, :0], o)),
        ("image", lambda u, i, o: (u, i.astype(np.float32), o)),
        ("image", lambda u, i, o: (u, i[..., :2], o)),
        ("image", lambda u, i, o: (u, i[0], o)),
        ("image", lambda u, i, o: (u, np.concatenate([i, i], axis=2), o)),
        ("image", lambda u, i, o: (u, np.concatenate([i, i]), o)),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": 0})),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": -3})),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": 2.5})),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": "5"})),
        ("iterations", lambda u, i, o: (u, i, {**o, "iterations": None})),
        ("gaussian_sxy", lambda u, i, o: (u, i, {**o, "gaussian_sxy": -1})),
        ("gaussian_sxy", lambda u, i, o: (u, i, {**o, "gaussian_sxy": 0})),
        ("gaussian_sxy", lambda u, i, o: (u, i, {**o, "gaussian_sxy": NAN})),
        ("gaussian_sxy", lambda u, i, o: (u, i, {**o, "gaussian_sxy": None})),
        ("bilateral_sxy", lambda u, i, o: (u, i, {**o, "bilateral_sxy": "wide"})),
        ("bilateral_sxy", lambda u, i, o: (u, i, {**o, "bilateral_sxy": (1, 2, 3)})),
        ("bilateral_srgb", lambda u, i, o: (u, i, {**o, "bilateral_srgb": (1, 2)})),
        ("bilateral_srgb", lambda u, i, o: (u, i, {**o, "bilateral_srgb": (5, 0, 5)})),
        ("gaussian_compat", lambda u, i, o: (u, i, {**o, "gaussian_compat": np.ones(u.shape[-1] + 1)})),
        ("gaussian_compat", lambda u, i, o: (u, i, {**o, "gaussian_compat": "potts"})),
        ("bilateral_compat", lambda u, i, o: (u, i, {**o, "bilateral_compat": float("inf")})),
        ("bilateral_compat", lambda u, i, o: (u, i, {**o, "bilateral_compat": np.full((u.shape[-1],) * 2, NAN)})),
        ("bilateral_compat", lambda u, i, o: (u, i, {**o, "bilateral_compat": np.ones((2, 2, 2))})),
        ("normalization", lambda u, i, o: (u, i, {**o, "normalization": "both"})),
        ("normalization", lambda u, i, o: (u, i, {**o, "normalization": None})),
        ("engine", lambda u, i, o: (u, i, {**o, "engine": "cuda"})),
        ("engine", lambda u, i, o: (u, i, {**o, "engine": 1})),
    ]


def _as_backend(backend, value):
    """A backend tensor of NumPy `value` (in the backend's layout if 4-D); anything else as is."""
    if not isinstance(value, np.ndarray):
        return value
    return backend.from_nhwc(value) if value.ndim == 4 else backend.tensor(value)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", ("numpy",) + FRAMEWORKS)
def test_exception_every_bad_dense_crf_input_is_a_type_or_value_error_naming_its_argument(profile, name):
    backend = Backend("numpy") if name == "numpy" else framework(name)
    faults = _crf_faults()

    def prop(case_and_fault):
        (unary, image, options, _), which = case_and_fault
        argument, corrupt = faults[which]
        bad_unary, bad_image, bad_options = corrupt(unary, image, options)
        with pytest.raises((TypeError, ValueError), match=named(argument)):
            backend.module.dense_crf(_as_backend(backend, bad_unary), _as_backend(backend, bad_image),
                                     **bad_options)

    # Every fault in the default run too: the index is drawn, and the few examples cover the list.
    strategy = st.tuples(crf_cases(dtypes=st.just(np.float32)), st.integers(0, len(faults) - 1))
    check(profile, strategy, prop)
    for which in range(len(faults)):
        prop(((np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 3, 3), np.uint8), {}, "c"), which))


def _other_faults(backend):
    """(argument, call) pairs for upsample, bilinear_kernel, the lattice filter, metrics and CrfRnn of a
    backend; tensors as the backend takes them."""
    m = backend.module
    t = lambda a: _as_backend(backend, np.asarray(a))  # noqa: E731
    x = np.zeros((1, 2, 3, 2), np.float32)
    values, features = np.zeros((4, 1), np.float32), np.zeros((4, 2), np.float32)
    labels = np.zeros((1, 2, 2), np.int64)
    faults = [
        ("factor", lambda: m.upsample_bilinear(t(x), 0)),
        ("factor", lambda: m.upsample_bilinear(t(x), -2)),
        ("factor", lambda: m.upsample_bilinear(t(x), 1.5)),
        ("factor", lambda: m.upsample_bilinear(t(x), "2")),
        ("factor", lambda: m.upsample_bilinear(t(x), True)),
        ("x", lambda: m.upsample_bilinear(t(x[0]), 2)),
        ("x", lambda: m.upsample_bilinear(t(x.astype(np.int64)), 2)),
        ("x", lambda: m.upsample_bilinear(t(x[:, :0]), 2)),
        ("factor", lambda: m.bilinear_kernel(0)),
        ("factor", lambda: m.bilinear_kernel(2.0)),
        ("factor", lambda: m.bilinear_kernel(None)),
        ("values", lambda: m.permutohedral_filter(t(values[:3]), t(features))),
        ("values", lambda: m.permutohedral_filter(t(values[:, 0]), t(features))),
        ("values", lambda: m.permutohedral_filter(t(values.astype(np.int32)), t(features))),
        ("features", lambda: m.permutohedral_filter(t(values), t(features[:, :0]))),
        ("features", lambda: m.permutohedral_filter(t(values), t(features[:, 0]))),
        ("features", lambda: m.permutohedral_filter(t(values), t(np.full((4, 2), NAN, np.float32)))),
        ("features", lambda: m.permutohedral_filter(t(values), t(features.astype(np.int32)))),
        ("features", lambda: m.permutohedral_filter(t(values[:0]), t(features[:0]))),
        ("num_classes", lambda: m.confusion_matrix(t(labels), t(labels), 0)),
        ("num_classes", lambda: m.confusion_matrix(t(labels), t(labels), 2.5)),
        ("pred", lambda: m.confusion_matrix(t(labels.astype(np.float32)), t(labels), 3)),
        ("pred", lambda: m.confusion_matrix(t(labels + 3), t(labels), 3)),
        ("pred", lambda: m.confusion_matrix(t(labels - 1), t(labels), 3)),
        ("label", lambda: m.confusion_matrix(t(labels), t(labels + 7), 3)),
        ("label", lambda: m.confusion_matrix(t(labels), t(labels.astype(np.float64)), 3)),
        ("pred", lambda: m.confusion_matrix(t(labels[0]), t(labels), 3)),
        ("confusion", lambda: m.mean_iou(t(np.zeros((2, 3))))),
        ("confusion", lambda: m.per_class_iou(t(np.zeros((2, 2, 2))))),
        ("confusion", lambda: m.pixel_accuracy(t(np.zeros(4)))),
        ("confusion", lambda: m.mean_iou(t(np.zeros((0, 0))))),
    ]
    if backend.name != "numpy":
        logits, image = np.zeros((1, 2, 3, 3), np.float32), np.zeros((1, 2, 3, 3), np.uint8)
        faults += [
            ("num_classes", lambda: m.CrfRnn(1)),
            ("num_classes", lambda: m.CrfRnn("3")),
            ("num_classes", lambda: m.CrfRnn(3.0)),
            ("theta_alpha", lambda: m.CrfRnn(3, theta_alpha=0)),
            ("theta_beta", lambda: m.CrfRnn(3, theta_beta=NAN)),
            ("theta_gamma", lambda: m.CrfRnn(3, theta_gamma="3")),
            ("iterations", lambda: m.CrfRnn(3, iterations=0)),
            ("iterations", lambda: m.CrfRnn(3, iterations=1.0)),
            ("logits", lambda: m.CrfRnn(3)(t(logits.astype(np.int32)), t(image))),
            ("logits", lambda: m.CrfRnn(3)(t(logits[0]), t(image))),
            ("logits", lambda: m.CrfRnn(2)(t(logits), t(image))),
            ("logits", lambda: m.CrfRnn(3)(t(np.full_like(logits, NAN)), t(image))),
            ("image", lambda: m.CrfRnn(3)(t(logits), t(image[..., :2]))),
            ("image", lambda: m.CrfRnn(3)(t(logits), t(image[0]))),
            ("image", lambda: m.CrfRnn(3)(t(logits), t(image[:, :1]))),
        ]
    if backend.name == "torch":
        faults += [
            ("x", lambda: m.upsample_bilinear(np.transpose(x, (0, 3, 1, 2)), 2)),
            ("values", lambda: m.permutohedral_filter(values.tolist(), t(features))),
            ("unary", lambda: m.dense_crf(np.zeros((1, 2, 2, 2), np.float32), t(image))),
            ("logits", lambda: m.CrfRnn(3)(np.moveaxis(logits, -1, 1), t(image))),
        ]
    return faults


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", ("numpy",) + FRAMEWORKS)
def test_exception_every_bad_upsample_lattice_metric_and_crfrnn_input_names_its_argument(profile, name):
    backend = Backend("numpy") if name == "numpy" else framework(name)
    faults = _other_faults(backend)

    def prop(which):
        argument, call = faults[which]
        with pytest.raises((TypeError, ValueError), match=named(argument)):
            call()

    check(profile, st.integers(0, len(faults) - 1), prop)
    for which in range(len(faults)):  # all of them, whatever the profile drew
        prop(which)


NATIVE_FAULTS = [
    ("features", lambda: native.Lattice(np.zeros(4, np.float32))),
    ("features", lambda: native.Lattice(np.zeros((4, 0), np.float32))),
    ("features", lambda: native.Lattice(np.zeros((0, 2), np.float32))),
    ("features", lambda: native.Lattice(np.zeros((4, 2), np.int32))),
    ("features", lambda: native.Lattice(np.full((4, 2), NAN, np.float32))),
    ("features", lambda: native.Lattice(np.full((4, 2), np.inf))),
    ("features", lambda: native.Lattice(np.zeros((4, 64), np.float32))),
    ("values", lambda: native.Lattice(np.zeros((4, 2), np.float32)).filter(np.zeros(4, np.float32))),
    ("values", lambda: native.Lattice(np.zeros((4, 2), np.float32)).filter(np.zeros((3, 1), np.float32))),
    ("values", lambda: native.Lattice(np.zeros((4, 2), np.float32)).filter(np.zeros((4, 1), np.int64))),
    ("factor", lambda: native.bilinear_kernel(0)),
    ("factor", lambda: native.bilinear_kernel("2")),
    ("count", lambda: native.threads(0).__enter__()),
    ("count", lambda: native.threads(1.5).__enter__()),
]


@needs_native
@pytest.mark.parametrize("profile", PROFILES)
def test_exception_every_bad_native_lattice_input_names_its_argument(profile):
    def prop(which):
        argument, call = NATIVE_FAULTS[which]
        with pytest.raises((TypeError, ValueError), match=named(argument)):
            call()

    check(profile, st.integers(0, len(NATIVE_FAULTS) - 1), prop)
    for which in range(len(NATIVE_FAULTS)):
        prop(which)


@needs_native
def test_exception_native_lattice_filter_of_a_python_list_names_values():
    """Found by these properties: Lattice.filter read `values.ndim` before converting, so a list
    raised AttributeError. A list of floats is now filtered; a list of ints is refused by name."""
    lattice = native.Lattice(np.zeros((4, 2), np.float32))
    assert lattice.filter([[1.0]] * 4).shape == (4, 1)
    with pytest.raises(TypeError, match="argument 'values'"):
        lattice.filter([[1]] * 4)


def _nan_inputs():
    """Entry points that took NaN silently (found by these properties): the lattice filter's values
    (one NaN reaches every point sharing a vertex) and upsample's x (NumPy spread a NaN over its
    kernel's zero taps, 36 outputs against torch's and TF's 25 for factor 3)."""
    cases = [("numpy", "permutohedral_filter values"), ("numpy", "upsample_bilinear x"), ("native", "Lattice.filter")]
    cases += [(name, what) for name in FRAMEWORKS for what in ("permutohedral_filter values", "upsample_bilinear x")]
    return cases


@pytest.mark.parametrize("name, what", _nan_inputs(), ids=lambda v: v.replace(" ", "-"))
@pytest.mark.parametrize("bad", [NAN, np.inf], ids=["nan", "inf"])
def test_exception_nan_values_are_rejected_naming_the_argument(name, what, bad):
    if name == "native" and not native.available():
        pytest.skip("impls._native is not built")
    values = np.full((4, 1), bad, np.float32)
    features = np.zeros((4, 2), np.float32)
    x = np.zeros((1, 2, 2, 1), np.float32)
    x[0, 1, 0, 0] = bad
    argument = "x" if what.startswith("upsample") else "values"
    with pytest.raises(ValueError, match=named(argument) + ".*finite"):
        if name == "native":
            native.Lattice(features).filter(values)
        else:
            backend = Backend(name) if name == "numpy" else framework(name)
            if what.startswith("upsample"):
                backend.module.upsample_bilinear(_as_backend(backend, x), 2)
            else:
                backend.module.permutohedral_filter(backend.tensor(values), backend.tensor(features))


@pytest.mark.parametrize("name", ["numpy", *FRAMEWORKS])
@pytest.mark.parametrize("bad", ["nan", "inf", "negative"])
@pytest.mark.parametrize("score", ["per_class_iou", "mean_iou", "pixel_accuracy", "frequency_weighted_iou"])
def test_exception_confusion_with_impossible_counts_names_confusion(name, bad, score):
    """Found by these properties: the scores took any square matrix (mean_iou(-ones((2, 2))) was
    0.333, per_class_iou([[-1, 2], [0, 1]]) had an IoU of -1.0)."""
    backend = Backend(name) if name == "numpy" else framework(name)
    confusion = np.array([[3.0, 1.0], [0.0, 2.0]])
    confusion[0, 1] = {"nan": NAN, "inf": np.inf, "negative": -1.0}[bad]
    with pytest.raises(ValueError, match="argument 'confusion' must hold finite non-negative counts"):
        getattr(backend.module, score)(backend.tensor(confusion))
