"""matterport's Mask R-CNN: the framework-neutral config and molding (impls._maskrcnn) and the torch
model (impls.torch.maskrcnn): matterport's defaults, resize modes and mold/unmold against hand-computed
values, layer names and shapes against matterport's layer table (so that its .h5 loads by name), the
stage shapes, batching and detect(). Parity with matterport itself is in the golden tests."""

import functools
import math
import random

import numpy as np
import pytest

from impls import _maskrcnn as mr
from impls import port
from impls.numpy import norm_boxes

torch = pytest.importorskip("torch")

from impls.torch.maskrcnn import MaskRCNN, _pad_same  # noqa: E402
from tests.keras2_h5 import write_keras2_h5  # noqa: E402
from tests.matterport_h5 import (  # noqa: E402
    assert_detect_equals_matterports,
    assert_feature_maps_match_goldens,
    assert_only_edge_rows_differ,
    digest,
    golden_cases,
    golden_layout,
    golden_masks,
    load_seeded_weights,
    match_rows,
)  # noqa: E402

SMALL = dict(NUM_CLASSES=3, BACKBONE="resnet50", IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, POST_NMS_ROIS_INFERENCE=50,
             PRE_NMS_LIMIT=500, DETECTION_MAX_INSTANCES=8, DETECTION_MIN_CONFIDENCE=0.0)


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (100, 80, 3), dtype=np.uint8), rng.integers(0, 256, (90, 128, 3), dtype=np.uint8)]


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    config = mr.Config(**SMALL)
    model = MaskRCNN(config)
    molded, metas, windows = mr.mold_inputs(_images(), config)
    maps = model.stage_outputs(torch.from_numpy(molded).permute(0, 3, 1, 2), metas)
    return config, model, molded, metas, windows, maps


# ---------------------------------------------------------------------------------------- Config

def test_feature_config_has_matterports_defaults_and_computed_fields():
    config = mr.Config()
    assert (config.BACKBONE, config.NUM_CLASSES, config.IMAGES_PER_GPU, config.GPU_COUNT) == ("resnet101", 1, 2, 1)
    assert config.BACKBONE_STRIDES == [4, 8, 16, 32, 64] and config.RPN_ANCHOR_SCALES == (32, 64, 128, 256, 512)
    assert config.RPN_ANCHOR_RATIOS == [0.5, 1, 2] and config.RPN_NMS_THRESHOLD == 0.7
    assert (config.PRE_NMS_LIMIT, config.POST_NMS_ROIS_INFERENCE, config.DETECTION_MAX_INSTANCES) == (6000, 1000, 100)
    assert (config.DETECTION_MIN_CONFIDENCE, config.DETECTION_NMS_THRESHOLD) == (0.7, 0.3)
    assert (config.IMAGE_MIN_DIM, config.IMAGE_MAX_DIM, config.IMAGE_RESIZE_MODE) == (800, 1024, "square")
    assert (config.POOL_SIZE, config.MASK_POOL_SIZE, config.MASK_SHAPE) == (7, 14, [28, 28])
    np.testing.assert_array_equal(config.MEAN_PIXEL, [123.7, 116.8, 103.9])
    np.testing.assert_array_equal(config.BBOX_STD_DEV, [0.1, 0.1, 0.2, 0.2])
    assert config.TRAIN_BN is False and config.FPN_CLASSIF_FC_LAYERS_SIZE == 1024
    assert config.BATCH_SIZE == 2 and config.IMAGE_META_SIZE == 13
    np.testing.assert_array_equal(config.IMAGE_SHAPE, [1024, 1024, 3])
    crop = mr.Config(IMAGE_RESIZE_MODE="crop", IMAGE_MIN_DIM=256)
    np.testing.assert_array_equal(crop.IMAGE_SHAPE, [256, 256, 3])


