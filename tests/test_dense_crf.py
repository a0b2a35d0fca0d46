"""Dense CRF: every backend against pydensecrf on real images, for pydensecrf's own
parameters and DeepLab's, 1/5/10 iterations, each normalisation and compatibility form; and
properties (hypothesis, tests/strategies.py) of every backend and engine against the NumPy
framework engine on random small inputs."""

import functools

import numpy as np
import pytest
from hypothesis import strategies as st

from impls import native
from impls.testing import assert_close
from tests.inputs import CRF_EXAMPLES, SKIMAGE_IMAGES, crf_image, smooth_unary
from tests.strategies import (
    FRAMEWORKS,
    PROFILES,
    SEEDS,
    THREAD_COUNTS,
    check,
    crf_cases,
    framework,
    lay_out,
    rng_of,
    to_backend,
)

dcrf = pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (pydensecrf2) is the oracle of these tests")

LABELS = 21
ITERATIONS = (1, 5, 10)
IMAGES = CRF_EXAMPLES + SKIMAGE_IMAGES
PARAMETERS = {
    "seed": dict(gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13, bilateral_compat=10),
    "deeplab": dict(gaussian_sxy=1, gaussian_compat=4, bilateral_sxy=49, bilateral_srgb=13, bilateral_compat=5),
}
PYDENSECRF_NORMALIZATION = {"symmetric": dcrf.NORMALIZE_SYMMETRIC, "before": dcrf.NORMALIZE_BEFORE,
                            "after": dcrf.NORMALIZE_AFTER, "none": dcrf.NO_NORMALIZATION}
MIN_LABEL_AGREEMENT = 0.999
MAX_Q_DIFFERENCE = 1e-3
# Without normalisation the kernel sums reach thousands and so do the logits: float32
# rounding then decides near-ties. Measured on im2 and chelsea (5 iterations, the three
# compat forms): pydensecrf moves Q by 3e-5 to 6.4e-3 when one compat changes by one
# float32 ulp; the NumPy, torch and TF backends differ from it by 3e-4 to 2.3e-2, with
# every label agreeing. 1e-3 is below that problem's own conditioning.
MAX_Q_DIFFERENCE_UNNORMALIZED = 5e-2


@functools.cache
def crf_input(name):
    """(image (H, W, 3) uint8, unary (H, W, L) float32); skimage images at half size to keep CI short."""
    image = crf_image(name, scale=1.0 if name in CRF_EXAMPLES else 0.5)
    return image, smooth_unary(*image.shape[:2], LABELS, seed=len(name))


def compat_forms(labels):
    """The three compatibility forms of pydensecrf: Potts, diagonal, (symmetric) matrix."""
    rng = np.random.default_rng(7)
    noise = rng.random((labels, labels)).astype(np.float32)
    symmetric = (noise + noise.T) / 2
    return {
        "potts": (3.0, 10.0),
        "diagonal": (-np.linspace(2, 4, labels, dtype=np.float32), -np.linspace(8, 12, labels, dtype=np.float32)),
        "matrix": (-3 * np.eye(labels, dtype=np.float32) + 0.3 * symmetric,
                   -10 * np.eye(labels, dtype=np.float32) + symmetric),
    }


def pydensecrf_marginals(image, unary, iterations, *, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
                         bilateral_compat, normalization="symmetric"):
    """{iterations: Q (H, W, L)} from one pydensecrf run, stepping through the iterations."""
    height, width, labels = unary.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(-1, labels).T))
    mode = PYDENSECRF_NORMALIZATION[normalization]
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=_pydensecrf_compat(gaussian_compat), normalization=mode)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=image,
                             compat=_pydensecrf_compat(bilateral_compat), normalization=mode)
    q, tmp1, tmp2 = crf.startInference()
    marginals = {}
    for step in range(1, max(iterations) + 1):
        crf.stepInference(q, tmp1, tmp2)
        if step in iterations:
            marginals[step] = np.array(q).T.reshape(height, width, labels)
    return marginals


def _pydensecrf_compat(compat):
    return float(compat) if np.ndim(compat) == 0 else np.ascontiguousarray(compat, np.float32)


@pytest.fixture(params=["framework", "native"])
def engine(request):
    """The framework's own ops, or the native C++ lattice (skipped where it is not built)."""
    from impls import native

    if request.param == "native" and not native.available():
        pytest.skip("impls._native is not built")
    return request.param


def run_backend(backend, image, unary, **options):
    q = backend.module.dense_crf(backend.from_nhwc(unary[None]), backend.from_nhwc(image[None]), **options)
    return backend.to_nhwc(q)[0]


