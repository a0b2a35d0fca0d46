"""impls.port.load_caffemodel: Caffe's blobs into torch modules and Keras models by layer name, with
each layer type's layout rule, the loaders' report and strictness, and the refusals that name the
layer (nothing copied)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from impls import port
from tests.caffe_files import bilinear_weights, write_caffemodel

torch = pytest.importorskip("torch")

import impls.torch  # noqa: E402


class TorchNet(torch.nn.Module):
    """One layer of each kind load_caffemodel has a rule for."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.up = torch.nn.ConvTranspose2d(4, 2, 4, stride=2, groups=2, bias=False)
        self.fc = torch.nn.Linear(8, 5)
        self.crf = impls.torch.CrfRnn(3)


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv": [rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)],
        "bn": [rng.standard_normal(4), rng.uniform(1, 2, 4), np.array([2.0])],
        "scale_bn": [rng.standard_normal(4), rng.standard_normal(4)],
        "up": [rng.standard_normal((4, 1, 4, 4))],
        "fc": [rng.standard_normal((5, 8)), rng.standard_normal(5)],
        "crf": [rng.standard_normal((1, 1, 3, 3)) for _ in range(3)],
    }


TYPES = {"conv": "Convolution", "bn": "BatchNorm", "scale_bn": "Scale", "up": "Deconvolution", "fc": "InnerProduct",
         "crf": "MultiStageMeanfield"}


def _file(path, blobs=None, types=None, **encoding):
    blobs = _blobs() if blobs is None else blobs
    types = {**TYPES, **(types or {})}
    layers = [("data", "Input", [])] + [(name, types[name], [np.asarray(b, np.float32) for b in values])
                                        for name, values in blobs.items()]
    return write_caffemodel(path, [layer for layer in layers if layer[1] != "Input"], **encoding)


@pytest.mark.parametrize("encoding", [dict(version="V2"), dict(version="V2", shapes="legacy", floats="double"),
                                      dict(version="V2", floats="unpacked")], ids=["blobshape", "legacy", "unpacked"])
def test_feature_every_rule_loads_into_torch(encoding, tmp_path):
    blobs = _blobs()
    model = TorchNet()
    report = port.load_caffemodel(model, _file(tmp_path / "net.caffemodel", **encoding), rename={"scale_bn": "bn"})
    assert report.complete, str(report)
    assert [(source, target) for source, target, _, _ in report.loaded] == [
        ("conv", "conv"), ("bn", "bn"), ("scale_bn", "bn"), ("up", "up"), ("fc", "fc"), ("crf", "crf")]
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    np.testing.assert_allclose(state["conv.weight"], blobs["conv"][0], rtol=1e-6)
    np.testing.assert_allclose(state["bn.running_mean"], blobs["bn"][0] / 2, rtol=1e-6)  # divided by the factor
    np.testing.assert_allclose(state["bn.running_var"], blobs["bn"][1] / 2, rtol=1e-6)
    np.testing.assert_allclose(state["bn.weight"], blobs["scale_bn"][0], rtol=1e-6)
    np.testing.assert_allclose(state["bn.bias"], blobs["scale_bn"][1], rtol=1e-6)
    np.testing.assert_allclose(state["up.weight"], blobs["up"][0], rtol=1e-6)  # (in, out/group, kh, kw) as is
    np.testing.assert_allclose(state["fc.weight"], blobs["fc"][0], rtol=1e-6)
    np.testing.assert_allclose(state["crf.compatibility_matrix"], blobs["crf"][2][0, 0], rtol=1e-6)
    assert dict(report.moved)["bn/factor"] == (1,)