def test_feature_config_overrides_by_subclass_and_keyword():
    class Balloon(mr.Config):
        NAME = "balloon"
        NUM_CLASSES = 2
        IMAGES_PER_GPU = 1

    assert (Balloon().IMAGE_META_SIZE, Balloon().BATCH_SIZE) == (14, 1)
    config = Balloon(NUM_CLASSES=81, GPU_COUNT=2)
    assert (config.NUM_CLASSES, config.IMAGE_META_SIZE, config.BATCH_SIZE, config.NAME) == (81, 93, 2, "balloon")
    assert Balloon.NUM_CLASSES == 2  # the class is untouched
    assert config.to_dict()["IMAGE_META_SIZE"] == 93


@pytest.mark.parametrize("overrides, error, message", [
    (dict(NUM_CLASES=3), TypeError, "unknown argument 'NUM_CLASES'"),
    (dict(IMAGE_META_SIZE=20), ValueError, "'IMAGE_META_SIZE' is computed"),
    (dict(NUM_CLASSES=0), ValueError, "'NUM_CLASSES' must be an integer >= 1, got 0"),
    (dict(NUM_CLASSES=2.0), TypeError, "'NUM_CLASSES' must be an integer"),
    (dict(BACKBONE="resnet18"), ValueError, "'BACKBONE' must be one of"),
    (dict(IMAGE_RESIZE_MODE="stretch"), ValueError, "'IMAGE_RESIZE_MODE' must be one of"),
    (dict(IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=100), ValueError, "multiple of 64"),
    (dict(RPN_NMS_THRESHOLD=1.5), ValueError, "'RPN_NMS_THRESHOLD' must be a number in [0, 1]"),
    (dict(RPN_ANCHOR_SCALES=(32, 64)), ValueError, "'RPN_ANCHOR_SCALES' must be 5 numbers"),
    (dict(MEAN_PIXEL=[1, 2]), ValueError, "'MEAN_PIXEL' must be 3 numbers"),
    (dict(MASK_SHAPE=[14, 14]), ValueError, "'MASK_SHAPE' must be twice MASK_POOL_SIZE"),
    (dict(TRAIN_BN="no"), TypeError, "'TRAIN_BN' must be a bool"),
])
def test_exception_config_rejects_bad_fields_by_name(overrides, error, message):
    with pytest.raises(error, match=f"^Config: .*{_escape(message)}"):
        mr.Config(**overrides)


def _escape(text):
    import re

    return re.escape(text)


# ---------------------------------------------------------------------------------------- resize / mold

def test_feature_resize_image_square_as_matterport():
    image = np.full((100, 60, 3), 200, np.uint8)
    resized, window, scale, padding, crop = mr.resize_image(image, min_dim=128, max_dim=128, mode="square")
    # scale up to 128 / 60 would make the long side 213 > 128: scale = 128 / 100.
    assert scale == 1.28 and crop is None
    assert resized.shape == (128, 128, 3) and resized.dtype == np.uint8
    assert padding == [(0, 0), (25, 26), (0, 0)] and window == (0, 25, 128, 102)  # 60 * 1.28 = 76.8 -> 77
    assert (resized[:, :25] == 0).all() and (resized[:, 102:] == 0).all()
    assert (resized[5:-5, 30:97] == 200).all()  # constant inside (skimage's cval-0 edge aside)


def test_feature_resize_image_pad64_none_and_crop():
    image = np.ones((70, 130, 3), np.float32)
    resized, window, scale, padding, _ = mr.resize_image(image, min_dim=64, max_dim=1024, mode="pad64")
    assert scale == 1 and resized.shape == (128, 192, 3) and resized.dtype == np.float32
    assert padding == [(29, 29), (31, 31), (0, 0)] and window == (29, 31, 99, 161)
    resized, window, scale, padding, _ = mr.resize_image(image, min_dim=64, min_scale=2, mode="pad64")
    assert scale == 2 and resized.shape == (192, 320, 3) and window == (26, 30, 166, 290)
    same, window, scale, padding, crop = mr.resize_image(image, min_dim=800, max_dim=1024, mode="none")
    assert same is image and window == (0, 0, 70, 130) and scale == 1 and crop is None
    random.seed(3)
    cropped, window, scale, _, crop = mr.resize_image(np.ones((300, 200, 3)), min_dim=128, mode="crop")
    random.seed(3)
    y, x = random.randint(0, 300 - 128), random.randint(0, 200 - 128)
    assert cropped.shape == (128, 128, 3) and window == (0, 0, 128, 128) and crop == (y, x, 128, 128)
    with pytest.raises(ValueError, match="resize_image: argument 'mode'"):
        mr.resize_image(image, mode="fit")