def assert_matches_pydensecrf(ours, theirs, *, max_difference=MAX_Q_DIFFERENCE, what=""):
    agreement = np.mean(ours.argmax(-1) == theirs.argmax(-1))
    difference = np.abs(ours.astype(np.float64) - theirs).max()
    assert agreement >= MIN_LABEL_AGREEMENT, f"{what}: label agreement {agreement:.5f} < {MIN_LABEL_AGREEMENT}"
    assert difference <= max_difference, f"{what}: max |Q difference| {difference:.2e} > {max_difference:.0e}"


@pytest.mark.parametrize("parameters", PARAMETERS)
@pytest.mark.parametrize("name", IMAGES)
def test_feature_matches_pydensecrf_on_real_images(backend, engine, name, parameters):
    image, unary = crf_input(name)
    theirs = pydensecrf_marginals(image, unary, ITERATIONS, **PARAMETERS[parameters])
    for iterations in ITERATIONS:
        ours = run_backend(backend, image, unary, iterations=iterations, engine=engine, **PARAMETERS[parameters])
        assert_matches_pydensecrf(ours, theirs[iterations], what=f"{backend} {name} {parameters} {iterations} it")


@pytest.mark.parametrize("form", ["potts", "diagonal", "matrix"])
@pytest.mark.parametrize("normalization", ["symmetric", "before", "after", "none"])
@pytest.mark.parametrize("name", ["im2", "chelsea"])
def test_feature_matches_pydensecrf_for_every_normalization_and_compat(backend, engine, name, normalization, form):
    """The normalised modes meet 1e-3; "none" is held to MAX_Q_DIFFERENCE_UNNORMALIZED
    (see its comment: float32 rounding alone moves Q that much there)."""
    image, unary = crf_input(name)
    gaussian_compat, bilateral_compat = compat_forms(LABELS)[form]
    options = dict(PARAMETERS["seed"], gaussian_compat=gaussian_compat, bilateral_compat=bilateral_compat,
                   normalization=normalization, engine=engine)
    theirs = pydensecrf_marginals(image, unary, (5,), **{k: v for k, v in options.items() if k != "engine"})[5]
    max_difference = MAX_Q_DIFFERENCE_UNNORMALIZED if normalization == "none" else MAX_Q_DIFFERENCE
    ours = run_backend(backend, image, unary, iterations=5, **options)
    what = f"{backend} {engine} {name} {normalization} {form}"
    assert_matches_pydensecrf(ours, theirs, max_difference=max_difference, what=what)


def test_feature_backends_agree_with_each_other(rng):
    """NumPy, torch and TF compute the same function to float32 tolerance (same algorithm, same order)."""
    from impls.testing import Backend

    image, unary = crf_input("im3")
    results = {}
    for name in ("numpy", "torch", "tf"):
        pytest.importorskip({"numpy": "numpy", "torch": "torch", "tf": "tensorflow"}[name])
        results[name] = run_backend(Backend(name), image, unary, iterations=5, engine="framework")
    assert_close(results["torch"], results["numpy"], msg="torch vs numpy")
    assert_close(results["tf"], results["numpy"], msg="tf vs numpy")


def test_smoke_tf_dense_crf_inside_tf_function_with_unknown_size():
    tf = pytest.importorskip("tensorflow")
    import impls.tf

    image, unary = crf_input("im1")
    image, unary = image[None, :50, :70].copy(), unary[None, :50, :70].copy()
    graph = tf.function(lambda u, i: impls.tf.dense_crf(u, i, iterations=3), input_signature=[
        tf.TensorSpec([None, None, None, LABELS], tf.float32), tf.TensorSpec([None, None, None, 3], tf.uint8)])
    assert_close(graph(unary, image), impls.tf.dense_crf(unary, image, iterations=3))


def test_feature_batch_images_each_get_their_own_crf(backend):
    first, second = crf_input("im1"), crf_input("im2")
    height, width = 96, 128  # a common crop of both
    images = np.stack([first[0][:height, :width], second[0][:height, :width]])
    unaries = np.stack([first[1][:height, :width], second[1][:height, :width]])
    batched = backend.to_nhwc(backend.module.dense_crf(backend.from_nhwc(unaries), backend.from_nhwc(images)))
    for n in range(2):
        alone = run_backend(backend, images[n], unaries[n])
        assert_close(batched[n], alone, atol=1e-6, msg=f"image {n} of the batch")


def test_feature_probabilities_sum_to_one_and_inputs_are_untouched(backend, dtype):
    image, unary = crf_input("im1")
    image, unary = image[:40, :50].copy(), unary[:40, :50].astype(dtype)
    native_unary, native_image = backend.from_nhwc(unary[None]), backend.from_nhwc(image[None])
    q = backend.to_nhwc(backend.module.dense_crf(native_unary, native_image, iterations=3))
    assert q.dtype == dtype
    assert_close(q.sum(axis=-1), np.ones(q.shape[:-1], dtype))
    assert np.array_equal(backend.to_nhwc(native_unary)[0], unary)
    assert np.array_equal(backend.to_nhwc(native_image)[0], image)


