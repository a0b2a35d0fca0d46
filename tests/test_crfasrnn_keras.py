"""impls.crfasrnn_keras, crfasrnn_keras's pre-processing and label image (checked here against
a few-line computation of what its util.py does; reference/ holds the original's own output),
predict on both frameworks, and the demo command's refusals: no weights, a file missing a layer,
a grayscale image."""

import numpy as np
import pytest
from PIL import Image

from impls import crfasrnn_keras
from impls.examples import crfrnn_demo
from impls.voc import palette

MEANS_RGB = (123.68, 116.779, 103.939)


def _save(tmp_path, pixels, name="image.png"):
    path = tmp_path / name
    Image.fromarray(pixels).save(path)
    return path


def _expected_batch(pixels, size=500):
    """What crfasrnn_keras does, written out: bilinear fit of the longer side, first three
    channels, minus the means (float32), BGR, zero padding at the bottom and right."""
    h, w = pixels.shape[:2]
    new_h, new_w = (size, int(w * size / h)) if h >= w else (int(h * size / w), size)
    resized = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.Resampling.BILINEAR))
    out = np.zeros((1, size, size, 3), np.float32)
    out[0, :new_h, :new_w] = (resized[:, :, :3].astype(np.float32) - np.float32(MEANS_RGB))[:, :, ::-1]
    return out, new_h, new_w


@pytest.mark.parametrize("shape", [(77, 123, 3), (77, 123, 4), (40, 700, 3), (640, 35, 3), (500, 500, 3)],
                         ids=["rgb-123x77", "rgba-123x77", "wide", "tall", "exact"])
def test_feature_preprocessed_image_is_crfasrnn_keras_batch(shape, tmp_path):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    batch, img_h, img_w, original_size = crfasrnn_keras.get_preprocessed_image(_save(tmp_path, pixels))
    expected, new_h, new_w = _expected_batch(pixels)
    assert batch.dtype == np.float32 and batch.shape == (1, 500, 500, 3) and batch.flags.c_contiguous
    assert (img_h, img_w, original_size) == (new_h, new_w, (shape[1], shape[0]))
    assert max(img_h, img_w) == 500
    np.testing.assert_array_equal(batch, expected)
    assert not batch[0, img_h:].any() and not batch[0, :, img_w:].any()  # the padding is zeros


def _golden():
    """The original's run_demo.py on coffee.png (reference/crfasrnn_oracle.py)."""
    from reference import generate

    with np.load(generate.FOLDER / "crfasrnn_keras.npz", allow_pickle=False) as data:
        return dict(data)


def _digest(array):
    import hashlib

    return np.frombuffer(hashlib.sha256(np.ascontiguousarray(array).tobytes()).digest(), np.uint8)


def test_feature_preprocessed_photo_is_bit_for_bit_the_originals(tmp_path):
    """scikit-image's coffee as a PNG, as the oracle ran it: the same float32 bytes as the
    original's util.get_preprocessed_image gave."""
    skimage_data = pytest.importorskip("skimage.data")
    golden = _golden()
    path = _save(tmp_path, skimage_data.coffee(), "coffee.png")
    batch, img_h, img_w, original_size = crfasrnn_keras.get_preprocessed_image(path)
    assert batch.shape == tuple(golden["input_shape"]) and (img_h, img_w) == tuple(golden["image_hw"])
    assert original_size == (600, 400)
    np.testing.assert_array_equal(_digest(batch), golden["input_digest"])


def test_feature_label_image_of_the_originals_labels_is_the_originals():
    """The original's argmax labels as scores: get_label_image gives the pixels its own gave."""
    golden = _golden()
    scores = np.eye(21, dtype=np.float32)[golden["labels"]]
    img_h, img_w = golden["image_hw"]
    image = crfasrnn_keras.get_label_image(scores, int(img_h), int(img_w), (600, 400))
    pixels = np.asarray(image)
    assert pixels.shape == tuple(golden["label_png_shape"])
    np.testing.assert_array_equal(_digest(pixels.astype(np.uint8)), golden["label_png_digest"])


def test_feature_preprocess_is_bgr_minus_the_rgb_means():
    """A solid colour stays solid through the resize: each channel is its value minus its mean."""
    pixels = np.empty((30, 50, 3), np.uint8)
    pixels[:] = (200, 100, 10)
    batch, img_h, img_w, _ = crfasrnn_keras.preprocess(pixels)
    blue, green, red = np.float32(10) - np.float32(103.939), np.float32(100) - np.float32(116.779), \
        np.float32(200) - np.float32(123.68)
    assert (img_h, img_w) == (300, 500)
    assert np.all(batch[0, :img_h, :img_w] == np.array([blue, green, red], np.float32))


