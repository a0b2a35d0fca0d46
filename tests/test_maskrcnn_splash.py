"""The balloon-splash command (impls.examples.maskrcnn_splash, matterport's balloon sample) on
seeded weights in matterport's layout (tests.matterport_h5, layout A: ResNet-50, 3 classes,
256 px): the PNG is impls.numpy.color_splash of the model's own detect() at the input's size; the
refusals: no weights, a file that does not match the network, a bad image size, a 16-bit image;
and the command run as `python -m` in a subprocess."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from impls.examples import maskrcnn_splash
from tests.inputs import module_env

# Layout A's configuration (reference/matterport_layout_A.json) as the command's options.
OPTIONS_A = ["--backbone", "resnet50", "--num-classes", "3", "--image-size", "256"]


def _save(path, pixels, mode=None):
    Image.fromarray(pixels, mode).save(path)
    return path


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """(weights .h5 of layout A, coffee.png (400 x 600 RGB))."""
    pytest.importorskip("h5py")
    import skimage.data

    from tests.matterport_h5 import write_matterport_h5

    folder = tmp_path_factory.mktemp("maskrcnn_splash")
    return (write_matterport_h5(folder / "seeded_A.h5", "A"),
            _save(folder / "coffee.png", skimage.data.coffee()))


def _config_a():
    return maskrcnn_splash.inference_config(backbone="resnet50", num_classes=3, image_size=256)


def test_feature_config_is_the_balloon_samples_with_the_overrides():
    config = maskrcnn_splash.inference_config()
    assert (config.NUM_CLASSES, config.BACKBONE, config.IMAGE_MIN_DIM, config.IMAGE_MAX_DIM) == (2, "resnet101",
                                                                                               800, 1024)
    assert (config.DETECTION_MIN_CONFIDENCE, config.BATCH_SIZE) == (0.9, 1)
    config = _config_a()
    assert (config.NUM_CLASSES, config.BACKBONE, config.IMAGE_MIN_DIM, config.IMAGE_MAX_DIM) == (3, "resnet50",
                                                                                               256, 256)


@pytest.fixture(scope="module")
def reference(seeded):
    """(coffee's pixels, the detect() result of a torch model loaded apart from the command's)."""
    pytest.importorskip("torch")
    weights, image_path = seeded
    image = np.asarray(Image.open(image_path))
    model, report = maskrcnn_splash.load_model(weights, _config_a(), "torch")
    assert report.complete
    return image, model.detect([image])[0]


def test_feature_splash_png_is_color_splash_of_detect(seeded, reference, tmp_path, capsys):
    """main() writes numpy's color_splash of the masks that a separately loaded torch model's
    detect() finds on the same image, at the input's size, and says how many instances."""
    from impls.numpy import color_splash

    weights, image_path = seeded
    image, result = reference
    output = tmp_path / "splash.png"
    assert maskrcnn_splash.main([str(image_path), "--weights", str(weights), *OPTIONS_A,
                                 "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "384 weight(s) of 133 layer(s) loaded; 0 missing, 0 unused, 0 mismatched" in out
    count = len(result["class_ids"])
    assert count > 0, "layout A's seeded weights find instances on coffee at confidence 0.9"
    assert f"torch: {count} instance(s)" in out and "600x400" in out
    written = np.asarray(Image.open(output))
    assert written.shape == image.shape and written.dtype == np.uint8
    np.testing.assert_array_equal(written, color_splash(image, result["masks"]))
    # Colour where an instance is, grey elsewhere.
    anywhere = result["masks"].any(-1)
    assert 0 < anywhere.sum() < anywhere.size
    np.testing.assert_array_equal(written[anywhere], image[anywhere])
    assert (written[~anywhere].max(-1) == written[~anywhere].min(-1)).all()


def test_feature_tf_splash_runs_on_the_same_weights(seeded, tmp_path, capsys):
    pytest.importorskip("tensorflow")
    weights, image_path = seeded
    output = tmp_path / "splash_tf.png"
    assert maskrcnn_splash.main([str(image_path), "--weights", str(weights), *OPTIONS_A, "--framework", "tf",
                                 "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "0 missing, 0 unused, 0 mismatched" in out and "tf: " in out and "instance(s)" in out
    assert np.asarray(Image.open(output)).shape == (400, 600, 3)


@pytest.mark.parametrize("weights", [None, "absent.h5"], ids=["no-weights", "missing-file"])
def test_exception_without_weights_names_where_they_come_from(weights, tmp_path, capsys):
    image = _save(tmp_path / "image.png", np.zeros((20, 30, 3), np.uint8))
    argv = [str(image), "--output", str(tmp_path / "splash.png")]
    argv += ["--weights", str(tmp_path / weights)] if weights else []
    assert maskrcnn_splash.main(argv) == 2
    message = capsys.readouterr().err
    assert "matterport-layout Mask R-CNN .h5 weights" in message and "mask_rcnn_balloon.h5" in message
    assert maskrcnn_splash.RELEASES_URL in message and "nothing is downloaded" in message
    assert ("no --weights given" if weights is None else "absent.h5 not found") in message
    assert not (tmp_path / "splash.png").exists()


def test_exception_refuses_a_weight_file_of_another_class_count(tmp_path, capsys):
    """Layout A's structure (3 classes) run with the balloon sample's 2: the loader names the
    mismatched heads, the command exits 1 with that message alone and writes nothing."""
    pytest.importorskip("torch")
    pytest.importorskip("h5py")
    from tests.keras2_h5 import write_keras2_h5
    from tests.matterport_h5 import matterport_skeleton

    weights = write_keras2_h5(tmp_path / "skeleton_A.h5", matterport_skeleton("A"))  # shapes only: small
    image = _save(tmp_path / "image.png", np.zeros((20, 30, 3), np.uint8))
    status = maskrcnn_splash.main([str(image), "--weights", str(weights), "--backbone", "resnet50",
                                   "--image-size", "256", "--output", str(tmp_path / "splash.png")])
    captured = capsys.readouterr()
    assert status == 1, captured
    assert "mrcnn_class_logits" in captured.err and "Traceback" not in captured.err + captured.out
    assert captured.out == ""
    assert not (tmp_path / "splash.png").exists()


@pytest.mark.parametrize("size", ["100", "0"])
def test_exception_image_size_not_a_multiple_of_64_is_a_usage_error(size, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        maskrcnn_splash.main([str(tmp_path / "image.png"), "--image-size", size])
    assert exit_info.value.code == 2
    assert "--image-size must be a positive multiple of 64" in capsys.readouterr().err


def test_exception_refuses_a_16_bit_image(tmp_path, capsys):
    image = _save(tmp_path / "deep.png", np.zeros((20, 30), np.uint16))  # Pillow: mode I;16
    weights = _save(tmp_path / "not_weights.png", np.zeros((2, 2, 3), np.uint8))  # never opened
    status = maskrcnn_splash.main([str(image), "--weights", str(weights), "--output", str(tmp_path / "s.png")])
    assert status == 1
    assert "deep.png is a 'I;16' image" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_feature_image_modes_become_rgb(tmp_path):
    """RGBA loses its alpha (matterport's load_image), grayscale and palette images become RGB."""
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 9, np.uint8)], axis=-1)
    np.testing.assert_array_equal(maskrcnn_splash.read_image(_save(tmp_path / "a.png", rgba)), rgb)
    np.testing.assert_array_equal(maskrcnn_splash.read_image(_save(tmp_path / "b.png", rgb)), rgb)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(maskrcnn_splash.read_image(_save(tmp_path / "g.png", gray)),
                                  np.repeat(gray[..., None], 3, -1))
    palette = Image.fromarray(rgb).quantize(8)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(maskrcnn_splash.read_image(tmp_path / "p.png"),
                                  np.asarray(palette.convert("RGB")))


# The command as a user runs it: `python -m impls.examples.maskrcnn_splash` from another folder,
# with the impls the tests import (the checkout, or the installed package under tox).

def _run(argv, cwd):
    return subprocess.run([sys.executable, "-m", "impls.examples.maskrcnn_splash", *argv], cwd=cwd,
                          env=module_env(), capture_output=True, text=True, timeout=300)


def test_exception_command_without_weights_exits_2(tmp_path):
    image = _save(tmp_path / "image.png", np.zeros((20, 30, 3), np.uint8))
    done = _run([image.name], tmp_path)
    assert done.returncode == 2, done
    assert "nothing is downloaded" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "splash.png").exists()


@pytest.mark.slow
def test_smoke_command_writes_the_splash(seeded, tmp_path):
    pytest.importorskip("torch")
    weights, image_path = seeded
    done = _run([str(image_path), "--weights", str(weights), *OPTIONS_A], tmp_path)
    assert done.returncode == 0, done
    assert "instance(s)" in done.stdout
    assert np.asarray(Image.open(tmp_path / "splash.png")).shape == (400, 600, 3)
