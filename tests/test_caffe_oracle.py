"""OpenCV's dnn (4.x) as the live oracle of the Caffe files and nets: it reads every encoding that
tests/caffe_files.py writes to the same values (the writer checked by a reader that is not ours),
its weight shapes are reference/caffe_layouts.json's, and the goldens of reference/caffe_oracle.py
regenerate. Runs in `tox -e caffe-oracle` (OpenCV is not in the default environments)."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed here: `tox -e caffe-oracle` runs these tests")

from reference import caffe_oracle  # noqa: E402
from tests.caffe_files import authors_layout, write_seeded  # noqa: E402
from tests.caffe_nets import ZOO, zoo_inputs, zoo_weights  # noqa: E402

# double_data is left out: OpenCV's importer reads float blobs only (it asserts raw float data);
# tests/test_caffe_files.py reads it back.
ENCODINGS = [dict(version="V2", shapes="blobshape", floats="packed"), dict(version="V2", shapes="legacy"),
             dict(version="V2", floats="unpacked"), dict(version="V1", shapes="legacy"),
             dict(version="V1", shapes="blobshape", floats="unpacked")]


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: "-".join(e.values()))
@pytest.mark.parametrize("name", ["conv", "deconv", "batchnorm", "inner_product"])
def test_feature_opencv_reads_every_encoding_alike(name, encoding, tmp_path):
    if name == "batchnorm" and encoding["version"] == "V1":
        pytest.skip("V1 files have no BatchNorm or Scale layer type")
    net = ZOO[name]
    reference = caffe_oracle.opencv_forward(net.prototxt, zoo_weights(tmp_path / "packed.caffemodel", name),
                                            zoo_inputs(name), list(net.tops))
    other = caffe_oracle.opencv_forward(net.prototxt, zoo_weights(tmp_path / "other.caffemodel", name, **encoding),
                                        zoo_inputs(name), list(net.tops))
    for top in net.tops:
        np.testing.assert_array_equal(other[top], reference[top])


@pytest.mark.slow
@pytest.mark.parametrize("model", caffe_oracle.FCN_MODELS)
def test_feature_opencv_weight_shapes_are_the_layouts(model, tmp_path):
    """OpenCV reads our seeded file of the authors' model with every blob in the shape
    reference/caffe_layouts.json gives (checked against OpenCV's own reading of the prototxt)."""
    path = write_seeded(tmp_path / "model.caffemodel", model)
    text = caffe_oracle.fcn_deploy_text(model)
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(text)
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(path))
    for name, _, shapes in authors_layout(model)["layers"]:
        if not shapes:
            continue
        layer_id = net.getLayerId(name)
        found = [tuple(net.getParam(layer_id, i).shape) for i in range(len(shapes))]
        # OpenCV keeps a bias as (1, C) and a Scale's weights as (1, C): compare the counts then
        assert [int(np.prod(s)) for s in found] == [int(np.prod(s)) for s in shapes], (name, found, shapes)


@pytest.mark.slow
def test_feature_goldens_regenerate(tmp_path):
    fresh = {"caffe_fcn.npz": caffe_oracle.fcn_goldens(tmp_path),
             "caffe_layers.npz": caffe_oracle.layer_goldens(tmp_path)}
    assert caffe_oracle.compare(fresh) == 0
