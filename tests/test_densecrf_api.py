"""impls.densecrf as a drop-in for pydensecrf: same recipe, same numbers, same API."""

import importlib

import numpy as np
import pytest

import impls.densecrf
import impls.densecrf.utils
from impls.testing import assert_close
from tests.inputs import CRF_EXAMPLES, crf_example, crf_image, example_recipe, smooth_unary

pydensecrf = pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (pydensecrf2) is the oracle")
pydensecrf_utils = importlib.import_module("pydensecrf.utils")

MIN_STORED_AGREEMENT = 0.995


@pytest.mark.parametrize("name", CRF_EXAMPLES)
def test_feature_example_recipe_reproduces_pydensecrf_stored_outputs(name):
    image, annotation, stored = crf_example(name)
    ours, our_divergences, _ = example_recipe(impls.densecrf, impls.densecrf.utils, image, annotation)
    agreement = np.mean(np.all(ours == stored, axis=-1))
    assert agreement >= MIN_STORED_AGREEMENT, f"{name}: {agreement:.4%} of pixels agree with out{name[-1]}.png"
    theirs, their_divergences, _ = example_recipe(pydensecrf, pydensecrf_utils, image, annotation)
    assert np.mean(np.all(ours == theirs, axis=-1)) >= 0.999
    # pydensecrf sums the pairwise part of its KL (about 1e6 here) in float32: ~2e-5 relative.
    assert_close(np.array(our_divergences), np.array(their_divergences), rtol=1e-4)


def _twin_crfs(image, unary, **pairwise):
    """The same DenseCRF2D set up in impls.densecrf and in pydensecrf."""
    height, width, labels = unary.shape
    crfs = []
    for module in (impls.densecrf, pydensecrf):
        crf = module.DenseCRF2D(width, height, labels)
        crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(-1, labels).T))
        crf.addPairwiseGaussian(sxy=pairwise.get("gaussian_sxy", 3), compat=pairwise.get("gaussian_compat", 3))
        crf.addPairwiseBilateral(sxy=pairwise.get("bilateral_sxy", 80), srgb=pairwise.get("srgb", 13), rgbim=image,
                                 compat=pairwise.get("bilateral_compat", 10))
        crfs.append(crf)
    return crfs


def test_feature_densecrf2d_inference_matches_pydensecrf():
    image = crf_example("im1")[0]
    unary = smooth_unary(*image.shape[:2], 21, seed=3)
    ours, theirs = _twin_crfs(image, unary, gaussian_sxy=(3, 4), srgb=(13, 12, 14))
    q_ours, q_theirs = ours.inference(5), np.array(theirs.inference(5))
    assert q_ours.shape == q_theirs.shape == (21, image.shape[0] * image.shape[1])
    assert q_ours.dtype == np.float32
    assert np.abs(q_ours - q_theirs).max() < 1e-5


def test_feature_stepping_updates_q_in_place_and_matches_inference():
    image = crf_example("im2")[0][:80, :100].copy()
    unary = smooth_unary(80, 100, 5, seed=4)
    ours, theirs = _twin_crfs(image, unary)
    q, tmp1, tmp2 = ours.startInference()
    their_q, their_tmp1, their_tmp2 = theirs.startInference()
    for _ in range(3):
        assert_close(ours.klDivergence(q), theirs.klDivergence(their_q), rtol=1e-4)  # float32 sums, as above
        before = q.copy()
        ours.stepInference(q, tmp1, tmp2)
        theirs.stepInference(their_q, their_tmp1, their_tmp2)
        assert not np.array_equal(before, q), "stepInference must update Q in place"
    assert_close(q, np.array(their_q), atol=1e-6)
    assert_close(q, ours.inference(3), atol=1e-6)