def test_feature_preprocess_without_size_keeps_the_image_size():
    pixels = np.random.default_rng(0).integers(0, 256, (37, 61, 3), dtype=np.uint8)
    batch, img_h, img_w, original_size = crfasrnn_keras.preprocess(pixels, size=None)
    assert batch.shape == (1, 37, 61, 3) and (img_h, img_w, original_size) == (37, 61, (61, 37))
    np.testing.assert_array_equal(batch[0], (pixels.astype(np.float32) - np.float32(MEANS_RGB))[:, :, ::-1])


def test_exception_grayscale_image_names_the_file_and_mode(tmp_path):
    path = _save(tmp_path, np.zeros((20, 30), np.uint8), "gray.png")
    with pytest.raises(ValueError, match=r"gray\.png is a 'L' image; only RGB images are supported.*convert"):
        crfasrnn_keras.get_preprocessed_image(path)


@pytest.mark.parametrize(("image", "size", "error", "match"), [
    (np.zeros((20, 30), np.uint8), 500, ValueError, r"'image' must be an RGB array \(H, W, 3\).*got shape \(20, 30\)"),
    (np.zeros((20, 30, 2), np.uint8), 500, ValueError, r"'image' must be an RGB array"),
    (np.zeros((20, 30, 3), np.float32), 500, TypeError, r"'image' must be a uint8 RGB array, got dtype float32"),
    (np.zeros((20, 30, 3), np.uint8), 0, ValueError, r"'size' must be a positive integer, got 0"),
], ids=["2-D", "two-channels", "float", "size-0"])
def test_exception_preprocess_refuses(image, size, error, match):
    with pytest.raises(error, match=f"preprocess: argument {match}"):
        crfasrnn_keras.preprocess(image, size)


def test_feature_label_image_is_voc_palette_png_at_the_original_size():
    labels = np.random.default_rng(0).integers(0, 21, (250, 250))
    logits = np.random.default_rng(1).normal(size=(500, 500, 21)).astype(np.float32)
    logits[:250, :250] += 100.0 * np.eye(21, dtype=np.float32)[labels]  # the crop's argmax is `labels`
    image = crfasrnn_keras.get_label_image(logits, 250, 250, (500, 500))
    assert image.mode == "P" and image.size == (500, 500)
    assert np.array_equal(np.asarray(image.getpalette(), np.uint8).reshape(-1, 3), palette())
    np.testing.assert_array_equal(np.asarray(image), np.kron(labels, np.ones((2, 2), np.int64)))  # nearest, 2x
    probabilities = np.exp(logits - logits.max(axis=2, keepdims=True))
    probabilities /= probabilities.sum(axis=2, keepdims=True)
    same = crfasrnn_keras.get_label_image(probabilities[None], 250, 250, (500, 500))  # a batch of one too
    np.testing.assert_array_equal(np.asarray(same), np.asarray(image))


def test_exception_label_image_refuses_a_batch_of_two():
    with pytest.raises(ValueError, match=r"get_label_image: argument 'probs' must be \(H, W, C\).*\(2, 4, 4, 21\)"):
        crfasrnn_keras.get_label_image(np.zeros((2, 4, 4, 21)), 4, 4, (4, 4))


def test_smoke_module_imports_without_a_framework():
    """The compatibility module needs NumPy and Pillow only; CrfRnnLayer comes on first use."""
    import subprocess
    import sys

    code = ("import sys; import impls.crfasrnn_keras as m; "
            "assert not {'torch', 'tensorflow', 'keras'} & set(sys.modules), sorted(sys.modules); "
            "assert 'CrfRnnLayer' not in m.__all__")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_exception_unknown_attribute_and_framework():
    with pytest.raises(AttributeError, match="has no attribute 'CrfRnnLayers'"):
        crfasrnn_keras.CrfRnnLayers  # noqa: B018
    with pytest.raises(ValueError, match=r"get_crfrnn_model_def: argument 'framework' must be one of"):
        crfasrnn_keras.get_crfrnn_model_def("caffe")


