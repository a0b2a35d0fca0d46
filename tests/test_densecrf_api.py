"""impls.densecrf as a drop-in for pydensecrf: same recipe, same numbers, same API."""

import enum
import importlib
import importlib.resources
import inspect
import logging
import shutil
import sys

import numpy as np
import pytest

import impls.densecrf
import impls.densecrf.eigen
import impls.densecrf.utils
from impls.testing import assert_close
from tests.inputs import CRF_EXAMPLES, crf_example, crf_image, example_recipe, smooth_unary

pydensecrf = pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (pydensecrf2) is the oracle")
pydensecrf_utils = importlib.import_module("pydensecrf.utils")
pydensecrf_eigen = importlib.import_module("pydensecrf.eigen")

# Each pydensecrf module and the drop-in module that stands for it.
DROP_IN_MODULES = [(pydensecrf, impls.densecrf), (pydensecrf_utils, impls.densecrf.utils),
                   (pydensecrf_eigen, impls.densecrf.eigen)]

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


def _own_public_names(module) -> dict:
    """The public names `module` defines itself: modules and objects it imports from elsewhere
    (numbers.Number, np, logging.warning) are left out, recognised as the attribute of the same
    name of the module they say they come from. Cython 3 enums name no real module of theirs, so
    they stay in."""
    names = {}
    for name in dir(module):
        value = getattr(module, name)
        if name.startswith("_") or inspect.ismodule(value):
            continue
        home = sys.modules.get(getattr(value, "__module__", None) or "")
        if home is not None and not home.__name__.startswith("pydensecrf") and getattr(home, name, None) is value:
            continue
        names[name] = value
    return names


@pytest.mark.parametrize("theirs, ours", DROP_IN_MODULES, ids=lambda module: module.__name__)
def test_feature_public_names_cover_pydensecrf(theirs, ours):
    their_names = _own_public_names(theirs)
    assert their_names, f"no public names found in {theirs.__name__}: the filter is broken"
    missing = []
    for name, their_value in their_names.items():
        if not hasattr(ours, name):
            missing.append(f"{ours.__name__}.{name}")
        elif inspect.isclass(their_value):
            missing += [f"{ours.__name__}.{name}.{attribute}" for attribute in dir(their_value)
                        if not attribute.startswith("_") and not hasattr(getattr(ours, name), attribute)]
    assert not missing, f"the drop-in lacks pydensecrf's {missing}"


def test_feature_enums_and_constants_are_pydensecrfs():
    enum_types = 0
    for name, their_value in _own_public_names(pydensecrf).items():
        ours = getattr(impls.densecrf, name)
        if isinstance(their_value, enum.EnumMeta):
            enum_types += 1
            assert issubclass(ours, enum.IntEnum) and issubclass(their_value, enum.IntEnum)
            assert {m.name: m.value for m in ours} == {m.name: m.value for m in their_value}, name
        elif isinstance(their_value, enum.Enum):  # a module-level constant is its enum's member
            assert ours is getattr(impls.densecrf, type(their_value).__name__)[their_value.name]
            assert ours == their_value and type(ours).__name__ == type(their_value).__name__
    assert enum_types == 2  # KernelType, NormalizationType


@pytest.mark.parametrize("helper, arguments, replacement", [
    ("compute_unary", (np.array([[0, 1, 2], [3, 1, 0]]), 3), "unary_from_labels"),
    ("compute_unary", (np.array([[0, 1, 2], [2, 1, 0]]), 2, 0.8), "unary_from_labels"),
    ("softmax_to_unary", (np.array([[[1.0, 0.2], [0.0, 0.5]], [[0.0, 0.8], [1.0, 0.5]]]),), "unary_from_softmax"),
    ("softmax_to_unary", (np.random.default_rng(1).dirichlet(np.ones(3), size=(4, 5)).transpose(2, 0, 1), 0.7),
     "unary_from_softmax"),
])
def test_feature_deprecated_utils_log_a_warning_and_equal_pydensecrf(helper, arguments, replacement, caplog):
    # softmax_to_unary does not clip, so a zero probability takes log(0) = -inf, in both.
    with np.errstate(divide="ignore"), caplog.at_level(logging.WARNING):
        ours = getattr(impls.densecrf.utils, helper)(*arguments)
        our_records = [(record.levelno, record.getMessage()) for record in caplog.records]
        caplog.clear()
        theirs = getattr(pydensecrf_utils, helper)(*arguments)
        their_records = [(record.levelno, record.getMessage()) for record in caplog.records]
    message = f"pydensecrf.{helper} is deprecated, use {replacement} instead."
    assert our_records == their_records == [(logging.WARNING, message)]
    assert ours.dtype == theirs.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    if helper == "softmax_to_unary" and len(arguments) == 1:
        assert np.isinf(ours).sum() == 2


