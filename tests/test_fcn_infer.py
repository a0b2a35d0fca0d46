"""FCN's users' own flow: fcn.berkeleyvision.org's infer.py, run as the authors wrote it with only
`import caffe` changed to `from impls import caffe`, and `python -m impls.examples.fcn_infer`, on a
JPEG with seeded weights in the layout of fcn8s-heavy-pascal.caffemodel (which cannot be downloaded
here)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.caffe_files import CAFFE_FOLDER, prototxt, write_seeded
from tests.inputs import module_env

torch = pytest.importorskip("torch")

INFER = CAFFE_FOLDER / "fcn.berkeleyvision.org" / "infer.py"
# A stand-in for the authors' vis.py (Python 2 code, not stored here): infer.py imports it for
# the palette and the overlay it saves after segmenting.
VIS = '''import numpy as np
from impls.voc import palette


def make_palette(num_classes):
    return palette()[:num_classes]


def color_seg(seg, colors):
    return colors[seg.flat].reshape(seg.shape + (3,))


def vis_seg(img, seg, colors, alpha=0.5):
    return (alpha * np.asarray(img, np.float64) + (1 - alpha) * color_seg(seg, colors)).astype(np.uint8)
'''


def photo(height=90, width=131):
    import skimage.data

    return skimage.data.coffee()[100:100 + height, 200:200 + width]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_seeded(tmp_path_factory.mktemp("fcn") / "fcn8s-heavy-pascal.caffemodel", "voc-fcn8s")


def expected_labels(weights, pixels):
    import impls.torch
    from impls import port
    from impls.examples.fcn_infer import preprocess

    model = impls.torch.FCN("8s").eval()
    port.load_caffemodel(model, weights)
    with torch.no_grad():
        return model(torch.from_numpy(preprocess(pixels))).numpy()[0].argmax(0)


def test_feature_authors_infer_py_runs_with_only_its_import_changed(weights, tmp_path):
    script = INFER.read_text()
    assert script.count("import caffe\n") == 1
    (tmp_path / "infer.py").write_text(script.replace("import caffe\n", "from impls import caffe\n"))
    (tmp_path / "vis.py").write_text(VIS)
    (tmp_path / "demo").mkdir()
    (tmp_path / "voc-fcn8s").mkdir()
    Image.fromarray(photo()).save(tmp_path / "demo" / "image.jpg", quality=95)
    shutil.copy(prototxt("voc-fcn8s"), tmp_path / "voc-fcn8s" / "deploy.prototxt")
    (tmp_path / "voc-fcn8s" / "fcn8s-heavy-pascal.caffemodel").symlink_to(weights)
    result = subprocess.run([sys.executable, "infer.py"], cwd=tmp_path, capture_output=True, text=True,
                            env=module_env(), timeout=600)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "demo" / "image.jpg") as image:
        pixels = np.asarray(image)
    colours = np.asarray(Image.open(tmp_path / "demo" / "output.png"))
    expected = expected_labels(weights, pixels)
    from impls.voc import palette

    np.testing.assert_array_equal(colours, palette()[expected])
    assert (tmp_path / "demo" / "visualization.jpg").stat().st_size > 0


@pytest.mark.parametrize("framework", ["torch", "caffe", "tf"])
def test_feature_fcn_infer_writes_the_label_png(framework, weights, tmp_path):
    if framework == "tf":
        pytest.importorskip("tensorflow")
    pixels = photo()
    Image.fromarray(pixels).save(tmp_path / "image.png")
    result = subprocess.run([sys.executable, "-m", "impls.examples.fcn_infer", "image.png", "--prototxt",
                             str(prototxt("voc-fcn8s")), "--caffemodel", str(weights), "--framework", framework,
                             "--output", "labels.png"], cwd=tmp_path, capture_output=True, text=True,
                            env=module_env(), timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"{framework}: wrote labels.png (131x90)" in result.stdout
    from impls.voc import read_label_png

    labels = read_label_png(tmp_path / "labels.png")
    expected = expected_labels(weights, pixels)
    assert (labels == expected).mean() >= 0.999


def test_feature_fcn_infer_takes_a_val_prototxt(weights, tmp_path):
    """A user with voc-fcn8s/val.prototxt (a Python data layer) gets it made a deploy net."""
    Image.fromarray(photo(40, 50)).save(tmp_path / "image.png")
    from impls.examples import fcn_infer

    assert fcn_infer.main([str(tmp_path / "image.png"), "--prototxt",
                           str(prototxt("voc-fcn8s", "val")), "--caffemodel", str(weights), "--framework", "caffe",
                           "--output", str(tmp_path / "labels.png")]) == 0


def test_exception_fcn_infer_without_weights_says_where_they_are(tmp_path, capsys):
    from impls.examples import fcn_infer

    code = fcn_infer.main([str(tmp_path / "image.png"), "--prototxt", str(prototxt("voc-fcn8s"))])
    assert code == fcn_infer.EXIT_USAGE
    message = capsys.readouterr().err
    assert "http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel" in message
    assert "not downloaded automatically" in message
    (tmp_path / "bad.caffemodel").write_bytes(b"not a caffemodel at all")
    Image.fromarray(photo(20, 20)).save(tmp_path / "image.png")
    assert fcn_infer.main([str(tmp_path / "image.png"), "--prototxt", str(prototxt("voc-fcn8s")), "--caffemodel",
                           str(tmp_path / "bad.caffemodel")]) == fcn_infer.EXIT_FAILED
    assert "is not a Caffe NetParameter" in capsys.readouterr().err
    crfasrnn = str(pathlib.Path(prototxt("crfasrnn", "TVG_CRFRNN_new_deploy")))
    assert fcn_infer.main([str(tmp_path / "image.png"), "--prototxt", crfasrnn, "--caffemodel",
                           str(tmp_path / "bad.caffemodel")]) == fcn_infer.EXIT_FAILED
