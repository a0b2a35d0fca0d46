"""Seeded weights for matterport's Mask R-CNN (matterport/Mask_RCNN, Keras 2) in the layout of its
real `save_weights` file, and a writer for that file, so that our re-implementations and
matterport itself (reference/matterport_oracle.py) can be run on the same weights where no trained
file can be downloaded.

The layout comes from reference/matterport_layout_<A|B>.json, written by the oracle from the
file matterport's own `keras_model.save_weights` wrote (tf_keras 2.21): every layer in
model.layers order (weightless ones too), each weighted layer's weight names and shapes, and the
configuration. The nested RPN model is one layer, `rpn_model`, whose weights are named
"rpn_conv_shared/kernel:0", ... (so the datasets lie at /rpn_model/rpn_conv_shared/kernel:0),
exactly as Keras writes a nested model.

The values (`matterport_weights`) are a function of the layout and the seed alone: one legacy
`np.random.RandomState(seed)` draws uniform noise for every weight in layout order (layers in
layer_names order, each layer's weights in its weight_names order; `tests.keras2_h5._uniform`,
the same values on every platform and NumPy version). The rules (fan_in = the product of a
kernel's shape but its output axis, for Conv2DTranspose the product of its kernel size and its
last axis, the input channels):

    kernel (conv, dense)           He-uniform, U(-g L, +g L), L = sqrt(6 / fan_in), g = GAINS[layer
                                   name] or GAINS[its first four characters] or 1:
        conv1                      g = 1/64 (the molded image is pixels - MEAN_PIXEL, std ~ 60)
        fpn_*                      g = 0.5 (no ReLU, four levels summed top-down)
        rpn_class_raw              g = 0.1 (foreground scores spread over (0, 1), not saturated)
        rpn_bbox_pred              g = 0.25, mrcnn_bbox_fc g = 0.25 (box deltas of a few tenths)
        mrcnn_class_conv1          g = 0.5, mrcnn_mask_conv1 g = 0.5
        mrcnn_class_logits         g = CLASS_GAIN, drawn like the others, then its background column
                                   (column 0) replaced, in float64, by the mean of the other columns
                                   plus BACKGROUND_SHIFT * g * L / sqrt(fan_in): the background
                                   logit is then the mean class logit plus a multiple of the sum of
                                   the (ReLU, non-negative) shared features, so that whether an ROI
                                   gets a confident class depends on the direction of its features
                                   more than on the photograph's contrast (with a plain background
                                   bias the low-contrast chelsea got no detection where astronaut
                                   got dozens)
    bias                           U(-0.05, 0.05)
    BatchNorm gamma                1 + U(-0.1, 0.1), times RESIDUAL_GAMMA for the last BN of a
                                   residual branch (bn<stage><block>_branch2c) so that the sum over
                                   ResNet-101's 23 stage-4 blocks stays O(1)
    BatchNorm beta, moving_mean    U(-0.05, 0.05)
    BatchNorm moving_variance      1 + U(-0.1, 0.1)

CLASS_GAIN and BACKGROUND_SHIFT depend on the number of classes (`head_tuning`); they were chosen
with the oracle (reference/matterport_oracle.py) so that each of the golden photographs (astronaut,
coffee, chelsea) gives 3 to 20 detections at matterport's default DETECTION_MIN_CONFIDENCE 0.7
with the top score below 0.99 (no saturated, tied scores).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import numpy as np

from tests.keras2_h5 import _uniform, write_keras2_h5

MATTERPORT_SEED = 2018
# Kernel gains (He-uniform times the gain) by layer name, or by its first four characters.
GAINS = {"conv1": 1 / 64, "fpn_": 0.5, "rpn_class_raw": 0.1, "rpn_bbox_pred": 0.25,
         "mrcnn_class_conv1": 0.5, "mrcnn_bbox_fc": 0.25, "mrcnn_mask_conv1": 0.5}
RESIDUAL_GAMMA = 0.3
# num_classes -> (CLASS_GAIN, BACKGROUND_SHIFT); other class counts use DEFAULT_TUNING.
TUNING = {3: (6.0, 1.6), 81: (1.75, 2.6)}
DEFAULT_TUNING = (2.0, 2.5)
REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "reference"


def load_layout(layout) -> dict:
    """A layout dict, from a dict, a path, or "A"/"B" (reference/matterport_layout_<A|B>.json)."""
    if isinstance(layout, dict):
        return layout
    if isinstance(layout, str) and layout in ("A", "B"):
        layout = REFERENCE / f"matterport_layout_{layout}.json"
    return json.loads(pathlib.Path(layout).read_text())


def head_tuning(num_classes: int) -> tuple[float, float]:
    return TUNING.get(num_classes, DEFAULT_TUNING)


def _fan_in(layer: str, shape) -> int:
    if layer == "mrcnn_mask_deconv":  # Conv2DTranspose: (kh, kw, out, in)
        return shape[0] * shape[1] * shape[3]
    return int(np.prod(shape[:-1]))


def _value(random, layer: str, weight: str, shape, num_classes: int) -> np.ndarray:
    kind = weight.rsplit("/", 1)[-1].split(":")[0]
    inner = weight.rsplit("/", 1)[0]  # the layer's own name (rpn_model's inner layers)
    class_gain, background_shift = head_tuning(num_classes)
    if kind == "kernel":
        gain = class_gain if inner == "mrcnn_class_logits" else GAINS.get(inner, GAINS.get(inner[:4], 1.0))
        fan_in = _fan_in(inner, shape)
        limit = np.sqrt(6.0 / fan_in)
        value = _uniform(random, shape, gain * limit)
        if inner == "mrcnn_class_logits":
            value[:, 0] = value[:, 1:].astype(np.float64).mean(axis=1) + \
                background_shift * gain * limit / np.sqrt(fan_in)
        return value
    if kind == "bias":
        return _uniform(random, shape, 0.05)
    if kind == "gamma":
        scale = RESIDUAL_GAMMA if inner.startswith("bn") and inner.endswith("_branch2c") else 1.0
        return (scale * (1.0 + _uniform(random, shape, 0.1))).astype(np.float32)
    if kind in ("beta", "moving_mean"):
        return _uniform(random, shape, 0.05)
    if kind == "moving_variance":
        return (1.0 + _uniform(random, shape, 0.1)).astype(np.float32)
    raise ValueError(f"matterport_weights: no rule for {layer}'s weight {weight}")


def matterport_weights(layout, seed: int = MATTERPORT_SEED) -> list[tuple[str, list]]:
    """[(layer, [(weight name, float32 array)])] for every layer of the layout, in its order
    (weightless layers with []), drawn from RandomState(seed) as the module's docstring says."""
    layout = load_layout(layout)
    num_classes = int(layout["config"]["NUM_CLASSES"])
    random = np.random.RandomState(seed)
    out = []
    for layer in layout["layer_names"]:
        values = []
        for weight, shape in layout["weights"].get(layer, []):
            value = _value(random, layer, weight, tuple(shape), num_classes)
            values.append((weight, np.ascontiguousarray(value, dtype=np.float32)))
        out.append((layer, values))
    return out