# (engine, backend): the native engine, and the framework engine on each backend it takes.
ENGINES = [("native", None), ("framework", "numpy"), ("framework", "torch")]


def _use_engine(engine, backend, monkeypatch):
    if backend == "torch":
        pytest.importorskip("torch")
    if engine == "native":
        from impls import native

        if not native.available():
            pytest.skip("impls._native is not built")
    monkeypatch.setenv("IMPLS_DENSECRF_ENGINE", engine)
    if backend:
        monkeypatch.setenv("IMPLS_DENSECRF_BACKEND", backend)


def _small_q(module, image, set_unary, labels=3, iterations=3):
    """Q of a DenseCRF2D on `image` whose unary `set_unary(module, crf)` sets."""
    crf = module.DenseCRF2D(image.shape[1], image.shape[0], labels)
    set_unary(module, crf)
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=5, srgb=13, rgbim=image, compat=10)
    return np.array(crf.inference(iterations))


@pytest.mark.parametrize(("engine", "framework_backend"), ENGINES)
def test_feature_unary_objects_and_logistic_unary_match_pydensecrf(engine, framework_backend, monkeypatch):
    _use_engine(engine, framework_backend, monkeypatch)
    image = crf_image("im1")[100:105, 150:154].copy()  # 5 x 4 pixels
    nvar, labels, features = 20, 3, 2
    rng = np.random.default_rng(7)
    u = rng.uniform(0.1, 3.0, (labels, nvar)).astype(np.float32)
    weights = rng.standard_normal((labels, features)).astype(np.float32)
    feature_map = rng.standard_normal((features, nvar)).astype(np.float32)
    square = rng.uniform(0.0, 0.2, (nvar, nvar)).astype(np.float32)

    def both(set_unary):
        return _small_q(impls.densecrf, image, set_unary), _small_q(pydensecrf, image, set_unary)

    by_energy, their_by_energy = both(lambda module, crf: crf.setUnaryEnergy(u))
    by_const, their_by_const = both(lambda module, crf: crf.setUnary(module.ConstUnary(u)))
    np.testing.assert_array_equal(by_const, by_energy)
    assert_close(by_const, their_by_const, rtol=0, atol=1e-5)
    assert_close(their_by_const, their_by_energy, rtol=0, atol=0)
    logistic, their_logistic = both(lambda module, crf: crf.setUnary(module.LogisticUnary(weights, feature_map)))
    assert_close(logistic, their_logistic, rtol=0, atol=1e-5)
    by_product, their_by_product = both(lambda module, crf: crf.setUnaryEnergy(u, square))
    assert_close(by_product, their_by_product, rtol=0, atol=1e-5)
    assert_close(by_product, _small_q(impls.densecrf, image, lambda module, crf: crf.setUnaryEnergy(u @ square)),
                 rtol=0, atol=1e-6)
    # pydensecrf's setUnary consumes the object; here one can serve several CRFs.
    shared = impls.densecrf.ConstUnary(u)
    first, second = (_small_q(impls.densecrf, image, lambda module, crf: crf.setUnary(shared)) for _ in range(2))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("call, error, match", [
    (lambda dcrf, crf, u: dcrf.ConstUnary(u.astype(np.float64)), TypeError,
     "ConstUnary: argument 'u' must be float32"),
    (lambda dcrf, crf, u: dcrf.ConstUnary(u[0]), ValueError, r"ConstUnary: argument 'u' must have shape \(\?, \?\)"),
    (lambda dcrf, crf, u: dcrf.LogisticUnary(u[:, :2].astype(np.float64), u[:2]), TypeError,
     "LogisticUnary: argument 'L' must be float32"),
    (lambda dcrf, crf, u: dcrf.LogisticUnary(u[:, :2].copy(), u), ValueError,
     r"LogisticUnary: argument 'f' must have shape \(2, \?\), got \(3, 20\)"),
    (lambda dcrf, crf, u: dcrf.LogisticUnary(u[:, :2].copy(), np.full((2, 20), np.nan, np.float32)), ValueError,
     "LogisticUnary: argument 'f' must be finite"),
    (lambda dcrf, crf, u: crf.setUnary(u), TypeError,
     "setUnary: argument 'u' must be a ConstUnary or LogisticUnary, got ndarray"),
    (lambda dcrf, crf, u: crf.setUnary(dcrf.Unary()), TypeError, "got a bare Unary"),
    (lambda dcrf, crf, u: crf.setUnary(dcrf.ConstUnary(u[:, :19])), ValueError,
     r"setUnary: argument 'u' must give an energy of shape \(3, 20\), got \(3, 19\) from ConstUnary"),
    (lambda dcrf, crf, u: crf.setUnary(dcrf.ConstUnary(np.full_like(u, np.nan))), ValueError,
     "setUnary: the energy of argument 'u' must be finite"),
    (lambda dcrf, crf, u: crf.setUnary(dcrf.LogisticUnary(u, np.full((20, 20), np.inf, np.float32))), ValueError,
     "LogisticUnary: argument 'f' must be finite"),
    (lambda dcrf, crf, u: crf.setUnaryEnergy(u, np.eye(20)), TypeError,
     "setUnaryEnergy: argument 'f' must be float32"),
    (lambda dcrf, crf, u: crf.setUnaryEnergy(u[:, :19].copy(), np.eye(19, dtype=np.float32)), ValueError,
     r"setUnaryEnergy: argument 'u' must have shape \(3, 20\), got \(3, 19\)"),
    (lambda dcrf, crf, u: crf.setUnaryEnergy(u, np.eye(20, 3, dtype=np.float32)), ValueError,
     r"setUnaryEnergy: argument 'f' must have shape \(20, 20\), got \(20, 3\)"),
    (lambda dcrf, crf, u: crf.setUnaryEnergy(u, np.full((20, 20), 1e38, np.float32)), ValueError,
     r"setUnaryEnergy: the energy u @ f must be finite"),
])
def test_exception_unary_objects_and_logistic_unary_name_the_argument(call, error, match):
    crf = impls.densecrf.DenseCRF2D(4, 5, 3)
    u = np.ones((3, 20), np.float32)
    with pytest.raises(error, match=match):
        call(impls.densecrf, crf, u)


