"""Dense CRF end to end (lattice build included) for every backend and pydensecrf, on real
images with 21-label unaries from the tests' seeded smooth field and pydensecrf's own
parameters. Each backend's labels are checked against pydensecrf before it is timed."""

import numpy as np
import pytest

from impls.testing import crf_image, smooth_unary

dcrf = pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (pydensecrf2) is the baseline")

LABELS = 21
PARAMETERS = dict(gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13, bilateral_compat=10)
# (case, image, scale, iterations): a pydensecrf example, and a skimage image near PASCAL's 500x375.
CASES = [("im1-240x320", "im1", 1.0, 5), ("coffee-300x400", "coffee", 0.75, 10)]
MIN_LABEL_AGREEMENT = 0.999


def _inputs(image_name, scale):
    image = crf_image(image_name, scale=scale)
    return image, smooth_unary(*image.shape[:2], LABELS, seed=1)


def _pydensecrf(image, unary, iterations):
    height, width, labels = unary.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(-1, labels).T))
    crf.addPairwiseGaussian(sxy=PARAMETERS["gaussian_sxy"], compat=PARAMETERS["gaussian_compat"])
    crf.addPairwiseBilateral(sxy=PARAMETERS["bilateral_sxy"], srgb=PARAMETERS["bilateral_srgb"], rgbim=image,
                             compat=PARAMETERS["bilateral_compat"])
    return np.array(crf.inference(iterations)).T.reshape(height, width, labels)


def _info(benchmark, case, backend, device, image):
    benchmark.group = f"dense_crf {case}"
    benchmark.extra_info.update(op="dense_crf", case=case, backend=backend, device=device,
                                pixels=int(image.shape[0] * image.shape[1]), labels=LABELS)


@pytest.mark.parametrize("case, image_name, scale, iterations", CASES, ids=[c[0] for c in CASES])
def test_dense_crf(benchmark, backend, case, image_name, scale, iterations):
    image, unary = _inputs(image_name, scale)
    native_unary, native_image = backend.from_nhwc(unary[None]), backend.from_nhwc(image[None])
    synchronize = _synchronizer(backend)

    def run():
        q = backend.module.dense_crf(native_unary, native_image, iterations=iterations, **PARAMETERS)
        synchronize()
        return q

    ours = backend.to_nhwc(run())[0]
    agreement = np.mean(ours.argmax(-1) == _pydensecrf(image, unary, iterations).argmax(-1))
    assert agreement >= MIN_LABEL_AGREEMENT, f"{backend}: label agreement with pydensecrf {agreement:.4%}"
    _info(benchmark, case, backend.name, backend.device, image)
    benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("case, image_name, scale, iterations", CASES, ids=[c[0] for c in CASES])
def test_dense_crf_pydensecrf(benchmark, case, image_name, scale, iterations):
    image, unary = _inputs(image_name, scale)
    _info(benchmark, case, "pydensecrf", "cpu", image)
    benchmark.pedantic(_pydensecrf, args=(image, unary, iterations), rounds=5, warmup_rounds=1, iterations=1)


def _synchronizer(backend):
    if backend.name == "torch" and backend.device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None