def test_feature_mold_inputs_and_image_meta():
    config = mr.Config(**SMALL)
    images = _images()
    molded, metas, windows = mr.mold_inputs(images, config)
    assert molded.shape == (2, 128, 128, 3) and molded.dtype == np.float32
    assert metas.shape == (2, config.IMAGE_META_SIZE) and metas.dtype == np.float32
    np.testing.assert_array_equal(windows, [[0, 13, 128, 115], [19, 0, 109, 128]])
    np.testing.assert_array_equal(metas[0, :12], np.float32([0, 100, 80, 3, 128, 128, 3, 0, 13, 128, 115, 1.28]))
    parsed = mr.parse_image_meta(metas)
    np.testing.assert_array_equal(parsed["window"], windows)
    np.testing.assert_array_equal(parsed["active_class_ids"], np.zeros((2, 3)))
    # The padding is -MEAN_PIXEL after molding.
    np.testing.assert_allclose(molded[0, :, 0], -np.broadcast_to(config.MEAN_PIXEL, (128, 3)), rtol=1e-6)
    with pytest.raises(ValueError, match="mold_inputs: after resizing, all images must have the same size"):
        mr.mold_inputs(images, mr.Config(**{**SMALL, "IMAGE_RESIZE_MODE": "none"}))


def test_feature_unmold_detections_maps_boxes_back_to_the_original_image():
    config = mr.Config(**SMALL)
    image = np.zeros((100, 60, 3), np.uint8)
    molded, metas, windows = mr.mold_inputs([image], config)
    window = windows[0]  # (0, 25, 128, 102)
    # Boxes given in original pixels, moved into normalised molded coordinates as the network sees them.
    original = np.array([[10, 5, 50, 40], [0, 0, 100, 60], [30, 30, 30, 50]])
    in_window = norm_boxes(original.astype(np.float64), (100, 60))
    wnorm = norm_boxes(np.asarray(window, np.float64)[None], (128, 128))[0]
    shift = np.array([wnorm[0], wnorm[1], wnorm[0], wnorm[1]])
    extent = np.array([wnorm[2] - wnorm[0], wnorm[3] - wnorm[1]] * 2)
    boxes = (in_window * extent + shift).astype(np.float32)
    detections = np.zeros((5, 6), np.float32)
    detections[:3, :4] = boxes
    detections[:3, 4] = [1, 2, 1]
    detections[:3, 5] = [0.9, 0.8, 0.75]
    detections[4] = [0.1, 0.1, 0.5, 0.5, 2, 0.99]  # after the first class-0 row: ignored
    masks = np.zeros((5, 28, 28, 3), np.float32)
    masks[0, :, :, 1] = 1.0
    masks[1, :, :, 2] = 1.0
    masks[1, :, :, 1] = 0.0
    rois, class_ids, scores, full = mr.unmold_detections(detections, masks, image.shape, molded[0].shape, window)
    # The third box has no height: matterport's zero-area filter drops it.
    np.testing.assert_array_equal(rois, original[:2])
    assert rois.dtype == np.int32 and class_ids.dtype == np.int32
    np.testing.assert_array_equal(class_ids, [1, 2])
    np.testing.assert_allclose(scores, [0.9, 0.8])
    assert full.shape == (100, 60, 2) and full.dtype == bool
    assert full[10:50, 5:40, 0].all() and full[:, :, 0].sum() == 40 * 35
    assert full[:, :, 1].all()
    empty = mr.unmold_detections(np.zeros((4, 6), np.float32), np.zeros((4, 28, 28, 3)), image.shape,
                                 molded[0].shape, window)
    assert empty[0].shape == (0, 4) and empty[3].shape == (100, 60, 0) and empty[3].dtype == bool


