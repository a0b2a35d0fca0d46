"""matterport's Mask R-CNN in Keras 3 (impls.tf.MaskRCNN): matterport's layer names and weight
shapes (so its Keras 2 .h5 files load by name), per-stage shapes, detect's results, and parity
with the torch twin on the same seeded matterport-layout weights, stage by stage."""

import functools

import numpy as np
import pytest

from impls import _maskrcnn, port

tf = pytest.importorskip("tensorflow")

from impls.tf.maskrcnn import MaskRCNN  # noqa: E402
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
    matterport_weights,
)

PARITY = 1e-4  # relative max error of a feature map (max |torch - TF| / max |TF|)
SMALL = dict(NUM_CLASSES=3, BACKBONE="resnet50", IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, POST_NMS_ROIS_INFERENCE=100)


def _config(**overrides):
    return _maskrcnn.Config(**{**SMALL, **overrides})


def _metas(config, count, size):
    """matterport's image metas of `count` molded (size, size) images without padding."""
    meta = _maskrcnn.compose_image_meta(0, (size, size, 3), (size, size, 3), (0, 0, size, size), 1.0,
                                        np.zeros(config.NUM_CLASSES))
    return np.stack([meta] * count).astype(np.float32)


def _built(config, size=64):
    model = MaskRCNN(config)
    model(np.zeros((1, size, size, 3), np.float32), _metas(config, 1, size))
    return model


def matterport_layout(config):
    """The layout of matterport's save_weights file for `config` (as tests.matterport_h5 reads from
    reference/matterport_layout_*.json), from impls._maskrcnn.weighted_layers: the RPN's layers
    nested in "rpn_model"."""
    names, weights = [], {}
    for layer, _, shapes in _maskrcnn.weighted_layers(config):
        group = "rpn_model" if layer in _maskrcnn.RPN_LAYERS else layer
        if group not in weights:
            names.append(group)
        weights.setdefault(group, []).extend((f"{layer}/{weight}:0", list(shape)) for weight, shape in shapes)
    return {"layer_names": names, "weights": weights, "config": {"NUM_CLASSES": config.NUM_CLASSES}}


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory):
    config = _config()
    path = tmp_path_factory.mktemp("maskrcnn") / "seeded_matterport.h5"
    return config, write_keras2_h5(path, matterport_weights(matterport_layout(config)))


@pytest.fixture(scope="module")
def seeded(small_h5):
    config, path = small_h5
    model = _built(config)
    report = port.load_keras2_h5(model, path)
    return model, report