def test_feature_every_rule_loads_into_keras_as_torch_does(tmp_path):
    """The same file into Keras layers of each kind gives torch's numbers in Keras' layouts."""
    keras = pytest.importorskip("keras")
    import impls.tf

    path = _file(tmp_path / "net.caffemodel")
    torch_model = TorchNet()
    port.load_caffemodel(torch_model, path, rename={"scale_bn": "bn"})
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2DTranspose(4, 4, strides=2, use_bias=False, name="up")(x)
    model = keras.Model(inputs, [x, keras.layers.Dense(5, name="fc")(keras.layers.Flatten()(x[:, :1, :2, :]))])
    crf = impls.tf.CrfRnn(3, name="crf")
    crf(np.zeros((1, 4, 4, 3), np.float32), np.zeros((1, 4, 4, 3), np.float32))
    blobs = _blobs()
    blobs["up"] = [np.random.default_rng(3).standard_normal((4, 4, 4, 4))]  # Keras has no grouped transpose
    path = _file(tmp_path / "keras.caffemodel", blobs)
    assert port.load_caffemodel(model, path, rename={"scale_bn": "bn"}, exclude=["crf"]).complete
    assert port.load_caffemodel(crf, path, strict=False).loaded[0][0] == "crf"
    layers = {layer.name: layer for layer in model.layers}
    np.testing.assert_allclose(layers["conv"].kernel.numpy(), blobs["conv"][0].transpose(2, 3, 1, 0), rtol=1e-6)
    np.testing.assert_allclose(layers["up"].kernel.numpy(), blobs["up"][0].transpose(2, 3, 1, 0), rtol=1e-6)
    np.testing.assert_allclose(layers["fc"].kernel.numpy(), blobs["fc"][0].T, rtol=1e-6)
    np.testing.assert_allclose(layers["bn"].moving_variance.numpy(), blobs["bn"][1] / 2, rtol=1e-6)
    np.testing.assert_allclose(layers["bn"].gamma.numpy(), blobs["scale_bn"][0], rtol=1e-6)
    np.testing.assert_allclose(crf.spatial_ker_weights.numpy(), blobs["crf"][0][0, 0], rtol=1e-6)


def test_feature_batchnorm_zero_factor_gives_zero_statistics_as_caffe(tmp_path):
    blobs = {"bn": [np.ones(4), np.ones(4), np.zeros(1)]}
    model = torch.nn.Sequential()
    model.add_module("bn", torch.nn.BatchNorm2d(4, affine=False))
    port.load_caffemodel(model, _file(tmp_path / "z.caffemodel", blobs))
    assert not model.bn.running_mean.any() and not model.bn.running_var.any()


def test_feature_inner_product_transpose_loads_as_out_in(tmp_path):
    from tests.caffe_files import key, varint

    weights = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)  # (in, out)
    path = write_caffemodel(tmp_path / "t.caffemodel", [("fc", "InnerProduct", [weights])],
                            extra={"fc": key(117, 2) + varint(2) + key(6, 0) + varint(1)})
    model = torch.nn.Sequential()
    model.add_module("fc", torch.nn.Linear(8, 5, bias=False))
    port.load_caffemodel(model, path)
    np.testing.assert_array_equal(model.fc.weight.detach().numpy(), weights.T)


def test_feature_fixed_bilinear_kernel_is_checked_against_the_file(tmp_path):
    """FCN's fixed upsamplers hold the bilinear kernel: the authors' file loads (same values); a file
    whose kernel differs (a learned upsampling) is refused naming the layer, unless the model's
    layer is made trainable."""
    model = impls.torch.FCN("32s")
    layers = {"upscore": [bilinear_weights((21, 21, 64, 64))]}
    assert port.load_caffemodel(model, _file(tmp_path / "a.caffemodel", layers, {"upscore": "Deconvolution"}),
                                strict=False).loaded[0][1] == "upscore"
    learned = layers["upscore"][0] * 1.01
    path = _file(tmp_path / "b.caffemodel", {"upscore": [learned]}, {"upscore": "Deconvolution"})
    with pytest.raises(ValueError, match=r"mismatched: upscore: weights: the model holds this weight fixed and the "
                                         r"file's differs \(max \|difference\| 0.00969\); make it trainable"):
        port.load_caffemodel(model, path)
    model.upscore.weight.requires_grad_(True)
    port.load_caffemodel(model, path, strict=False)
    np.testing.assert_array_equal(model.upscore.weight.detach().numpy(), learned)


# ---- Refusals: strict, nothing copied ----------------------------------------------------------

def _refused(model, path, match, **options):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        port.load_caffemodel(model, path, **options)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a refused load copied something"


