"""matterport's Mask R-CNN as a live oracle (reference/matterport_oracle.py): its own load_weights
reads the seeded file of tests/matterport_h5.py, and its goldens (reference/matterport_<A|B>.npz)
regenerate. The tests that run matterport need its environment, `tox -e matterport` (TF 2.21,
tf_keras, mrcnn-colab 2.1) and skip elsewhere; they run the oracle in subprocesses (it turns
TensorFlow's eager execution off for its whole process). The others read the stored files only.

Without tox, in the oracle's virtualenv:

    PYTHONPATH=. /work/oracle-venv/bin/python -m pytest --noconftest -p no:cacheprovider \\
        tests/test_matterport_oracle.py
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.matterport_h5 import matterport_skeleton, matterport_weights, write_matterport_h5

ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "reference"
ORACLE = REFERENCE / "matterport_oracle.py"
PHOTOS = ("astronaut", "coffee", "chelsea")
SHAPES = {"astronaut": (512, 512), "coffee": (400, 600), "chelsea": (300, 451)}  # skimage.data's


def layout(key):
    return json.loads((REFERENCE / f"matterport_layout_{key}.json").read_text())


def oracle(*arguments, timeout=1800):
    """Runs the oracle in its own process (with this interpreter) and returns its exit status and output."""
    pytest.importorskip("mrcnn", reason="matterport's mrcnn (mrcnn-colab 2.1) runs in `tox -e matterport` only")
    pytest.importorskip("tf_keras", reason="matterport runs on tf_keras (Keras 2): `tox -e matterport`")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(ORACLE), *arguments], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("key", ["A", "B"])
def test_feature_layout_files_describe_matterports_model(key):
    stored = layout(key)
    config = stored["config"]
    assert config["BACKBONE"] == {"A": "resnet50", "B": "resnet101"}[key]
    assert config["NUM_CLASSES"] == {"A": 3, "B": 81}[key]
    assert config["DETECTION_MIN_CONFIDENCE"] == 0.7
    names = stored["layer_names"]
    assert len(names) == len(set(names)) and set(stored["weights"]) <= set(names)
    assert names[0] == "input_image" and names[-1] == "mrcnn_mask"
    tensors = sum(len(weights) for weights in stored["weights"].values())
    assert (len(stored["weights"]), tensors) == {"A": (131, 384), "B": (233, 690)}[key]
    rpn = [name for name, _ in stored["weights"]["rpn_model"]]
    assert rpn == ["rpn_conv_shared/kernel:0", "rpn_conv_shared/bias:0", "rpn_class_raw/kernel:0",
                   "rpn_class_raw/bias:0", "rpn_bbox_pred/kernel:0", "rpn_bbox_pred/bias:0"]
    c4 = {"A": "res4f_out", "B": "res4w_out"}[key]
    for stage in ("res2c_out", "res3d_out", c4, "res5c_out", "fpn_p6", "ROI", "mrcnn_detection"):
        assert stage in names


def test_feature_seeded_weights_follow_the_layout_and_the_seed():
    stored = layout("A")
    weights = matterport_weights(stored, seed=2018)
    assert [name for name, _ in weights] == stored["layer_names"]
    for name, values in weights:
        expected = stored["weights"].get(name, [])
        assert [(w, list(v.shape)) for w, v in values] == [(w, shape) for w, shape in expected]
        assert all(v.dtype == np.float32 for _, v in values)
    by_name = {w: v for _, values in weights for w, v in values}
    assert (by_name["bn_conv1/moving_variance:0"] > 0).all()
    kernel = by_name["mrcnn_class_logits/kernel:0"]
    np.testing.assert_allclose(kernel[:, 0] - kernel[:, 1:].mean(axis=1), kernel[0, 0] - kernel[0, 1:].mean(),
                               rtol=1e-3)  # the background column: mean of the others plus a constant
    other = matterport_weights(stored, seed=2019)
    assert not np.array_equal(by_name["conv1/kernel:0"], dict(dict(other)["conv1"])["conv1/kernel:0"])


def test_feature_writer_nests_rpn_model_as_keras_does(tmp_path):
    h5py = pytest.importorskip("h5py")
    from tests.keras2_h5 import write_keras2_h5

    stored = layout("B")
    path = write_keras2_h5(tmp_path / "skeleton.h5", matterport_skeleton(stored))
    with h5py.File(path, "r") as file:
        assert [str(n) for n in file.attrs["layer_names"]] == stored["layer_names"]
        assert [str(n) for n in file["rpn_model"].attrs["weight_names"]][0] == "rpn_conv_shared/kernel:0"
        assert file["rpn_model/rpn_conv_shared/kernel:0"].shape == (3, 3, 256, 512)
        assert file["mrcnn_class_logits/mrcnn_class_logits/kernel:0"].shape == (1024, 81)
        assert len(file["input_image"].attrs["weight_names"]) == 0


@pytest.mark.parametrize("key", ["A", "B"])
def test_feature_golden_detections_and_masks_are_consistent(key):
    with np.load(REFERENCE / f"matterport_{key}.npz") as golden:
        for photo in PHOTOS:
            n = len(golden[f"{photo}.class_ids"])
            assert 3 <= n <= 20
            assert (golden[f"{photo}.scores"] >= 0.7).all()
            detections = golden[f"{photo}.mrcnn_detection"][0]
            kept = detections[detections[:, 4] != 0]
            np.testing.assert_array_equal(kept[:n, 5], golden[f"{photo}.scores"])
            np.testing.assert_array_equal(kept[:n, 4].astype(np.int32), golden[f"{photo}.class_ids"])
            bits = np.unpackbits(golden[f"{photo}.masks.packed"])
            offsets = golden[f"{photo}.masks.offsets"]
            height, width, count = golden[f"{photo}.masks.shape"]
            assert (height, width, count) == (*SHAPES[photo], n)
            for i, (y1, x1, y2, x2) in enumerate(golden[f"{photo}.rois"]):
                crop = bits[offsets[i]:offsets[i + 1]].reshape(y2 - y1, x2 - x1)
                assert crop.sum() == golden[f"{photo}.masks.area"][i] > 0
            s, c = golden["res2c_out.step"]  # C2 has stride 4 and 256 channels
            side = len(range(0, int(golden[f"{photo}.molded_shape"][1]) // 4, s))
            assert golden[f"{photo}.res2c_out"].shape == (side, side, len(range(0, 256, c)))


def test_feature_matterport_loads_our_file_and_detects_as_stored():
    """A: matterport's load_weights(by_name=False) and (by_name=True) read write_matterport_h5's
    file and give the seeded values; the layout file is the real save_weights file's; detect() and
    every stored stage of the first photograph agree with the golden."""
    status, output = oracle("--self-test", "--configs", "A")
    assert status == 0, output[-6000:]


def test_feature_serve_answers_the_benchmarks_requests(tmp_path):
    """The benchmarks' matterport arm (bench/matterport.py) at 256 px: ready with versions, a timed
    detect() with and without its result, every benchmark stage by its layer name, and an unknown
    request refused by name."""
    import base64

    pytest.importorskip("mrcnn", reason="matterport's mrcnn (mrcnn-colab 2.1) runs in `tox -e matterport` only")
    pytest.importorskip("tf_keras", reason="matterport runs on tf_keras (Keras 2): `tox -e matterport`")
    from bench.matterport import MatterportWorker

    worker = MatterportWorker(sys.executable, 2, tmp_path / "stderr.log", size=256)
    try:
        assert worker.ready["ready"] and worker.ready["versions"]["mrcnn-colab"] == "2.1"
        full = worker.request(op="detect", result=True)
        count = len(full["class_ids"])
        assert full["seconds"] > 0 and len(full["rois"]) == len(full["scores"]) == count
        assert full["mask_shape"] == [512, 512, count]
        assert len(base64.b64decode(full["masks"])) == -(-512 * 512 * count // 8)
        assert set(worker.request(op="detect")) == {"seconds"}
        for until in ("res5c_out", "fpn_p6", "rpn_bbox", "ROI", "mrcnn_bbox", "mrcnn_detection", "mrcnn_mask"):
            assert worker.request(op="stage", until=until)["seconds"] > 0
        with pytest.raises(RuntimeError, match="matterport's worker: unknown request"):
            worker.request(op="train")
    finally:
        worker.close()
    assert worker.process.returncode == 0


@pytest.mark.slow
def test_feature_matterport_self_test_resnet101():
    status, output = oracle("--self-test", "--configs", "B")
    assert status == 0, output[-6000:]


@pytest.mark.slow
def test_feature_matterport_goldens_regenerate():
    status, output = oracle("--check")
    assert status == 0, output[-6000:]
    assert "agree with the stored ones" in output


def test_feature_write_matterport_h5_roundtrip(tmp_path):
    h5py = pytest.importorskip("h5py")
    stored = layout("A")
    path = write_matterport_h5(tmp_path / "a.h5", stored, seed=7)
    weights = dict(matterport_weights(stored, seed=7))
    with h5py.File(path, "r") as file:
        for name in ("conv1", "rpn_model", "mrcnn_mask"):
            for weight, value in weights[name]:
                np.testing.assert_array_equal(file[name][weight][()], value)