def test_feature_eigen_round_trips_and_empty_constructors_as_pydensecrf():
    matrix = np.arange(6, dtype=np.float32).reshape(2, 3)
    vector = np.array([0.5, -1.0, 3.0], np.float32)
    for eigen in (impls.densecrf.eigen, pydensecrf_eigen):
        np.testing.assert_array_equal(np.array(eigen.matrixXf(matrix)), matrix)
        np.testing.assert_array_equal(np.array(eigen.vectorXf(vector)), vector)
        assert np.array(eigen.MatrixXf()).shape == (0, 0) and np.array(eigen.VectorXf()).shape == (0,)
        assert np.array(eigen.MatrixXf()).dtype == np.array(eigen.VectorXf()).dtype == np.float32
        assert memoryview(eigen.matrixXf(matrix)).shape == (2, 3)
    ours = impls.densecrf.eigen.matrixXf(matrix)
    assert isinstance(ours, impls.densecrf.eigen.MatrixXf)
    matrix[0, 0] = 42  # matrixXf copied it
    assert ours[0, 0] == 0
    assert type(ours * 2) is np.ndarray  # arithmetic gives plain arrays, as NumPy on pydensecrf's
    from impls.densecrf import eigen

    assert eigen is impls.densecrf.eigen is importlib.import_module("impls.densecrf.eigen")


@pytest.mark.parametrize("function, value, error, match, their_error", [
    ("matrixXf", np.zeros((2, 2)), TypeError, "matrixXf: argument 'arr' must be a float32 array.*got float64",
     ValueError),
    ("vectorXf", np.zeros(3, np.int32), TypeError, "vectorXf: argument 'arr' must be a float32 array.*got int32",
     ValueError),
    ("matrixXf", np.zeros(3, np.float32), ValueError, r"matrixXf: argument 'arr' must be 2-D, got shape \(3,\)",
     ValueError),
    ("vectorXf", np.zeros((1, 3), np.float32), ValueError, r"vectorXf: argument 'arr' must be 1-D", ValueError),
    ("matrixXf", None, TypeError, "matrixXf: argument 'arr' must be a float32 array", TypeError),
])
def test_exception_eigen_refuses_what_pydensecrf_refuses(function, value, error, match, their_error):
    """pydensecrf's messages are Cython's buffer checks; a dtype is refused here with the harness's
    TypeError (impls._checks), where pydensecrf raises ValueError."""
    with pytest.raises(their_error):
        getattr(pydensecrf_eigen, function)(value)
    with pytest.raises(error, match=match):
        getattr(impls.densecrf.eigen, function)(value)