def test_feature_float64_matches_float32_run(backend):
    """The float64 path is the same computation with less rounding."""
    image, unary = crf_input("im1")
    image, unary = image[:60, :80].copy(), unary[:60, :80]
    single = run_backend(backend, image, unary, iterations=5)
    double = run_backend(backend, image, unary.astype(np.float64), iterations=5)
    assert_close(single, double.astype(np.float32), atol=1e-4)


def test_gradcheck_torch_dense_crf_is_differentiable_in_the_unary():
    torch = pytest.importorskip("torch")
    import impls.torch

    image, unary = crf_input("im1")
    unary = torch.from_numpy(unary[:6, :7].astype(np.float64)).permute(2, 0, 1)[None, :4].contiguous()
    image = torch.from_numpy(image[:6, :7].copy()).permute(2, 0, 1)[None]
    unary.requires_grad_(True)

    def crf(u):
        return impls.torch.dense_crf(u, image, iterations=2, gaussian_compat=0.3, bilateral_compat=0.5)

    assert torch.autograd.gradcheck(crf, (unary,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("change, error, match", [
    (dict(unary=np.zeros((1, 4, 5), np.float32)), ValueError, "argument 'unary' must be a 4-D"),
    (dict(unary=np.zeros((1, 4, 5, 3), np.int32)), TypeError, "argument 'unary' must have a floating dtype"),
    (dict(unary=np.zeros((1, 4, 5, 1), np.float32)), ValueError, "argument 'unary' must have at least 2 labels"),
    (dict(unary=np.full((1, 4, 5, 3), np.nan, np.float32)), ValueError, "argument 'unary' must be finite"),
    (dict(unary=np.full((1, 4, 5, 3), np.inf, np.float32)), ValueError, "argument 'unary' must be finite"),
    (dict(image=np.zeros((1, 4, 6, 3), np.uint8)), ValueError, r"argument 'image' must have the unary's \(N, H, W\)"),
    (dict(image=np.zeros((1, 4, 5, 3), np.float32)), TypeError, "argument 'image' must be uint8"),
    (dict(image=np.zeros((1, 4, 5, 4), np.uint8)), ValueError, "argument 'image' must have 3 colour channels"),
    (dict(gaussian_sxy=0), ValueError, "argument 'gaussian_sxy' must be a positive number"),
    (dict(bilateral_sxy=-5), ValueError, "argument 'bilateral_sxy' must be a positive number"),
    (dict(bilateral_srgb=0.0), ValueError, "argument 'bilateral_srgb' must be a positive number"),
    (dict(bilateral_srgb="13"), TypeError, "argument 'bilateral_srgb' must be a positive number"),
    (dict(iterations=0), ValueError, "argument 'iterations' must be a positive integer"),
    (dict(iterations=-1), ValueError, "argument 'iterations' must be a positive integer"),
    (dict(iterations=2.5), TypeError, "argument 'iterations' must be a positive integer"),
    (dict(gaussian_compat=np.ones(4)), ValueError, r"argument 'gaussian_compat' must be a number, a \(3,\) vector"),
    (dict(normalization="sym"), ValueError, "argument 'normalization' must be one of"),
])
def test_exception_bad_arguments(backend, change, error, match):
    arguments = dict(unary=np.zeros((1, 4, 5, 3), np.float32), image=np.zeros((1, 4, 5, 3), np.uint8))
    arguments.update(change)
    unary, image = arguments.pop("unary"), arguments.pop("image")
    unary_copy = unary.copy()
    with pytest.raises(error, match=match):
        backend.module.dense_crf(_native(backend, unary), _native(backend, image), **arguments)
    np.testing.assert_array_equal(unary, unary_copy)


def _native(backend, array):
    """NHWC test arrays in the backend's layout; arrays of another rank pass through as tensors."""
    if array.ndim == 4:
        return backend.from_nhwc(array)
    if backend.name == "torch":
        import torch

        return torch.from_numpy(array)
    return array


# --- properties (hypothesis; tests/strategies.py): the NumPy framework engine is the oracle ---------------

def _distribution(q):
    assert np.isfinite(q).all() and (q >= 0).all()
    assert_close(q.sum(-1), np.ones(q.shape[:-1]), rtol=0, atol=1e-5 if q.dtype == np.float32 else 1e-12)


def _crf_tolerance(dtype):
    return 1e-4 if np.dtype(dtype) == np.float32 else 1e-9


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


@pytest.mark.skipif(not native.available(), reason="impls._native is not built")
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

    check(profile, st.tuples(crf_cases(dtypes=st.just(np.float32)), THREAD_COUNTS), prop)


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