def test_feature_anchors_as_matterports_get_anchors():
    config = mr.Config(**SMALL)
    np.testing.assert_array_equal(mr.backbone_shapes(config, (128, 128)), [[32, 32], [16, 16], [8, 8], [4, 4], [2, 2]])
    anchors = mr.anchors(config, (128, 128, 3))
    assert anchors.shape == (3 * (32 * 32 + 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2), 4) and anchors.dtype == np.float32
    # The first anchor: centre (0, 0), scale 32, ratio 0.5: height 32 / sqrt(0.5), width 32 sqrt(0.5).
    h, w = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)
    expected = np.array([-h / 2, -w / 2, h / 2 - 1, w / 2 - 1]) / 127
    np.testing.assert_allclose(anchors[0], expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------- layers

@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_feature_layer_table_follows_matterports_names(backbone):
    config = mr.Config(BACKBONE=backbone, NUM_CLASSES=3)
    names = mr.weighted_layer_names(config)
    assert len(names) == len(set(names))
    blocks = {"resnet50": 3 + 4 + 6 + 3, "resnet101": 3 + 4 + 23 + 3}[backbone]
    # conv1 + bn_conv1, 6 layers per block, 2 more per conv_block, 8 FPN, 3 RPN, 6 + 10 heads.
    assert len(names) == 2 + 6 * blocks + 2 * 4 + 8 + 3 + 6 + 10
    last4 = "res4f" if backbone == "resnet50" else "res4w"
    assert f"{last4}_branch2c" in names and "res4b22_branch2c" not in names
    assert names[:10] == ["conv1", "bn_conv1", "res2a_branch2a", "bn2a_branch2a", "res2a_branch2b", "bn2a_branch2b",
                          "res2a_branch2c", "bn2a_branch2c", "res2a_branch1", "bn2a_branch1"]
    assert mr.stage_output_names(backbone) == ["res2c_out", "res3d_out", f"{last4}_out", "res5c_out"]
    heads = ["mrcnn_mask_conv1", "mrcnn_mask_bn1", "mrcnn_mask_conv2", "mrcnn_mask_bn2", "mrcnn_mask_conv3",
             "mrcnn_mask_bn3", "mrcnn_mask_conv4", "mrcnn_mask_bn4", "mrcnn_mask_deconv", "mrcnn_mask"]
    assert names[-10:] == heads
    assert names[-27:-10] == ["fpn_c5p5", "fpn_c4p4", "fpn_c3p3", "fpn_c2p2", "fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5",
                              "rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred", "mrcnn_class_conv1",
                              "mrcnn_class_bn1", "mrcnn_class_conv2", "mrcnn_class_bn2", "mrcnn_class_logits",
                              "mrcnn_bbox_fc"]


_TORCH_LAYOUT = {"convolution": (3, 2, 0, 1), "transposed convolution": (3, 2, 0, 1), "dense": (1, 0)}


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_cardinality_torch_model_has_exactly_matterports_weighted_layers(backbone):
    config = mr.Config(BACKBONE=backbone, NUM_CLASSES=3)
    model = MaskRCNN(config)
    modules = {path.rsplit(".", 1)[-1]: module for path, module in model.named_modules()
               if list(module.parameters(recurse=False))}
    table = mr.weighted_layers(config)
    assert sorted(modules) == sorted(name for name, _, _ in table)
    assert model.rpn_model.rpn_conv_shared is modules["rpn_conv_shared"]
    for name, kind, weights in table:
        module = modules[name]
        for weight, shape in weights:
            if kind == "BatchNorm":
                torch_name = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                              "moving_variance": "running_var"}[weight]
                expected = shape
            else:
                torch_name = {"kernel": "weight", "bias": "bias"}[weight]
                expected = shape if weight == "bias" else tuple(shape[i] for i in _TORCH_LAYOUT[kind])
            assert tuple(getattr(module, torch_name).shape) == expected, (name, weight)
        if kind == "BatchNorm":
            assert module.eps == 1e-3


