"""The CI accuracy gate. Each check fails with the metric, its value, the threshold and the command
that reproduces it (impls.accuracy.require):

(a) the dense CRF raises mean IoU on the synthetic gate set by at least MIN_CRF_GAIN, in every
    backend and engine;
(b) pydensecrf's example recipe, run through impls.densecrf, reproduces pydensecrf's stored
    outputs (out1-3.png) on at least 99.5 % of pixels;
(c) the backends agree with the NumPy oracle within the parity thresholds;
and a deliberately broken CRF is shown to fail the gate.
"""

import functools

import numpy as np
import pytest

from impls.accuracy import GateFailure, crf_gain, label_agreement, require
from impls.synthetic import GATE_SET, synthetic_set
from impls.testing import Backend
from tests.inputs import CRF_EXAMPLES, crf_example, example_recipe

# Measured on the gate set (8 scenes, 5 classes, unaries at output stride 8), 5 iterations of
# pydensecrf's default-example parameters: mean IoU 0.8467 before, 0.9848 after, a gain of
# 0.138 in every backend and engine. The margin leaves room for legitimate changes of a few
# points but not for a CRF that does a fraction of its job; the unary alone gains 0.
MIN_CRF_GAIN = 0.10
MIN_STORED_AGREEMENT = 0.995
# Parity of dense_crf's Q with the NumPy oracle after 5 iterations in float32 (measured
# 3e-6 to 2e-5: float32 sums in another order), and of its labels.
MAX_Q_DIFFERENCE = 1e-3
MIN_LABEL_PARITY = 0.999
CRF_PARAMETERS = dict(gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13, bilateral_compat=10,
                      iterations=5)


@pytest.fixture
def reproduce(request):
    """The command that reruns just this check."""
    return f"python3 -m tox -e tests -- '{request.node.nodeid}'"


@functools.cache
def gate_set():
    return synthetic_set(**GATE_SET)


def backend_crf(backend, engine):
    """dense_crf of a backend as a function of NumPy (unary (H, W, C), image (H, W, 3)) -> Q (H, W, C)."""
    def crf(unary, image):
        q = backend.module.dense_crf(backend.from_nhwc(unary[None]), backend.from_nhwc(image[None]), engine=engine,
                                     **CRF_PARAMETERS)
        return backend.to_nhwc(q)[0]

    return crf


def check_crf_gain(crf, reproduce, *, what):
    gain = crf_gain(crf, gate_set(), GATE_SET["num_classes"])
    return require(f"{what}: mean IoU gain on the synthetic gate set (before {gain.before:.4f}, "
                   f"after {gain.after:.4f})", gain.gain, at_least=MIN_CRF_GAIN, reproduce=reproduce)


def _engine_or_skip(engine):
    from impls import native

    if engine == "native" and not native.available():
        pytest.skip("impls._native is not built")


@pytest.mark.parametrize("engine", ["framework", "native"])
def test_gate_dense_crf_improves_mean_iou(backend, engine, reproduce):
    _engine_or_skip(engine)
    check_crf_gain(backend_crf(backend, engine), reproduce, what=f"dense_crf {backend} engine={engine}")


@pytest.mark.parametrize("name", CRF_EXAMPLES)
def test_gate_pydensecrf_examples_reproduce_stored_outputs(name, reproduce):
    import impls.densecrf
    import impls.densecrf.utils

    image, annotation, stored = crf_example(name)
    segmentation, _, _ = example_recipe(impls.densecrf, impls.densecrf.utils, image, annotation)
    require(f"impls.densecrf ({impls.densecrf.engine()} engine) on pydensecrf's {name}: fraction of pixels equal "
            f"to out{name[-1]}.png", label_agreement(segmentation, stored, channel_axis=-1),
            at_least=MIN_STORED_AGREEMENT, reproduce=reproduce)


@pytest.mark.parametrize("engine", ["framework", "native"])
def test_gate_backends_agree_with_the_oracle(backend, engine, reproduce):
    _engine_or_skip(engine)
    image, _, unary = gate_set()[0]
    expected = backend_crf(Backend("numpy"), "framework")(unary, image)
    q = backend_crf(backend, engine)(unary, image)
    what = f"dense_crf {backend} engine={engine} vs impls.numpy"
    require(f"{what}: max |Q difference|", np.max(np.abs(q - expected)), at_most=MAX_Q_DIFFERENCE,
            reproduce=reproduce)
    require(f"{what}: label agreement", label_agreement(q.argmax(-1), expected.argmax(-1)), at_least=MIN_LABEL_PARITY,
            reproduce=reproduce)


def test_gate_bites_on_a_crf_that_returns_the_unary_softmax(reproduce):
    def broken_crf(unary, image):
        probabilities = np.exp(-unary.astype(np.float64))
        return probabilities / probabilities.sum(-1, keepdims=True)

    with pytest.raises(GateFailure) as failure:
        check_crf_gain(broken_crf, reproduce, what="broken CRF")
    message = str(failure.value)
    assert "broken CRF: mean IoU gain on the synthetic gate set" in message
    assert "= 0, required at least 0.1; reproduce: python3 -m tox -e tests -- " in message


def test_gate_bites_on_a_crf_that_does_half_its_job(reproduce):
    import impls.numpy

    def half_crf(unary, image):  # one iteration with weak pairwise terms
        q = impls.numpy.dense_crf(unary[None], image[None], iterations=1, gaussian_compat=0.3, bilateral_compat=1)[0]
        return q

    with pytest.raises(GateFailure, match="mean IoU gain on the synthetic gate set"):
        check_crf_gain(half_crf, reproduce, what="weak CRF")


@pytest.mark.parametrize("value, bounds, match", [
    (0.5, dict(at_least=0.6), r"m = 0\.5, required at least 0\.6; reproduce: cmd"),
    (0.5, dict(at_most=0.4), r"m = 0\.5, required at most 0\.4"),
    (float("nan"), dict(at_least=0.0), r"m = nan, required at least 0;"),
])
def test_exception_require_names_metric_value_threshold_and_command(value, bounds, match):
    with pytest.raises(GateFailure, match=match):
        require("m", value, reproduce="cmd", **bounds)
    assert require("m", 0.7, at_least=0.6, at_most=0.8, reproduce="cmd") == 0.7


def test_feature_label_agreement_of_label_batches_and_colour_maps():
    labels = np.zeros((2, 4, 3), np.int64)
    other = labels.copy()
    other[0, 0, 0] = 1
    assert label_agreement(other, labels) == 23 / 24  # a batch of label maps: every entry counts
    assert label_agreement(other, labels, channel_axis=-1) == 7 / 8  # (H, W, 3) colours: per pixel
