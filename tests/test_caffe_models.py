"""The authors' Caffe models as their users have them (seeded weights in the layout and encoding of
their real files, tests/caffe_files.py), checked against OpenCV's dnn on the same files (the goldens
of reference/caffe_oracle.py): FCN-32s, 16s, 8s and 8s at-once through impls.caffe.Net and loaded into
impls.torch.FCN and impls.tf.FCN by impls.port.load_caffemodel, and CRF-RNN's net through Net and into
CrfRnnNet, whose MultiStageMeanfield is checked against CrfRnn and the exact dense filter."""

from __future__ import annotations

import numpy as np
import pytest

from impls import port
from reference.caffe_oracle import FCN_MODELS, IMAGES, SUBSAMPLE
from tests.caffe_files import prototxt, write_seeded

torch = pytest.importorskip("torch")

from impls import caffe  # noqa: E402

GOLDENS = np.load(prototxt("voc-fcn8s").parents[2] / "caffe_fcn.npz")
# Each model in an encoding its users' files have: the 2016 files of fcn.berkeleyvision.org are V2
# with BlobShape; older FCN files and CRF-RNN's are V1 with legacy 4-D shapes; unpacked floats too.
ENCODINGS = {"voc-fcn32s": dict(version="V1"), "voc-fcn16s": dict(version="V2", shapes="legacy", floats="unpacked"),
             "voc-fcn8s": dict(version="V2"), "voc-fcn8s-atonce": dict(version="V2"), "crfasrnn": dict(version="V1")}
VARIANTS = {"voc-fcn32s": "32s", "voc-fcn16s": "16s", "voc-fcn8s": "8s", "voc-fcn8s-atonce": "8s-atonce"}
# OpenCV and torch sum float32 convolutions in other orders (measured: 4e-6 of the largest score).
SCORE_TOLERANCE = 1e-4
MIN_LABELS_EQUAL = 0.999


def deploy_prototxt(model, folder):
    """The authors' deploy net: theirs for FCN-8s, made from their val.prototxt for the others."""
    if model == "voc-fcn8s":
        return str(prototxt(model))
    path = folder / f"{model}-deploy.prototxt"
    path.write_text(caffe.deploy(prototxt(model, "val")))
    return str(path)


def assert_scores_match(scores, key, name="score"):
    """scores (1, C, H, W) against OpenCV's golden: every SUBSAMPLE-th pixel within SCORE_TOLERANCE
    of the largest |score|, and the labels of every pixel."""
    scale = GOLDENS[f"{key}.{name}_max"].item()
    sampled = scores[:, :, ::SUBSAMPLE, ::SUBSAMPLE]
    error = float(np.abs(sampled - GOLDENS[f"{key}.{name}"]).max()) / scale
    assert error <= SCORE_TOLERANCE, f"{key}: max |difference| {error:.3g} of the largest score"
    equal = float((scores[0].argmax(0) == GOLDENS[f"{key}.labels"]).mean())
    assert equal >= MIN_LABELS_EQUAL, f"{key}: {equal:.5f} of the labels equal"
    return error, equal


def run_net(net, x):
    net.blobs["data"].reshape(*x.shape)
    net.blobs["data"].data[...] = x
    net.forward()
    return net


@pytest.mark.parametrize("model", FCN_MODELS)
def test_feature_authors_fcn_agrees_with_opencv_in_net_and_torch(model, tmp_path):
    import impls.torch

    weights = write_seeded(tmp_path / f"{model}.caffemodel", model, **ENCODINGS[model])
    net = caffe.Net(deploy_prototxt(model, tmp_path), str(weights), caffe.TEST)
    fcn = impls.torch.FCN(VARIANTS[model]).eval()
    report = port.load_caffemodel(fcn, weights)
    assert report.complete and len(report.loaded) == len(net.params), str(report)
    for image in IMAGES:
        x = GOLDENS[f"{image}.input"]
        ours = run_net(net, x)
        assert_scores_match(ours.blobs["score"].data, f"{model}.{image}")
        fc7 = ours.blobs["fc7"].data[:, ::64]
        assert np.abs(fc7 - GOLDENS[f"{model}.{image}.fc7"]).max() <= SCORE_TOLERANCE * np.abs(fc7).max()
        with torch.no_grad():
            theirs = fcn(torch.from_numpy(x)).numpy()
        assert_scores_match(theirs, f"{model}.{image}")
        np.testing.assert_allclose(theirs, ours.blobs["score"].data, rtol=0,
                                   atol=SCORE_TOLERANCE * np.abs(theirs).max())