def matterport_skeleton(layout) -> list[tuple[str, list]]:
    """The layout with shapes instead of values (write_keras2_h5 then writes an empty file of the
    right structure, a few hundred kB)."""
    layout = load_layout(layout)
    return [(layer, [(weight, tuple(shape)) for weight, shape in layout["weights"].get(layer, [])])
            for layer in layout["layer_names"]]


def write_matterport_h5(path, layout, seed: int = MATTERPORT_SEED, **options) -> pathlib.Path:
    """The seeded weights as a Keras 2 `save_weights` file (matterport's `load_weights` reads it,
    by_name=False or True)."""
    layout = load_layout(layout)
    options.setdefault("keras_version", layout.get("keras_version", "2.2.4"))
    return write_keras2_h5(path, matterport_weights(layout, seed), **options)


def assert_detect_equals_matterports(boxes, class_ids, scores, masks, golden, ref_masks, p):
    """The issue's bar for detect(): the same number of instances, in matterport's order, boxes
    equal within 1 px (a coordinate at a .5 rounding boundary), class ids equal, scores within
    1e-4, masks >= 99.5 % equal pixels (over the image)."""
    ref_boxes, ref_ids, ref_scores = golden[p + "rois"], golden[p + "class_ids"], golden[p + "scores"]
    assert len(boxes) == len(ref_boxes), f"{len(boxes)} detections, matterport {len(ref_boxes)}"
    assert np.abs(boxes.astype(np.int64) - ref_boxes).max(initial=0) <= 1, "boxes differ by more than 1 px"
    np.testing.assert_array_equal(class_ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-4)
    for i in range(len(boxes)):
        assert np.mean(masks[:, :, i] == ref_masks[:, :, i]) >= 0.995, f"instance {i}: masks differ"