def _images(count=2, seed=0):
    """Molded (N, 128, 128, 3) images: smooth blobs on a ramp, minus MEAN_PIXEL (a scene more than noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    images = []
    for _ in range(count):
        image = np.stack([x, y, 255 - x], axis=-1) * 0.5
        for _ in range(4):
            cy, cx, r = rng.uniform(20, 108), rng.uniform(20, 108), rng.uniform(8, 30)
            image += (((y - cy) ** 2 + (x - cx) ** 2) < r * r)[..., None] * rng.uniform(-120, 120, 3)
        images.append(np.clip(image, 0, 255))
    return (np.stack(images) - _config().MEAN_PIXEL).astype(np.float32)


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_cardinality_layer_names_and_shapes_are_matterports(backbone):
    config = _config(BACKBONE=backbone)
    model = _built(config)
    layers = port._layers.keras_layers(model)
    assert list(layers) == _maskrcnn.weighted_layer_names(config)
    expected = {name: dict(weights) for name, _, weights in _maskrcnn.weighted_layers(config)}
    for name, layer in layers.items():
        got = {v.path.rsplit("/", 1)[-1]: tuple(v.shape) for v in layer.weights if v.path.split("/")[-2] == name}
        assert got == expected[name], name
    # The RPN is one nested layer, rpn_model, whose variables end in rpn_conv_shared/kernel, ...
    assert [v.path.split("/")[-2:] for v in model.rpn_model.weights][::2] == [
        ["rpn_conv_shared", "kernel"], ["rpn_class_raw", "kernel"], ["rpn_bbox_pred", "kernel"]]
    bns = [layer for name, layer in layers.items() if "bn" in name]
    assert bns and all(layer.epsilon == 1e-3 for layer in bns)


def test_feature_matterport_h5_loads_strictly(seeded, small_h5):
    model, report = seeded
    assert report.complete, report.problems
    # Every layer, the RPN's three (one nested group, rpn_model, in the file) under their own names.
    assert [target for _, target, _, _ in report.loaded] == _maskrcnn.weighted_layer_names(small_h5[0])
    weights = dict(matterport_weights(matterport_layout(small_h5[0])))
    np.testing.assert_array_equal(model.rpn_model.rpn_bbox_pred.kernel.numpy(),
                                  dict(weights["rpn_model"])["rpn_bbox_pred/kernel:0"])
    np.testing.assert_array_equal(model.named["mrcnn_class_logits"].kernel.numpy(),
                                  dict(weights["mrcnn_class_logits"])["mrcnn_class_logits/kernel:0"])


def test_cardinality_stage_outputs_shapes(seeded):
    model, _ = seeded
    config = model.config
    outputs = model.stage_outputs(_images(), _metas(config, 2, 128))
    assert list(outputs) == _maskrcnn.stage_keys(config)
    shapes = {name: tuple(value.shape) for name, value in outputs.items()}
    anchors = 3 * (32 * 32 + 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2)
    assert shapes == {
        "res2c_out": (2, 32, 32, 256), "res3d_out": (2, 16, 16, 512), "res4f_out": (2, 8, 8, 1024),
        "res5c_out": (2, 4, 4, 2048), "fpn_p2": (2, 32, 32, 256), "fpn_p3": (2, 16, 16, 256),
        "fpn_p4": (2, 8, 8, 256), "fpn_p5": (2, 4, 4, 256), "fpn_p6": (2, 2, 2, 256),
        "rpn_class": (2, anchors, 2), "rpn_bbox": (2, anchors, 4), "ROI": (2, 100, 4), "mrcnn_class": (2, 100, 3),
        "mrcnn_bbox": (2, 100, 3, 4), "mrcnn_detection": (2, 100, 6), "mrcnn_mask": (2, 100, 28, 28, 3)}
    assert anchors == len(_maskrcnn.anchors(config, (128, 128)))
    np.testing.assert_allclose(outputs["rpn_class"].numpy().sum(-1), 1, rtol=1e-5)
    detections = outputs["mrcnn_detection"].numpy()
    found = detections[..., 4] > 0
    assert (detections[found][:, 5] >= config.DETECTION_MIN_CONFIDENCE).all()
    detections_call, masks_call = model(_images(), _metas(config, 2, 128))
    np.testing.assert_array_equal(detections_call.numpy(), detections)
    np.testing.assert_array_equal(masks_call.numpy(), outputs["mrcnn_mask"].numpy())


@pytest.mark.parametrize("until, last_key", [("res2c_out", "res5c_out"), ("fpn_p6", "fpn_p6"),
                                             ("rpn_class", "rpn_bbox"), ("ROI", "ROI"), ("mrcnn_bbox", "mrcnn_bbox"),
                                             ("mrcnn_detection", "mrcnn_detection")])
def test_feature_stage_outputs_until_stops_after_that_step(seeded, until, last_key):
    model, _ = seeded
    config = model.config
    images, metas = _images(), _metas(config, 2, 128)
    full, partial = model.stage_outputs(images, metas), model.stage_outputs(images, metas, until=until)
    keys = _maskrcnn.stage_keys(config)
    assert list(partial) == keys[:keys.index(last_key) + 1]
    for key, value in partial.items():
        np.testing.assert_array_equal(value.numpy(), full[key].numpy(), err_msg=key)
    with pytest.raises(ValueError, match="MaskRCNN: argument 'until' must be one of stage_keys"):
        model.stage_outputs(images, metas, until="rpn")


def test_cardinality_detect_returns_matterports_structure(seeded):
    model, _ = seeded
    rng = np.random.default_rng(5)
    images = [(rng.random((100, 120, 3)) * 255).astype(np.uint8), (rng.random((90, 128, 3)) * 255).astype(np.uint8)]
    results = model.detect(images)
    assert len(results) == 2
    for image, result in zip(images, results, strict=True):
        assert set(result) == {"rois", "class_ids", "scores", "masks"}
        count = len(result["rois"])
        assert result["rois"].dtype == np.int32 and result["rois"].shape == (count, 4)
        assert result["class_ids"].shape == (count,) and result["scores"].shape == (count,)
        assert result["masks"].dtype == bool and result["masks"].shape == (*image.shape[:2], count)
        assert ((result["class_ids"] >= 1) & (result["class_ids"] < 3)).all()


def test_cardinality_batched_outputs_equal_image_by_image(seeded):
    model, _ = seeded
    images, metas = _images(seed=7), _metas(model.config, 2, 128)
    batched = model.stage_outputs(images, metas)
    for index in range(2):
        alone = model.stage_outputs(images[index:index + 1], metas[index:index + 1])
        for name in ("fpn_p2", "rpn_class", "ROI", "mrcnn_detection"):
            np.testing.assert_allclose(alone[name].numpy()[0], batched[name].numpy()[index], rtol=1e-5, atol=1e-5,
                                       err_msg=name)


def test_feature_the_compiled_pyramid_agrees_with_eager(seeded, small_h5):
    compiled, _ = seeded
    config, path = small_h5
    eager = _built(config)
    eager.use_tf_function = False
    port.load_keras2_h5(eager, path)
    images, metas = _images(seed=11), _metas(config, 2, 128)
    ours, theirs = eager.stage_outputs(images, metas), compiled.stage_outputs(images, metas)
    assert list(ours) == list(theirs)
    for name in (*_maskrcnn.stage_output_names(config.BACKBONE), "fpn_p2", "fpn_p6", "rpn_class", "rpn_bbox"):
        a, b = ours[name].numpy(), theirs[name].numpy()
        assert np.abs(a - b).max() <= PARITY * np.abs(b).max(), name
    np.testing.assert_array_equal(ours["mrcnn_detection"].numpy()[..., 4], theirs["mrcnn_detection"].numpy()[..., 4])


def test_feature_config_round_trips_through_get_config():
    model = MaskRCNN(_config(DETECTION_MIN_CONFIDENCE=0.5), name="mine")
    again = MaskRCNN.from_config(model.get_config())
    assert again.name == "mine" and again.config.to_dict().keys() == model.config.to_dict().keys()
    assert again.use_tf_function is True
    assert MaskRCNN.from_config({**model.get_config(), "use_tf_function": False}).use_tf_function is False
    assert again.config.DETECTION_MIN_CONFIDENCE == 0.5 and again.config.BACKBONE == "resnet50"
    np.testing.assert_array_equal(again.config.MEAN_PIXEL, model.config.MEAN_PIXEL)


def test_exception_errors_name_the_argument():
    config = _config()
    with pytest.raises(TypeError, match="MaskRCNN: argument 'config' must be an impls._maskrcnn.Config"):
        MaskRCNN({"NUM_CLASSES": 3})
    with pytest.raises(TypeError, match="MaskRCNN: argument 'use_tf_function' must be a bool"):
        MaskRCNN(config, use_tf_function="yes")
    model = MaskRCNN(config)
    with pytest.raises(ValueError, match="argument 'molded_images' must have height and width divisible by 64"):
        model.stage_outputs(np.zeros((1, 96, 64, 3), np.float32), _metas(config, 1, 64))
    with pytest.raises(ValueError, match="argument 'image_metas' must have shape"):
        model.stage_outputs(np.zeros((1, 64, 64, 3), np.float32), _metas(config, 2, 64))
    with pytest.raises(ValueError, match="argument 'molded_images' must have 3 channels"):
        model.stage_outputs(np.zeros((1, 64, 64, 4), np.float32), _metas(config, 1, 64))
    with pytest.raises(TypeError, match="argument 'molded_images' must have a floating dtype"):
        model.stage_outputs(np.zeros((1, 64, 64, 3), np.int32), _metas(config, 1, 64))


def test_feature_agrees_with_the_torch_twin_stage_by_stage(seeded, small_h5):
    torch = pytest.importorskip("torch")
    torch_maskrcnn = pytest.importorskip("impls.torch.maskrcnn")
    config, path = small_h5
    keras_model, _ = seeded
    torch_model = torch_maskrcnn.MaskRCNN(config)
    assert port.load_keras2_h5(torch_model, path).complete
    images, metas = _images(seed=3), _metas(config, 2, 128)
    keras_maps = {k: v.numpy() for k, v in keras_model.stage_outputs(images, metas).items()}
    torch_maps = torch_model.stage_outputs(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), metas)
    assert list(torch_maps) == list(keras_maps)
    differences = dict(port.layer_differences(torch_maps, keras_maps))
    for name in (*_maskrcnn.stage_output_names(config.BACKBONE), "fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6",
                 "rpn_class", "rpn_bbox"):
        assert differences[name] <= PARITY, (name, differences)
    ours = torch_maps["mrcnn_detection"].numpy()
    theirs = keras_maps["mrcnn_detection"]
    np.testing.assert_array_equal(ours[..., 4], theirs[..., 4])  # the same classes, in the same order
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert (theirs[..., 4] > 0).any(), "the seeded weights should give detections"
    np.testing.assert_allclose(torch_maps["mrcnn_mask"].numpy(), keras_maps["mrcnn_mask"], atol=1e-4)


# ---------------------------------------------------------------------------------------- matterport's goldens
# reference/matterport_<A|B>.npz (reference/matterport_oracle.py: matterport's own code on the
# seeded weights of tests.matterport_h5), compared as tests/test_maskrcnn.py does for torch: the
# feature maps within 1e-4 of each map's largest value, the proposals, detections and detect()'s
# instances as sets of rows (near-tied RPN scores may swap places in NMS).

@functools.lru_cache(maxsize=1)
def _golden_model(key):
    path, layout = golden_layout(key)
    config = _maskrcnn.Config(**{k: v for k, v in layout["config"].items() if k not in _maskrcnn.Config.COMPUTED})
    model = _built(config, config.IMAGE_SHAPE[0])
    load_seeded_weights(model, layout)
    return path, config, model


@pytest.mark.parametrize("key, photo", golden_cases())
def test_feature_agrees_with_matterports_goldens(key, photo):
    data = pytest.importorskip("skimage.data")
    path, config, model = _golden_model(key)
    golden = dict(np.load(path))
    p = f"{photo}."
    image = getattr(data, photo)()
    assert (digest(image.astype(np.uint8)) == golden[p + "image_digest"]).all()
    molded, metas, windows = _maskrcnn.mold_inputs([image], config)
    assert (digest(molded) == golden[p + "molded_digest"]).all()

    maps = {name: value.numpy() for name, value in model.stage_outputs(molded, metas).items()}
    assert_feature_maps_match_goldens(maps, golden, p, config)

    rois, ref_rois = maps["ROI"][0], golden[p + "ROI"][0]
    match = match_rows(rois, ref_rois, 1e-4)
    assert (match >= 0).mean() >= 0.99, f"only {(match >= 0).mean():.3f} of the ROIs are matterport's"
    ours, theirs = np.flatnonzero(match >= 0), match[match >= 0]
    # Each matched ROI's class and deltas, but for the few ROIs on the bottom or right edge whose
    # pooling is chaotic (see assert_only_edge_rows_differ).
    probs = maps["mrcnn_class"][0]
    classes, ref_classes = probs[ours].argmax(1), golden[p + "mrcnn_class.argmax"][theirs]
    ref = golden[p + "mrcnn_bbox.argmax"][theirs]
    deltas = maps["mrcnn_bbox"][0][ours, classes]
    differ = ((classes != ref_classes) | (np.abs(probs[ours].max(1) - golden[p + "mrcnn_class.max"][theirs]) > 1e-4)
              | (np.abs(deltas - ref).max(1) > 1e-4 * np.abs(ref).max()))
    assert_only_edge_rows_differ(differ, rois[ours])

    detections, ref_detections = maps["mrcnn_detection"][0], golden[p + "mrcnn_detection"][0]
    kept, ref_kept = detections[detections[:, 4] > 0], ref_detections[ref_detections[:, 4] > 0]
    assert abs(len(kept) - len(ref_kept)) <= max(1, len(ref_kept) // 50)
    match = match_rows(kept, ref_kept, 1e-4)
    assert (match >= 0).mean() >= 0.95, f"only {(match >= 0).mean():.3f} of the detections are matterport's"
    rows = np.flatnonzero(detections[:, 4] > 0)
    masks = maps["mrcnn_mask"][0, rows, :, :, detections[rows, 4].astype(int)]
    ours = np.flatnonzero(match >= 0)
    np.testing.assert_allclose(masks[ours], golden[p + "mrcnn_mask"][match[ours]], atol=1e-4)

    # detect() itself: matterport's dicts, to the bar.
    (result,) = model.detect([image])
    assert_detect_equals_matterports(result["rois"], result["class_ids"], result["scores"], result["masks"], golden,
                                     golden_masks(golden, p), p)