@pytest.mark.parametrize("model", [pytest.param(m, marks=[] if m == "voc-fcn8s" else pytest.mark.slow)
                                   for m in FCN_MODELS])
def test_feature_authors_fcn_agrees_with_opencv_in_keras(model, tmp_path):
    tf = pytest.importorskip("tensorflow")
    import impls.tf

    weights = write_seeded(tmp_path / f"{model}.caffemodel", model, **ENCODINGS[model])
    fcn = impls.tf.FCN(VARIANTS[model])
    fcn(np.zeros((1, 8, 8, 3), np.float32))
    assert port.load_caffemodel(fcn, weights).complete
    for image in IMAGES:
        x = GOLDENS[f"{image}.input"]
        scores = fcn(tf.constant(x.transpose(0, 2, 3, 1))).numpy().transpose(0, 3, 1, 2)
        assert_scores_match(scores, f"{model}.{image}")


def test_feature_crfasrnn_net_agrees_with_opencv_and_crfrnnnet(tmp_path):
    """CRF-RNN's V1 deploy net (enum types, its fork's Crop without offsets and MultiStageMeanfield)
    with a V1 legacy-shape file: its FCN part equals OpenCV's up to 'coarse'; the whole net equals
    impls.torch.CrfRnnNet(pool1="ceil") loaded from the same file (the inference1 layer renamed
    onto crfrnn)."""
    import impls.torch

    weights = write_seeded(tmp_path / "crfasrnn.caffemodel", "crfasrnn", **ENCODINGS["crfasrnn"])
    net = caffe.Net(str(prototxt("crfasrnn", "TVG_CRFRNN_COCO_VOC")), str(weights), caffe.TEST)
    assert [layer.offsets for layer in net.layers if layer.type == "Crop"] == [(5, 5), (9, 9), (31, 31)]
    model = impls.torch.CrfRnnNet(pool1="ceil").eval()
    assert port.load_caffemodel(model, weights, rename={"inference1": "crfrnn"}).complete
    for image in IMAGES:
        x = GOLDENS[f"{image}.input"]
        run_net(net, x)
        assert_scores_match(net.blobs["coarse"].data, f"crfasrnn.{image}", "coarse")
        with torch.no_grad():
            maps = model.feature_maps(torch.from_numpy(x))
        # Net's Winograd convolutions against torch's direct ones: float32 rounding (1e-5 measured)
        for ours, theirs in ((maps["upsample"].numpy(), net.blobs["coarse"].data),
                             (maps["crfrnn"].numpy(), net.blobs["pred"].data)):
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=SCORE_TOLERANCE * np.abs(theirs).max())


@pytest.mark.slow
def test_feature_crfasrnn_caffe_file_loads_into_keras_crfrnnnet(tmp_path):
    tf = pytest.importorskip("tensorflow")
    import impls.tf

    weights = write_seeded(tmp_path / "crfasrnn.caffemodel", "crfasrnn", **ENCODINGS["crfasrnn"])
    net = caffe.Net(str(prototxt("crfasrnn", "TVG_CRFRNN_new_deploy")), str(weights), caffe.TEST)
    model = impls.tf.CrfRnnNet(pool1="ceil")
    model(np.zeros((1, 8, 8, 3), np.float32))
    assert port.load_caffemodel(model, weights, rename={"inference1": "crfrnn"}).complete
    x = GOLDENS["coffee.input"]
    run_net(net, x)
    maps = model.feature_maps(tf.constant(x.transpose(0, 2, 3, 1)))
    assert_scores_match(maps["upsample"].numpy().transpose(0, 3, 1, 2), "crfasrnn.coffee", "coarse")
    pred = net.blobs["pred"].data
    keras_pred = maps["crfrnn"].numpy().transpose(0, 3, 1, 2)
    assert np.abs(keras_pred - pred).max() <= 1e-4 * np.abs(pred).max()