def assert_only_edge_rows_differ(differ, rois) -> None:
    """matterport's PyramidROIAlign (tf.image.crop_and_resize) puts the last sample of a box that
    ends at the bottom or right edge (y2 or x2 = 1) at H - 1 or W - 1 within a rounding error:
    one ulp over, and the sample is the extrapolation value 0. Such a box's pooled features, class
    and deltas change with the last bit of its coordinates, which float32 convolutions summed in
    another order change. Every other ROI must agree; of the edge ROIs, at most a tenth may differ
    (measured: 0-11 of 89-213 edge ROIs, with 1 or 2 threads)."""
    differ = np.asarray(differ, bool)
    on_edge = (rois[:, 2] == 1) | (rois[:, 3] == 1)
    assert not (differ & ~on_edge).any(), f"ROIs {np.flatnonzero(differ & ~on_edge)} differ from matterport's"
    assert differ.sum() <= max(1, on_edge.sum() // 10), \
        f"{differ.sum()} of {on_edge.sum()} edge ROIs differ from matterport's"


def write_coco_h5(path, seed: int = MATTERPORT_SEED) -> pathlib.Path:
    """A stand-in for matterport's mask_rcnn_coco.h5: its layout (ResNet-101, 81 classes; the
    layout of reference/matterport_layout_B.json) with seeded weights."""
    layout = pathlib.Path(__file__).resolve().parents[1] / "reference" / "matterport_layout_B.json"
    return write_matterport_h5(path, layout, seed)


# The goldens of reference/matterport_oracle.py, as the torch and Keras tests compare with them.
GOLDENS = pathlib.Path(os.environ.get("IMPLS_MATTERPORT_GOLDENS", REFERENCE))
FAST_PHOTO = ("A", "coffee")  # the case of the default run; the other five are slow


def golden_cases():
    """pytest parameters (key, photo) of the six golden cases, all but FAST_PHOTO marked slow."""
    import pytest

    return [pytest.param(key, photo, marks=[] if (key, photo) == FAST_PHOTO else [pytest.mark.slow],
                         id=f"{key}-{photo}")
            for key in ("A", "B") for photo in ("astronaut", "coffee", "chelsea")]


def digest(array) -> np.ndarray:
    """The sha256 of an array's bytes, as the goldens store it (32 uint8)."""
    return np.frombuffer(hashlib.sha256(np.ascontiguousarray(array).tobytes()).digest(), np.uint8)


def match_rows(ours, theirs, atol) -> np.ndarray:
    """Index in `theirs` of a row of `ours` equal within atol, or -1."""
    if len(ours) == 0 or len(theirs) == 0:
        return np.full(len(ours), -1)
    distance = np.abs(ours[:, None, :] - theirs[None, :, :]).max(-1)
    nearest = distance.argmin(1)
    return np.where(distance[np.arange(len(ours)), nearest] <= atol, nearest, -1)


def golden_masks(golden, p) -> np.ndarray:
    """detect()'s (H, W, n) masks of golden case prefix `p`, stored as each mask's crop to its
    box, bit-packed; their areas checked against the stored ones."""
    height, width, count = (int(v) for v in golden[p + "masks.shape"])
    bits, offsets = np.unpackbits(golden[p + "masks.packed"]).astype(bool), golden[p + "masks.offsets"]
    masks = np.zeros((height, width, count), bool)
    for i, (y1, x1, y2, x2) in enumerate(golden[p + "rois"]):
        masks[y1:y2, x1:x2, i] = bits[offsets[i]:offsets[i + 1]].reshape(y2 - y1, x2 - x1)
    np.testing.assert_array_equal(masks.sum((0, 1)), golden[p + "masks.area"])
    return masks


def golden_layout(key: str) -> tuple[pathlib.Path, dict]:
    """(the goldens' npz, the layout of configuration `key`), or a pytest skip where the oracle
    has not generated them."""
    import pytest

    path, layout = GOLDENS / f"matterport_{key}.npz", GOLDENS / f"matterport_layout_{key}.json"
    if not path.exists() or not layout.exists():
        pytest.skip(f"{path} not generated (reference/matterport_oracle.py)")
    return path, json.loads(layout.read_text())


def load_seeded_weights(model, layout) -> None:
    """The seeded weights of `layout` (written to a scratch file) loaded strictly into `model`."""
    import tempfile

    from impls import port

    with tempfile.TemporaryDirectory() as scratch:
        report = port.load_keras2_h5(model, write_matterport_h5(pathlib.Path(scratch) / "seeded.h5", layout))
    assert report.complete, report.summary()


def assert_feature_maps_match_goldens(maps, golden, p, config) -> None:
    """C2..C5 and P2..P6 ((1, H, W, C) NumPy, sampled and per-channel sums) within 1e-4 of each
    map's largest value, and rpn_class / rpn_bbox (sampled, and the 200 top anchors) of golden
    case prefix `p`."""
    from impls import _maskrcnn

    for layer in [*_maskrcnn.stage_output_names(config.BACKBONE), "fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6"]:
        x = maps[layer]
        s, c = golden[layer + ".step"]
        ref = golden[p + layer]
        np.testing.assert_allclose(x[0, ::s, ::s, ::c], ref, rtol=0, atol=1e-4 * np.abs(ref).max(), err_msg=layer)
        sums = golden[p + layer + ".sum"]
        np.testing.assert_allclose(x[0].astype(np.float64).sum((0, 1)), sums, rtol=0, atol=1e-4 * np.abs(sums).max(),
                                   err_msg=layer + ".sum")
    step = int(golden["rpn.step"][0])
    for name in ("rpn_class", "rpn_bbox"):
        ref = golden[p + name + ".sub"]
        np.testing.assert_allclose(maps[name][:, ::step], ref, rtol=0, atol=1e-4 * np.abs(ref).max(), err_msg=name)
    top = golden[p + "rpn_top.index"]
    np.testing.assert_allclose(maps["rpn_class"][0, top], golden[p + "rpn_top.class"], atol=1e-5)
    np.testing.assert_allclose(maps["rpn_bbox"][0, top], golden[p + "rpn_top.bbox"], rtol=0,
                               atol=1e-4 * np.abs(golden[p + "rpn_top.bbox"]).max())