def test_feature_a_keras2_file_in_matterports_layout_loads_strictly_by_name(tmp_path):
    config = mr.Config(**SMALL)
    model = MaskRCNN(config)
    rng = np.random.default_rng(0)
    layers, values = [], {}
    rpn = []
    for name, _, weights in mr.weighted_layers(config):
        entries = []
        for weight, shape in weights:
            # Real values for the small layers, shape-only (zeros) datasets for the big ones.
            value = rng.standard_normal(shape).astype(np.float32) if np.prod(shape) < 20000 else tuple(shape)
            values[(name, weight)] = value
            entries.append((f"{name}/{weight}:0", value))
        if name in mr.RPN_LAYERS:
            rpn += entries
        else:
            layers.append((name, entries))
        if name == "fpn_p5":  # Keras 2 writes the nested rpn_model as one layer
            layers += [("fpn_p6", []), ("rpn_model", rpn)]
    layers.insert(0, ("input_image", []))
    path = write_keras2_h5(tmp_path / "mask_rcnn_small.h5", layers)
    report = port.load_keras2_h5(model, path)
    assert report.complete
    np.testing.assert_array_equal(model.bn_conv1.running_var.numpy(), values[("bn_conv1", "moving_variance")])
    np.testing.assert_array_equal(model.conv1.weight.detach().numpy(),
                                  values[("conv1", "kernel")].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(model.rpn_model.rpn_class_raw.weight.detach().numpy(),
                                  values[("rpn_class_raw", "kernel")].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(model.mrcnn_class_logits.weight.detach().numpy(),
                                  values[("mrcnn_class_logits", "kernel")].T)
    np.testing.assert_array_equal(model.mrcnn_mask.bias.detach().numpy(), values[("mrcnn_mask", "bias")])


# ---------------------------------------------------------------------------------------- the network

def test_feature_tf_same_max_pool_pads_after_on_even_sides():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    padded = _pad_same(x, 3, 2, value=-math.inf)
    assert padded.shape == (1, 1, 5, 5) and padded[0, 0, 4].eq(-math.inf).all() and padded[0, 0, :4, 4].eq(
        -math.inf).all()
    pooled = torch.nn.functional.max_pool2d(padded, 3, 2)
    np.testing.assert_array_equal(pooled[0, 0].numpy(), [[10, 11], [14, 15]])  # TF's SAME: windows from (0, 0)
    odd = _pad_same(torch.zeros(1, 1, 5, 5), 3, 2)
    assert odd.shape == (1, 1, 7, 7)


def test_cardinality_rpn_reshapes_in_nhwc_order_and_follows_the_anchor_stride():
    from impls.torch.maskrcnn import _RPN

    torch.manual_seed(0)
    rpn = _RPN(8, 3, 1)
    feature_map = torch.randn(2, 8, 5, 6)
    logits, probs, deltas = rpn(feature_map)
    assert logits.shape == (2, 5 * 6 * 3, 2) and deltas.shape == (2, 5 * 6 * 3, 4)
    raw = rpn.rpn_class_raw(torch.relu(rpn.rpn_conv_shared(torch.nn.functional.pad(feature_map, (1, 1, 1, 1)))))
    # Anchor (row 2, column 4, ratio 1) is row (2 * 6 + 4) * 3 + 1; its two logits are channels 2 and 3.
    torch.testing.assert_close(logits[1, (2 * 6 + 4) * 3 + 1], raw[1, 2:4, 2, 4])
    torch.testing.assert_close(probs, torch.softmax(logits, -1))
    strided = _RPN(8, 3, 2)
    assert strided(feature_map)[0].shape == (2, 3 * 3 * 3, 2)  # ceil(5 / 2) x ceil(6 / 2) locations
    config = mr.Config(**{**SMALL, "RPN_ANCHOR_STRIDE": 2})
    assert len(mr.anchors(config, (128, 128))) == 3 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1)


def test_cardinality_stage_outputs_have_matterports_shapes(small):
    config, _, _, _, _, maps = small
    assert list(maps) == mr.stage_keys(config)
    anchors = 3 * (32 * 32 + 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2)
    expected = {"res2c_out": (2, 256, 32, 32), "res3d_out": (2, 512, 16, 16), "res4f_out": (2, 1024, 8, 8),
                "res5c_out": (2, 2048, 4, 4), "fpn_p2": (2, 256, 32, 32), "fpn_p3": (2, 256, 16, 16),
                "fpn_p4": (2, 256, 8, 8), "fpn_p5": (2, 256, 4, 4), "fpn_p6": (2, 256, 2, 2),
                "rpn_class": (2, anchors, 2), "rpn_bbox": (2, anchors, 4), "ROI": (2, 50, 4),
                "mrcnn_class": (2, 50, 3), "mrcnn_bbox": (2, 50, 3, 4), "mrcnn_detection": (2, 8, 6),
                "mrcnn_mask": (2, 8, 28, 28, 3)}
    assert {k: tuple(v.shape) for k, v in maps.items()} == expected
    assert all(v.dtype == torch.float32 for v in maps.values())
    torch.testing.assert_close(maps["rpn_class"].sum(-1), torch.ones(2, anchors))
    torch.testing.assert_close(maps["mrcnn_class"].sum(-1), torch.ones(2, 50))
    torch.testing.assert_close(maps["fpn_p6"], maps["fpn_p5"][:, :, ::2, ::2])
    mask = maps["mrcnn_mask"]
    assert (mask >= 0).all() and (mask <= 1).all()
    detections = maps["mrcnn_detection"]
    rows = detections[..., 4] > 0
    assert rows.any()
    assert (detections[..., 5][rows] >= 0).all() and (detections[..., :4][rows] >= 0).all()


UNTIL = {"res3d_out": "res5c_out", "fpn_p4": "fpn_p6", "rpn_class": "rpn_bbox", "ROI": "ROI",
         "mrcnn_class": "mrcnn_bbox", "mrcnn_detection": "mrcnn_detection", "mrcnn_mask": "mrcnn_mask"}


@pytest.mark.parametrize("until, last_key", UNTIL.items())
def test_feature_stage_outputs_until_stops_after_that_step(small, until, last_key):
    config, model, molded, metas, _, maps = small
    partial = model.stage_outputs(torch.from_numpy(molded).permute(0, 3, 1, 2), metas, until=until)
    keys = mr.stage_keys(config)
    assert list(partial) == keys[:keys.index(last_key) + 1]
    for key, value in partial.items():
        torch.testing.assert_close(value, maps[key], rtol=0, atol=0, msg=key)


def test_exception_stage_outputs_until_names_the_argument(small):
    _, model, molded, metas, _, _ = small
    with pytest.raises(ValueError, match="MaskRCNN: argument 'until' must be one of stage_keys.*got 'res4w_out'"):
        model.stage_outputs(torch.from_numpy(molded).permute(0, 3, 1, 2), metas, until="res4w_out")


def test_cardinality_batched_outputs_equal_image_by_image(small):
    _, model, molded, metas, _, maps = small
    for i in range(2):
        single = model.stage_outputs(torch.from_numpy(molded[i:i + 1]).permute(0, 3, 1, 2), metas[i:i + 1])
        for key in ("res5c_out", "fpn_p2", "rpn_class", "ROI", "mrcnn_detection", "mrcnn_mask"):
            # Batched convolutions may sum in another order: float32 rounding of the largest values.
            scale = float(maps[key][i].abs().max())
            torch.testing.assert_close(single[key][0], maps[key][i], rtol=1e-4, atol=1e-5 * scale, msg=key)


def test_feature_the_window_of_each_image_clips_its_detections(small):
    _, _, _, metas, windows, maps = small
    detections = maps["mrcnn_detection"].numpy()
    for i in range(2):
        rows = detections[i][detections[i, :, 4] > 0]
        lower = (windows[i, :2] - 0.0) / 127
        upper = (windows[i, 2:] - 1.0) / 127
        assert (rows[:, :2] >= lower - 1e-6).all() and (rows[:, 2:4] <= upper + 1e-6).all()


def test_cardinality_detect_returns_matterports_dicts(small):
    config, model, _, _, _, _ = small
    images = _images()
    results = model.detect(images)
    assert len(results) == 2
    for image, result in zip(images, results, strict=True):
        assert set(result) == {"rois", "class_ids", "scores", "masks"}
        count = len(result["rois"])
        assert result["rois"].shape == (count, 4) and result["rois"].dtype == np.int32
        assert result["class_ids"].shape == (count,) and result["class_ids"].dtype == np.int32
        assert result["scores"].shape == (count,) and result["scores"].dtype == np.float32
        assert result["masks"].shape == (*image.shape[:2], count) and result["masks"].dtype == bool
        assert ((result["class_ids"] >= 1) & (result["class_ids"] < config.NUM_CLASSES)).all()
        rois = result["rois"]
        assert (rois[:, :2] >= 0).all()
        assert (rois[:, 2] <= image.shape[0]).all() and (rois[:, 3] <= image.shape[1]).all()
        for k in range(count):
            y1, x1, y2, x2 = rois[k]
            assert not result["masks"][:, :, k][:y1].any() and not result["masks"][:, :, k][y2:].any()


def test_exception_model_rejects_bad_inputs(small):
    config, model, molded, metas, _, _ = small
    images = torch.from_numpy(molded).permute(0, 3, 1, 2)
    with pytest.raises(ValueError, match="MaskRCNN: argument 'molded_images' must have height and width divisible"):
        model(images[:, :, :96], metas)
    with pytest.raises(ValueError, match="MaskRCNN: argument 'image_metas' must have shape"):
        model(images, metas[:, :5])
    with pytest.raises(ValueError, match="MaskRCNN: argument 'molded_images' must have 3 channels"):
        model(images[:, :2], metas)
    with pytest.raises(TypeError, match="MaskRCNN: argument 'config'"):
        MaskRCNN(dict(SMALL))
    with pytest.raises(TypeError, match="MaskRCNN: unexpected keyword"):
        MaskRCNN(config, dtype="float32")


def test_feature_batchnorm_stays_frozen_in_train_mode(small):
    _, model, molded, metas, _, maps = small
    model.train()
    try:
        again = model.stage_outputs(torch.from_numpy(molded).permute(0, 3, 1, 2), metas)
    finally:
        model.eval()
    torch.testing.assert_close(again["res5c_out"], maps["res5c_out"])


def test_feature_cuda_agrees_with_cpu(small, request):
    if "cuda" not in request.config.impls_devices:
        pytest.skip("CUDA not selected (--device cuda or all)")
    if not torch.cuda.is_available():
        pytest.skip("torch: no CUDA device")
    config, model, molded, metas, _, maps = small
    gpu = MaskRCNN(config)
    gpu.load_state_dict(model.state_dict())
    gpu = gpu.cuda()
    images = torch.from_numpy(molded).permute(0, 3, 1, 2).cuda()
    outputs = gpu.stage_outputs(images, torch.from_numpy(metas))
    for key, value in outputs.items():
        assert value.device.type == "cuda", key
        if key in ("res5c_out", "fpn_p2", "rpn_class", "mrcnn_detection", "mrcnn_mask"):
            scale = float(maps[key].abs().max())
            torch.testing.assert_close(value.cpu(), maps[key], rtol=1e-3, atol=1e-4 * scale, msg=key)
    results = gpu.detect(_images())
    assert [sorted(r) for r in results] == [["class_ids", "masks", "rois", "scores"]] * 2


# ---------------------------------------------------------------------------------------- matterport's goldens
# reference/matterport_<A|B>.npz and matterport_layout_<A|B>.json come from matterport's own code
# (reference/matterport_oracle.py) run with the seeded weights of tests.matterport_h5; the same
# weights load here with impls.port.load_keras2_h5 (strict). float32 convolutions sum in another
# order, so RPN scores closer than ~1e-6 may swap places in the proposals' NMS order: the ROIs,
# detections and detect()'s instances are compared as sets of rows, the feature maps exactly
# (relative 1e-4 of each map's largest value).

@functools.lru_cache(maxsize=1)
def _golden_model(key):
    path, layout = golden_layout(key)
    config = mr.Config(**{k: v for k, v in layout["config"].items() if k not in mr.Config.COMPUTED})
    model = MaskRCNN(config)
    load_seeded_weights(model, layout)
    return path, config, model


@pytest.mark.parametrize("key, photo", golden_cases())
def test_feature_agrees_with_matterports_goldens(key, photo):
    from skimage import data

    path, config, model = _golden_model(key)
    golden = dict(np.load(path))
    p = f"{photo}."
    image = getattr(data, photo)()
    assert (digest(image.astype(np.uint8)) == golden[p + "image_digest"]).all()
    molded, metas, windows = mr.mold_inputs([image], config)
    assert (digest(molded) == golden[p + "molded_digest"]).all()
    assert (digest(metas.astype(np.float32)) == golden[p + "meta_digest"]).all()
    np.testing.assert_array_equal(windows[0], golden[p + "window"])
    assert (digest(mr.anchors(config, molded.shape[1:])) == golden[p + "anchors_digest"]).all()

    maps = model.stage_outputs(torch.from_numpy(molded).permute(0, 3, 1, 2), metas)
    nhwc = {name: (value.permute(0, 2, 3, 1) if name.startswith(("res", "fpn_")) else value).numpy()
            for name, value in maps.items()}
    assert_feature_maps_match_goldens(nhwc, golden, p, config)

    # The proposals as sets (near-tied RPN scores may take each other's place in NMS).
    rois, ref_rois = maps["ROI"].numpy()[0], golden[p + "ROI"][0]
    match = match_rows(rois, ref_rois, 1e-4)
    assert (match >= 0).mean() >= 0.99, f"only {(match >= 0).mean():.3f} of the ROIs are matterport's"
    # Each matched ROI's class probabilities and deltas, but for the few ROIs on the bottom or
    # right edge whose pooling is chaotic (see assert_only_edge_rows_differ).
    ours, theirs = np.flatnonzero(match >= 0), match[match >= 0]
    probs = maps["mrcnn_class"].numpy()[0]
    classes = probs[ours].argmax(1)
    deltas = maps["mrcnn_bbox"].numpy()[0][ours, classes]
    ref = golden[p + "mrcnn_bbox.argmax"][theirs]
    differ = ((classes != golden[p + "mrcnn_class.argmax"][theirs])
              | (np.abs(probs[ours].max(1) - golden[p + "mrcnn_class.max"][theirs]) > 1e-4)
              | (np.abs(deltas - ref).max(1) > 1e-4 * np.abs(ref).max()))
    assert_only_edge_rows_differ(differ, rois[ours])

    # Detections as sets of (box, class, score) rows; each matched one's mask.
    detections, ref_detections = maps["mrcnn_detection"].numpy()[0], golden[p + "mrcnn_detection"][0]
    kept, ref_kept = detections[detections[:, 4] > 0], ref_detections[ref_detections[:, 4] > 0]
    assert abs(len(kept) - len(ref_kept)) <= max(1, len(ref_kept) // 50)
    match = match_rows(kept, ref_kept, 1e-4)
    _mostly(match >= 0, "mrcnn_detection", fraction=0.05)
    rows = np.flatnonzero(detections[:, 4] > 0)
    masks = maps["mrcnn_mask"].numpy()[0, rows, :, :, detections[rows, 4].astype(int)]
    ours = np.flatnonzero(match >= 0)
    _mostly(np.abs(masks[ours] - golden[p + "mrcnn_mask"][match[ours]]).max((1, 2)) <= 1e-4, "mrcnn_mask",
            fraction=0.05)

    # detect()'s instances (unmolded from the same outputs), as sets.
    result = mr.unmold_detections(maps["mrcnn_detection"].numpy()[0], maps["mrcnn_mask"].numpy()[0], image.shape,
                                  molded[0].shape, windows[0])
    assert_detect_equals_matterports(*result, golden, golden_masks(golden, p), p)


def _mostly(ok, what, fraction=0.01):
    """All but at most max(1, fraction) of the rows agree (see the comment on edge boxes above)."""
    ok = np.asarray(ok, bool)
    allowed = max(1, int(fraction * len(ok)))
    assert (~ok).sum() <= allowed, f"{what}: {(~ok).sum()} of {len(ok)} rows differ from matterport's (max {allowed})"