def test_exception_missing_unused_and_mismatched_layers_are_named(tmp_path):
    blobs = _blobs()
    blobs["conv"] = [blobs["conv"][0][:, :2], blobs["conv"][1]]  # (4, 2, 3, 3): the model's is (4, 3, 3, 3)
    blobs["fc8"] = [np.ones((2, 2))]
    del blobs["crf"]
    path = _file(tmp_path / "bad.caffemodel", blobs, {"fc8": "InnerProduct"})
    _refused(TorchNet(), path, r"(?s)does not match the model \(strict=True\); nothing was loaded:.*"
                               r"missing from the file .*: crf \[spatial_ker_weights.*"
                               r"unused .*: fc8 \[weights\].*"
                               r"mismatched: conv: weights \(4, 2, 3, 3\) in the file vs \(4, 3, 3, 3\) in the model",
             rename={"scale_bn": "bn"})
    report = port.load_caffemodel(TorchNet(), path, strict=False, rename={"scale_bn": "bn"})
    assert [name for name, _ in report.mismatched] == ["conv"] and report.unused[0][0] == "fc8"
    assert "conv" not in {target for _, target, _, _ in report.loaded}


def test_exception_a_layer_of_another_type_is_a_mismatch(tmp_path):
    """A Convolution's weights into a transposed convolution (the same shape here) would be a
    silent layout error: refused by type."""
    blobs = {"up": [np.ones((4, 1, 4, 4))]}
    path = _file(tmp_path / "t.caffemodel", blobs, {"up": "Convolution"})
    model = TorchNet()
    _refused(model, path, r"up: a Convolution layer of the file cannot load into a transposed convolution "
                          r"\(ConvTranspose2d, which takes Deconvolution\)", exclude=["conv", "bn", "fc", "crf"])


def test_exception_blob_count_and_legacy_shape(tmp_path):
    blobs = {"fc": [np.ones((5, 8))]}  # no bias blob: the model's Linear has one
    _refused(TorchNet(), _file(tmp_path / "c.caffemodel", blobs), r"fc: the file has blobs \['weights'\], the model "
                                                                  r"\['bias', 'weights'\]", strict=True)
    legacy = {"fc": [np.ones((1, 1, 8, 5)), np.ones(5)]}  # a legacy (1, 1, 8, 5) is (8, 5): not (5, 8)
    _refused(TorchNet(), _file(tmp_path / "l.caffemodel", legacy, shapes="blobshape"),
             r"weights \(1, 1, 8, 5\) in the file vs \(5, 8\) in the model")


def test_exception_bad_arguments(tmp_path):
    path = _file(tmp_path / "ok.caffemodel")
    with pytest.raises(TypeError, match="argument 'model' must be a torch.nn.Module or a Keras layer"):
        port.load_caffemodel(object(), path)
    with pytest.raises(TypeError, match="argument 'strict' must be a bool"):
        port.load_caffemodel(TorchNet(), path, strict="yes")
    with pytest.raises(ValueError, match=r"argument 'exclude' must name layers of the file or the model, got "
                                         r"\['nope'\]"):
        port.load_caffemodel(TorchNet(), path, exclude=["nope"])
    with pytest.raises(ValueError, match="shares no layer name with the target"):
        port.load_caffemodel(torch.nn.Conv2d(1, 1, 1), path)


def test_exception_two_file_layers_supplying_one_weight(tmp_path):
    """Renaming merges file layers that supply different weights (BatchNorm + Scale); two that
    supply the same one are a mismatch that names both."""
    path = _file(tmp_path / "twice.caffemodel", {"bn": _blobs()["bn"], "bn2": _blobs(1)["bn"]}, {"bn2": "BatchNorm"})
    model = torch.nn.Sequential()
    model.add_module("bn", torch.nn.BatchNorm2d(4, affine=False))
    _refused(model, path, r"mismatched: bn\+bn2: file layers 'bn' and 'bn2' both supply its weight 'mean'",
             rename={"bn2": "bn"})


def test_feature_loading_into_torch_never_imports_tensorflow(tmp_path):
    path = _file(tmp_path / "net.caffemodel")
    script = ("import sys, torch\nfrom impls import port\nfrom tests.test_load_caffemodel import TorchNet\n"
              f"port.load_caffemodel(TorchNet(), {str(path)!r}, rename={{'scale_bn': 'bn'}})\n"
              "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n")
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.path.append({root!r})\n" + script],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
