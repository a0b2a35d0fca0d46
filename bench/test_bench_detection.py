"""Mask R-CNN's pooling and NMS across backends, on sizes of matterport's heads: crop_and_resize
(the mask branch's 14x14 crops), RoIAlign (7x7, two samples per bin) and NMS over RPN-sized box
sets. Each case checks the backend's result against the NumPy oracle before it is timed."""

import numpy as np
import pytest

from impls.numpy import crop_and_resize as oracle_crop_and_resize
from impls.numpy import nms as oracle_nms
from impls.numpy import roi_align as oracle_roi_align
from impls.testing import assert_close, to_numpy

FEATURES = (1, 64, 64, 64)  # one P2-sized map of a 256 x 256 image, 64 channels
BOXES = 200
NMS_BOXES = (500, 2000)


def _features():
    return np.random.default_rng(0).random(FEATURES, dtype=np.float32)


def _normalised_boxes(count, seed=1):
    rng = np.random.default_rng(seed)
    start, size = rng.uniform(0.02, 0.6, size=(count, 2)), rng.uniform(0.05, 0.38, size=(count, 2))
    return np.concatenate([start, start + size], axis=1).astype(np.float32)


def _synchronize(backend):
    if backend.name == "torch" and backend.device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def _time(benchmark, backend, call, group, op, **info):
    synchronize = _synchronize(backend)

    def run():
        out = call()
        synchronize()
        return out

    benchmark.group = group
    benchmark.extra_info.update(op=op, backend=backend.name, device=backend.device, **info)
    benchmark.pedantic(run, rounds=10, warmup_rounds=2, iterations=1)


def test_crop_and_resize(benchmark, backend):
    features, boxes = _features(), _normalised_boxes(BOXES)
    indices = np.zeros(BOXES, np.int32)
    native, native_boxes, native_indices = backend.from_nhwc(features), backend.tensor(boxes), backend.tensor(indices)
    crop = backend.module.crop_and_resize
    assert_close(backend.to_nhwc(crop(native, native_boxes, native_indices, 14)),
                 oracle_crop_and_resize(features, boxes, indices, 14))
    _time(benchmark, backend, lambda: crop(native, native_boxes, native_indices, 14),
          f"crop_and_resize {BOXES} boxes 14x14 of 64x64x64", "crop_and_resize", boxes=BOXES)


def test_roi_align(benchmark, backend):
    features = _features()
    boxes = _normalised_boxes(BOXES) * 256  # image pixels, features at stride 4
    rois = np.concatenate([np.zeros((BOXES, 1), np.float32), boxes[:, [1, 0, 3, 2]]], axis=1)
    native, native_rois = backend.from_nhwc(features), backend.tensor(rois)
    roi_align = backend.module.roi_align
    assert_close(backend.to_nhwc(roi_align(native, native_rois, 7, 0.25, 2, True)),
                 oracle_roi_align(features, rois, 7, 0.25, 2, True))
    _time(benchmark, backend, lambda: roi_align(native, native_rois, 7, 0.25, 2, True),
          f"roi_align {BOXES} boxes 7x7 of 64x64x64", "roi_align", boxes=BOXES)


@pytest.mark.parametrize("count", NMS_BOXES)
def test_nms(benchmark, backend, count):
    boxes = _normalised_boxes(count, seed=2)
    scores = np.random.default_rng(3).random(count, dtype=np.float32)
    native_boxes, native_scores = backend.tensor(boxes), backend.tensor(scores)
    nms = backend.module.nms
    np.testing.assert_array_equal(to_numpy(nms(native_boxes, native_scores, 0.7)), oracle_nms(boxes, scores, 0.7))
    _time(benchmark, backend, lambda: nms(native_boxes, native_scores, 0.7), f"nms {count} boxes at 0.7", "nms",
          boxes=count)