def test_exception_predict_refuses_what_is_not_a_model():
    with pytest.raises(TypeError, match=r"predict: argument 'model' must be a torch.nn.Module or a Keras model, "
                                        r"got object"):
        crfasrnn_keras.predict(object(), np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"predict: argument 'batch' must have 3 channels"):
        crfasrnn_keras.predict(object(), np.zeros((1, 8, 8, 4), np.float32))


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_feature_predict_returns_nhwc_scores(framework):
    """A randomly initialised CrfRnnNet on a small batch: NHWC class scores of the input's size,
    the torch model's own NCHW output transposed."""
    module = pytest.importorskip({"torch": "impls.torch", "tf": "impls.tf"}[framework])
    model = module.CrfRnnNet(num_classes=3, iterations=1)
    batch = np.random.default_rng(0).normal(0.0, 50.0, (1, 36, 44, 3)).astype(np.float32)
    scores = crfasrnn_keras.predict(model, batch)
    assert scores.shape == (1, 36, 44, 3) and scores.dtype == np.float32 and np.isfinite(scores).all()
    if framework == "torch":
        import torch

        assert not model.training
        with torch.no_grad():
            direct = model(torch.from_numpy(batch.transpose(0, 3, 1, 2).copy())).numpy()
        np.testing.assert_array_equal(scores, direct.transpose(0, 2, 3, 1))


def test_feature_crfrnn_layer_is_the_tf_drop_in():
    pytest.importorskip("tensorflow")
    from impls.crfasrnn_keras import CrfRnnLayer as lazy
    from impls.tf.crfrnn import CrfRnnLayer

    assert lazy is CrfRnnLayer


# The demo command ----------------------------------------------------------------------------

@pytest.mark.parametrize("weights", [None, "absent.h5"], ids=["no-weights", "missing-file"])
def test_exception_demo_without_weights_names_where_they_come_from(weights, tmp_path, capsys):
    image = _save(tmp_path, np.zeros((20, 30, 3), np.uint8))
    argv = [str(image), "--output", str(tmp_path / "labels.png")]
    argv += ["--weights", str(tmp_path / weights)] if weights else []
    assert crfrnn_demo.main(argv) == 2
    message = capsys.readouterr().err
    assert crfasrnn_keras.WEIGHTS_URL in message and "not downloaded automatically" in message
    assert ("no --weights given" if weights is None else "absent.h5 not found") in message
    assert not (tmp_path / "labels.png").exists()


def test_exception_demo_refuses_a_weight_file_missing_a_layer(tmp_path, capsys):
    """Every layer of the network but score-pool3, in the right shapes: the loader names the
    missing layer, the command exits 1 with that message alone and writes nothing."""
    pytest.importorskip("torch")
    h5py = pytest.importorskip("h5py")
    from impls._models import crfasrnn_layers
    from tests.keras2_h5 import write_keras2_h5

    layers = [(name, [(f"{name}/{weight}:0", np.zeros((1,), np.float32)) for weight, _ in weights])
              for name, _, weights in crfasrnn_layers() if name != "score-pool3"]
    weights = write_keras2_h5(tmp_path / "partial.h5", layers)
    # The right shapes, but unwritten (read as zeros): a small file, quick to write.
    shapes = {f"{name}/{name}/{weight}:0": shape for name, _, named in crfasrnn_layers() for weight, shape in named}
    with h5py.File(weights, "a") as file:
        for name, named in layers:
            for weight, _ in named:
                del file[f"{name}/{weight}"]
                file.create_dataset(f"{name}/{weight}", shape=shapes[f"{name}/{weight}"], dtype="float32")
    image = _save(tmp_path, np.zeros((20, 30, 3), np.uint8))
    status = crfrnn_demo.main([str(image), "--weights", str(weights), "--framework", "torch",
                               "--output", str(tmp_path / "labels.png")])
    captured = capsys.readouterr()
    assert status == 1, captured
    assert "score-pool3" in captured.err and "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "labels.png").exists()


def test_exception_demo_refuses_a_grayscale_image(tmp_path, capsys):
    image = _save(tmp_path, np.zeros((20, 30), np.uint8), "gray.png")
    status = crfrnn_demo.main([str(image), "--weights", str(_save(tmp_path, np.zeros((2, 2, 3), np.uint8))),
                               "--output", str(tmp_path / "labels.png")])
    assert status == 1
    assert "gray.png is a 'L' image; only RGB images are supported" in capsys.readouterr().err