@pytest.mark.parametrize(("engine", "framework_backend"), ENGINES)
def test_feature_eigen_compat_and_q_work_as_in_pydensecrf(engine, framework_backend, monkeypatch):
    _use_engine(engine, framework_backend, monkeypatch)
    image = crf_image("im2")[:20, :24].copy()
    unary = np.ascontiguousarray(smooth_unary(20, 24, 3, seed=8).reshape(-1, 3).T)
    compat_matrix = np.array([[0, 2, 4], [2, 0, 1], [4, 1, 0]], np.float32)
    results = []
    for dcrf, utils, eigen in ((impls.densecrf, impls.densecrf.utils, impls.densecrf.eigen),
                               (pydensecrf, pydensecrf_utils, pydensecrf_eigen)):
        crf = dcrf.DenseCRF(20 * 24, 3)
        crf.setUnaryEnergy(unary)
        crf.addPairwiseEnergy(utils.create_pairwise_gaussian((3, 3), (20, 24)),
                              compat=eigen.vectorXf(np.array([3, 2, 1], np.float32)))
        # pydensecrf's MatrixXf is column-major, which its own compat check refuses: it takes a
        # matrix compat as a C-ordered float32 array only, and ours as either.
        crf.addPairwiseEnergy(utils.create_pairwise_bilateral((10, 10), (13, 13, 13), image, chdim=2),
                              compat=eigen.matrixXf(compat_matrix) if dcrf is impls.densecrf else compat_matrix,
                              kernel=dcrf.FULL_KERNEL, normalization=dcrf.NORMALIZE_BEFORE)
        q = eigen.matrixXf(np.ascontiguousarray(crf.startInference()[0]))  # Q as a user-made eigen matrix
        divergences = []
        for _ in range(3):
            divergences.append(crf.klDivergence(q))
            crf.stepInference(q, eigen.MatrixXf(), eigen.MatrixXf())
        results.append((np.array(q), divergences, np.array(crf.inference(3))))
    (stepped, divergences, inferred), (their_stepped, their_divergences, their_inferred) = results
    assert_close(stepped, their_stepped, rtol=0, atol=1e-5)
    assert_close(inferred, their_inferred, rtol=0, atol=1e-5)
    assert_close(stepped, inferred, rtol=0, atol=1e-6)  # stepInference updated the MatrixXf in place
    assert_close(np.array(divergences), np.array(their_divergences), rtol=1e-4)


# A user's pydensecrf script, after pydensecrf's examples/inference.py; the test runs it as it is
# and with only its import lines changed to impls.densecrf.
USER_SCRIPT = """
import numpy as np
from skimage.io import imread

import pydensecrf.densecrf as dcrf
from pydensecrf import eigen
from pydensecrf.utils import compute_unary, create_pairwise_bilateral, create_pairwise_gaussian, unary_from_labels

img = np.ascontiguousarray(imread("im3.png")[:, :, :3])
anno_rgb = imread("anno3.png")[:, :, :3].astype(np.uint32)
anno_lbl = anno_rgb[:, :, 0] + (anno_rgb[:, :, 1] << 8) + (anno_rgb[:, :, 2] << 16)
colors, labels = np.unique(anno_lbl, return_inverse=True)
labels = labels.reshape(anno_lbl.shape)
HAS_UNK = 0 in colors
n_labels = len(set(labels.flat)) - int(HAS_UNK)

d = dcrf.DenseCRF2D(img.shape[1], img.shape[0], n_labels)
d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=0.7, zero_unsure=HAS_UNK))
d.addPairwiseGaussian(sxy=(3, 3), compat=3, kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
d.addPairwiseBilateral(sxy=(80, 80), srgb=(13, 13, 13), rgbim=img, compat=10,
                       kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
Q, tmp1, tmp2 = d.startInference()
kl = []
for i in range(5):
    kl.append(d.klDivergence(Q))
    d.stepInference(Q, tmp1, tmp2)
stepped = np.array(Q)
MAP = np.argmax(np.array(d.inference(5)), axis=0).reshape(img.shape[:2])

d = dcrf.DenseCRF(img.shape[0] * img.shape[1], n_labels)
d.setUnary(dcrf.ConstUnary(compute_unary(labels, n_labels, GT_PROB=0.6)))
d.addPairwiseEnergy(create_pairwise_gaussian(sdims=(3, 3), shape=img.shape[:2]),
                    compat=eigen.vectorXf(np.full(n_labels, 3, np.float32)))
d.addPairwiseEnergy(create_pairwise_bilateral(sdims=(60, 60), schan=(10, 10, 10), img=img, chdim=2),
                    compat=10.0, kernel=dcrf.FULL_KERNEL, normalization=dcrf.NORMALIZE_AFTER)
generic = np.array(d.inference(3))
"""
DROP_IN_IMPORTS = {
    "import pydensecrf.densecrf as dcrf": "import impls.densecrf as dcrf",
    "from pydensecrf import eigen": "from impls.densecrf import eigen",
    "from pydensecrf.utils import": "from impls.densecrf.utils import",
}