@pytest.mark.parametrize("helper, arguments", [
    ("unary_from_labels", (np.array([[0, 1, 2], [2, 1, 0]]), 2, 0.7, True)),
    ("unary_from_labels", (np.array([[0, 1, 2], [2, 1, 0]]), 3, 0.6, False)),
    ("unary_from_softmax", (np.random.default_rng(0).dirichlet(np.ones(4), size=(5, 6)).transpose(2, 0, 1),)),
    ("unary_from_softmax", (np.random.default_rng(1).dirichlet(np.ones(3), size=(4, 5)).transpose(2, 0, 1), 0.8)),
    ("create_pairwise_gaussian", ((3, 4), (5, 7))),
    ("create_pairwise_bilateral", ((80, 70), (13, 12, 11), np.random.default_rng(2).integers(0, 256, (5, 7, 3)), 2)),
])
def test_feature_utils_equal_pydensecrf_utils(helper, arguments):
    ours = getattr(impls.densecrf.utils, helper)(*arguments)
    theirs = getattr(pydensecrf_utils, helper)(*arguments)
    assert ours.dtype == theirs.dtype == np.float32
    assert_close(ours, theirs, rtol=0, atol=0)


def test_feature_public_names_cover_pydensecrf():
    for name in ("DenseCRF", "DenseCRF2D", "CONST_KERNEL", "DIAG_KERNEL", "FULL_KERNEL", "NO_NORMALIZATION",
                 "NORMALIZE_BEFORE", "NORMALIZE_AFTER", "NORMALIZE_SYMMETRIC"):
        assert hasattr(impls.densecrf, name)
        if name.isupper():
            assert getattr(impls.densecrf, name) == getattr(pydensecrf, name)
    for method in ("setUnaryEnergy", "addPairwiseEnergy", "addPairwiseGaussian", "addPairwiseBilateral",
                   "inference", "startInference", "stepInference", "klDivergence"):
        assert callable(getattr(impls.densecrf.DenseCRF2D, method))


def test_feature_engine_is_reported_and_can_be_forced(monkeypatch):
    name, reason = impls.densecrf.engine()
    assert name in impls.densecrf.ENGINES and reason
    monkeypatch.setenv("IMPLS_DENSECRF_ENGINE", "numpy")
    assert impls.densecrf.engine() == ("numpy", "chosen by IMPLS_DENSECRF_ENGINE")
    assert impls.densecrf.DenseCRF(10, 2).engine == "numpy"
    monkeypatch.setenv("IMPLS_DENSECRF_ENGINE", "cuda-magic")
    with pytest.raises(ValueError, match="IMPLS_DENSECRF_ENGINE must be one of"):
        impls.densecrf.DenseCRF(10, 2)


def test_exception_native_engine_that_cannot_load_fails_when_chosen_not_at_inference(monkeypatch):
    """Before: an unloadable extension was still reported as the native engine, and the CRF
    failed only at its first inference; now the automatic choice skips it, with the reason,
    and asking for it by name fails at once."""
    from impls import native

    monkeypatch.setattr(native, "_native", None)
    monkeypatch.setattr(native, "_import_error", ImportError("undefined symbol: simulated"))
    name, reason = impls.densecrf.engine()
    assert name != "native" and "native" in reason
    assert impls.densecrf.DenseCRF(10, 2).engine == name
    with pytest.raises(ImportError, match="cannot load impls._native.*simulated"):
        impls.densecrf.DenseCRF(10, 2, engine="native")
    monkeypatch.setenv("IMPLS_DENSECRF_ENGINE", "native")
    with pytest.raises(ImportError, match="cannot load impls._native"):
        impls.densecrf.DenseCRF(10, 2)


@pytest.mark.parametrize("engine", ["native", "numpy", "torch"])
def test_feature_every_engine_gives_the_same_q(engine, monkeypatch):
    if engine == "torch":
        pytest.importorskip("torch")
    if engine == "native":
        from impls import native

        if not native.available():
            pytest.skip("impls._native is not built")
    monkeypatch.setenv("IMPLS_DENSECRF_ENGINE", engine)
    image = crf_example("im3")[0][:64, :48].copy()
    ours, theirs = _twin_crfs(image, smooth_unary(64, 48, 4, seed=5))
    assert ours.engine == engine
    assert np.abs(ours.inference(5) - np.array(theirs.inference(5))).max() < 1e-5
    q, tmp1, tmp2 = ours.startInference()
    their_q, their_tmp1, their_tmp2 = theirs.startInference()
    ours.stepInference(q, tmp1, tmp2)
    theirs.stepInference(their_q, their_tmp1, their_tmp2)
    assert np.abs(q - np.array(their_q)).max() < 1e-5
    assert_close(ours.klDivergence(q), theirs.klDivergence(their_q), rtol=1e-4)


