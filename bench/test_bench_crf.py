"""Dense CRF end to end (lattice build included) for every backend, the native lattice and
pydensecrf, on real images with 21-label unaries from the tests' seeded smooth field and
pydensecrf's own parameters. Each result's labels are checked against pydensecrf before
it is timed, so a fast wrong answer cannot reach the report."""

import numpy as np
import pytest

from impls import native
from impls.testing import crf_image, smooth_unary

dcrf = pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (pydensecrf2) is the baseline")

LABELS = 21
PARAMETERS = dict(gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13, bilateral_compat=10)
# (case, image, iterations): a pydensecrf example with its 5 iterations, and the PASCAL-sized
# case of the native-lattice issue (500x375, 10 iterations).
CASES = [("im1-240x320-5it", "im1", 5), ("astronaut-375x500-10it", "astronaut", 10)]
MIN_LABEL_AGREEMENT = 0.999
ROUNDS = dict(rounds=5, warmup_rounds=1, iterations=1)


def _inputs(image_name):
    image = crf_image(image_name)
    if image_name == "astronaut":
        image = np.ascontiguousarray(image[:375, :500])
    return image, smooth_unary(*image.shape[:2], LABELS, seed=1)


def _pydensecrf(image, unary, iterations):
    height, width, labels = unary.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(-1, labels).T))
    crf.addPairwiseGaussian(sxy=PARAMETERS["gaussian_sxy"], compat=PARAMETERS["gaussian_compat"])
    crf.addPairwiseBilateral(sxy=PARAMETERS["bilateral_sxy"], srgb=PARAMETERS["bilateral_srgb"], rgbim=image,
                             compat=PARAMETERS["bilateral_compat"])
    return np.array(crf.inference(iterations)).T.reshape(height, width, labels)


def _timed(benchmark, backend, case, image, unary, iterations, run):
    """Check `run`'s labels against pydensecrf, then time it."""
    ours = run()
    agreement = np.mean(ours.argmax(-1) == _pydensecrf(image, unary, iterations).argmax(-1))
    assert agreement >= MIN_LABEL_AGREEMENT, f"{backend}: label agreement with pydensecrf {agreement:.4%}"
    benchmark.group = f"dense_crf {case}"
    benchmark.extra_info.update(op="dense_crf", case=case, backend=backend.split("-")[0],
                                device=backend.split("-")[1] if "-" in backend else "cpu",
                                pixels=int(image.shape[0] * image.shape[1]), labels=LABELS, iterations=iterations)
    benchmark.pedantic(run, **ROUNDS)


@pytest.mark.parametrize("case, image_name, iterations", CASES, ids=[c[0] for c in CASES])
def test_dense_crf_framework(benchmark, backend, case, image_name, iterations):
    """Each framework's own operations (engine="framework")."""
    image, unary = _inputs(image_name)
    native_unary, native_image = backend.from_nhwc(unary[None]), backend.from_nhwc(image[None])
    synchronize = _synchronizer(backend)

    def run():
        q = backend.module.dense_crf(native_unary, native_image, iterations=iterations, engine="framework",
                                     **PARAMETERS)
        synchronize()
        return backend.to_nhwc(q)[0]

    _timed(benchmark, f"{backend.name}-{backend.device}", case, image, unary, iterations, run)


@pytest.mark.parametrize("case, image_name, iterations", CASES, ids=[c[0] for c in CASES])
def test_dense_crf_native(benchmark, case, image_name, iterations):
    """The whole mean field in impls._native (C++, OpenMP)."""
    if not native.available():
        pytest.skip("impls._native is not built")
    import impls.numpy

    image, unary = _inputs(image_name)

    def run():
        return impls.numpy.dense_crf(unary[None], image[None], iterations=iterations, engine="native",
                                     **PARAMETERS)[0]

    _timed(benchmark, "native-cpu", case, image, unary, iterations, run)


@pytest.mark.parametrize("case, image_name, iterations", CASES, ids=[c[0] for c in CASES])
def test_dense_crf_pydensecrf(benchmark, case, image_name, iterations):
    image, unary = _inputs(image_name)
    _timed(benchmark, "pydensecrf-cpu", case, image, unary, iterations, lambda: _pydensecrf(image, unary, iterations))


def _synchronizer(backend):
    if backend.name == "torch" and backend.device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None