def test_smoke_users_pydensecrf_script_runs_unchanged_but_its_imports(tmp_path, monkeypatch):
    examples = importlib.resources.files("impls") / "data" / "pydensecrf-examples"
    for name in ("im3.png", "anno3.png"):
        with importlib.resources.as_file(examples / name) as path:
            shutil.copy(path, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    drop_in_script = USER_SCRIPT
    for theirs, ours in DROP_IN_IMPORTS.items():
        assert drop_in_script.count(theirs) == 1
        drop_in_script = drop_in_script.replace(theirs, ours)
    assert "pydensecrf" not in drop_in_script
    theirs, ours = {"__name__": "__main__"}, {"__name__": "__main__"}
    exec(compile(USER_SCRIPT, "pydensecrf_script.py", "exec"), theirs)
    exec(compile(drop_in_script, "drop_in_script.py", "exec"), ours)
    assert np.mean(ours["MAP"] == theirs["MAP"]) >= 0.999
    for name in ("stepped", "generic"):
        assert ours[name].shape == theirs[name].shape
        assert np.abs(ours[name] - theirs[name]).max() <= 1e-3, name
    assert_close(np.array(ours["kl"]), np.array(theirs["kl"]), rtol=1e-4)


def test_feature_engine_is_reported_and_can_be_forced(monkeypatch):
    name, reason = impls.densecrf.engine()
    assert name in impls.densecrf.ENGINES and reason
    monkeypatch.setenv("IMPLS_DENSECRF_ENGINE", "framework")
    assert impls.densecrf.engine() == ("framework", "chosen by IMPLS_DENSECRF_ENGINE, on the numpy backend")
    assert impls.densecrf.DenseCRF(10, 2).engine == "framework"
    monkeypatch.setenv("IMPLS_DENSECRF_ENGINE", "cuda-magic")
    with pytest.raises(ValueError, match="IMPLS_DENSECRF_ENGINE must be one of"):
        impls.densecrf.DenseCRF(10, 2)


def test_feature_former_engine_names_still_work_and_warn(monkeypatch):
    """engine "numpy" / "torch" (before the engine and the backend were told apart) are the
    framework engine on that backend for one release, with a warning naming the replacement."""
    with pytest.warns(DeprecationWarning, match="engine='numpy' is deprecated, use engine='framework', "
                                                "backend='numpy'"):
        crf = impls.densecrf.DenseCRF2D(4, 3, 2, engine="numpy")
    assert (crf.engine, crf.backend) == ("framework", "numpy")
    monkeypatch.setenv("IMPLS_DENSECRF_ENGINE", "numpy")
    with pytest.warns(DeprecationWarning, match="IMPLS_DENSECRF_ENGINE=framework IMPLS_DENSECRF_BACKEND=numpy"):
        assert impls.densecrf.engine() == ("framework", "chosen by IMPLS_DENSECRF_ENGINE, on the numpy backend")


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


@pytest.mark.parametrize(("engine", "framework_backend"), ENGINES)
def test_feature_every_engine_gives_the_same_q(engine, framework_backend, monkeypatch):
    _use_engine(engine, framework_backend, monkeypatch)
    image = crf_example("im3")[0][:64, :48].copy()
    ours, theirs = _twin_crfs(image, smooth_unary(64, 48, 4, seed=5))
    assert (ours.engine, ours.backend) == (engine, framework_backend)
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
    with pytest.raises(ValueError, match=r"argument 'f' must have shape \(12, 12\), got \(1, 12\)"):
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