def test_exception_bad_api_use():
    crf = impls.densecrf.DenseCRF2D(4, 3, 2)
    with pytest.raises(RuntimeError, match="call setUnaryEnergy before inference"):
        crf.inference(1)
    with pytest.raises(ValueError, match=r"argument 'u' must have shape \(2, 12\)"):
        crf.setUnaryEnergy(np.zeros((2, 11), np.float32))
    with pytest.raises(TypeError, match="argument 'u' must be float32"):
        crf.setUnaryEnergy(np.zeros((2, 12)))
    with pytest.raises(ValueError, match="argument 'u' must be finite"):
        crf.setUnaryEnergy(np.full((2, 12), np.nan, np.float32))
    with pytest.raises(TypeError, match="argument 'rgbim' must be uint8"):
        crf.addPairwiseBilateral(sxy=3, srgb=3, rgbim=np.zeros((3, 4, 3), np.float32), compat=1)
    with pytest.raises(ValueError, match=r"argument 'rgbim' must have shape \(3, 4, 3\)"):
        crf.addPairwiseBilateral(sxy=3, srgb=3, rgbim=np.zeros((4, 3, 3), np.uint8), compat=1)
    with pytest.raises(ValueError, match="argument 'sxy' must be a positive number"):
        crf.addPairwiseGaussian(sxy=0, compat=3)
    with pytest.raises(ValueError, match=r"argument 'compat' must be a number, a \(2,\) vector or a \(2, 2\) matrix"):
        crf.addPairwiseGaussian(sxy=3, compat=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="argument 'nlabels' must be at least 2"):
        impls.densecrf.DenseCRF(10, 1)
    with pytest.raises(NotImplementedError, match="LogisticUnary"):
        crf.setUnaryEnergy(np.zeros((2, 12), np.float32), np.zeros((1, 12), np.float32))


def test_feature_float64_compat_is_accepted_and_equals_float32():
    """pydensecrf's test_compact_wrong expects ValueError for a float64 compat vector; the
    drop-in accepts it on purpose (README, module docstring): same Q as float32."""
    image = crf_image("im1")[:20, :24].copy()
    unary = np.ascontiguousarray(smooth_unary(20, 24, 3, seed=3).reshape(-1, 3).T)
    results = []
    for dtype in (np.float32, np.float64):
        crf = impls.densecrf.DenseCRF2D(24, 20, 3)
        crf.setUnaryEnergy(unary)
        crf.addPairwiseGaussian(sxy=3, compat=np.array([3, 2, 1], dtype))
        crf.addPairwiseBilateral(sxy=20, srgb=13, rgbim=image, compat=np.eye(3, dtype=dtype) * 4)
        results.append(np.array(crf.inference(3)))
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize("compat, error, match", [
    (np.array([1.0, np.nan, 2.0]), ValueError, "argument 'compat' must be finite"),
    (np.array(["a", "b", "c"]), TypeError, "argument 'compat' must be a real number or array"),
])
def test_exception_bad_compat_is_refused(compat, error, match):
    crf = impls.densecrf.DenseCRF(10, 3)
    with pytest.raises(error, match=match):
        crf.addPairwiseEnergy(np.zeros((2, 10), np.float32), compat=compat)


@pytest.mark.parametrize("arguments, error", [
    (("10", 2), TypeError), ((10.0, 2), TypeError), ((True, 2), TypeError),
    ((0, 2), ValueError), ((10, -1), ValueError),
])
def test_exception_sizes_raise_the_harness_types(arguments, error):
    """The same fault gets the same exception type as in every other entry point (impls._checks):
    TypeError for a non-integer, ValueError for a non-positive one."""
    with pytest.raises(error, match="DenseCRF: argument '(nvar|nlabels)' must be a positive integer"):
        impls.densecrf.DenseCRF(*arguments)


def test_exception_iterations_type_and_value():
    crf = impls.densecrf.DenseCRF(10, 2)
    crf.setUnaryEnergy(np.zeros((2, 10), np.float32))
    with pytest.raises(TypeError, match="argument 'niter' must be a non-negative integer"):
        crf.inference(1.5)
    with pytest.raises(ValueError, match="argument 'niter' must be a non-negative integer"):
        crf.inference(-1)
