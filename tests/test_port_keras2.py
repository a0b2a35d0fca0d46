"""impls.port's reader of legacy Keras 2 HDF5 weight files: load by layer name into torch modules
and Keras 3 models (the layouts right: the loaded pair computes the same numbers), and a report of
what was and was not loaded. The files are written by tests/keras2_h5.py the way Keras 2 wrote them."""

import numpy as np
import pytest

from impls import port
from tests.keras2_h5 import write_keras2_h5

pytest.importorskip("h5py")
torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import impls.tf  # noqa: E402
import impls.torch  # noqa: E402

PARITY = 1e-5  # float32, oneDNN and TF32 off (conftest)
CRF_WEIGHTS = ("spatial_ker_weights", "bilateral_ker_weights", "compatibility_matrix")


def _keras_net(seed=None):
    """conv1 -> bn1 -> ReLU -> up (transposed convolution) -> mean -> fc: every kind with weights."""
    inputs = keras.Input((6, 5, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-3, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same", name="up")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="fc")(x), name="net")
    if seed is not None:
        rng = np.random.default_rng(seed)
        for variable in model.weights:
            value = rng.uniform(0.5, 1.5, variable.shape) if "variance" in variable.path else rng.normal(
                0.0, 0.5, variable.shape)
            variable.assign(value.astype(np.float32))
    return model


class _TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(4, eps=1e-3)
        self.up = torch.nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)
        self.fc = torch.nn.Linear(2, 5)

    def forward(self, x):
        x = self.up(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _keras2_layers(model):
    """A Keras 3 model's layers as Keras 2 saved them: [(layer, [("layer/weight:0", array)])]."""
    return [(layer.name, [(f"{layer.name}/{v.path.rsplit('/', 1)[-1]}:0", v.numpy()) for v in layer.weights])
            for layer in model.layers]


def _values(module):
    return {name: tensor.detach().numpy().copy() for name, tensor in module.state_dict().items()}


def test_feature_keras2_file_loads_into_keras_and_torch_by_name_with_equal_outputs(tmp_path, rng):
    source = _keras_net(seed=1)
    path = write_keras2_h5(tmp_path / "net.h5", _keras2_layers(source))
    images = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
    expected = source(images, training=False).numpy()

    keras_model, torch_model = _keras_net(), _TorchNet().eval()
    keras_report = port.load_keras2_h5(keras_model, path)
    torch_report = port.load_keras2_h5(torch_model, str(path))

    for report in (keras_report, torch_report):
        assert report.complete, str(report)
        assert [source for source, _, _, _ in report.loaded] == ["conv1", "bn1", "up", "fc"]
    assert dict(torch_report.moved) == {"conv1/kernel": (4, 3, 3, 3), "conv1/bias": (4,), "bn1/gamma": (4,),
                                        "bn1/beta": (4,), "bn1/moving_mean": (4,), "bn1/moving_variance": (4,),
                                        "up/kernel": (4, 2, 4, 4), "up/bias": (2,), "fc/kernel": (5, 2),
                                        "fc/bias": (5,)}
    assert [kind for _, _, kind, _ in torch_report.loaded] == ["convolution", "BatchNorm", "transposed convolution",
                                                               "dense"]
    assert "10 weight(s) of 4 layer(s) loaded" in str(torch_report)
    for ours, theirs in zip(keras_model.weights, source.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(keras_model(images, training=False).numpy(), expected)
    with torch.no_grad():
        ported = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(ported, expected, rtol=PARITY, atol=PARITY)


def test_feature_report_lists_what_was_not_loaded_and_what_was_left_as_it_was(tmp_path):
    layers = _keras2_layers(_keras_net(seed=2))
    layers = [entry for entry in layers if entry[0] != "bn1"]  # the file lacks bn1 ...
    layers.append(("fc8", [("fc8/kernel:0", np.ones((2, 7), np.float32)), ("fc8/bias:0", np.ones(7, np.float32))]))
    path = write_keras2_h5(tmp_path / "partial.h5", layers)  # ... and has fc8, which the target lacks
    torch_model = _TorchNet()
    before = _values(torch_model)

    with pytest.raises(ValueError, match=r"(?s)does not match the model \(strict=True\); nothing was loaded:.*"
                                         r"missing from the file \(left at its initial values\): bn1 \[gamma, "
                                         r"beta, moving_mean, moving_variance\].*unused \(no layer of that name in "
                                         r"the model\): fc8 \[kernel, bias\]"):
        port.load_keras2_h5(torch_model, path)
    for name, value in _values(torch_model).items():
        np.testing.assert_array_equal(value, before[name])

    report = port.load_keras2_h5(torch_model, path, strict=False)

    assert not report.complete
    assert report.unused == (("fc8", ("kernel", "bias")),)
    assert report.missing == (("bn1", ("gamma", "beta", "moving_mean", "moving_variance")),)
    assert report.mismatched == () and report.excluded == ()
    for name, value in _values(torch_model).items():
        if name.startswith("bn1."):
            np.testing.assert_array_equal(value, before[name])
        elif name.startswith("conv1."):
            assert not np.array_equal(value, before[name]), name
    assert "3 layer(s) loaded; 1 missing, 1 unused, 0 mismatched, 0 excluded" in report.summary()
    assert "unused (no layer of that name in the model): fc8 [kernel, bias]" in str(report)


def test_feature_exclude_skips_layers_and_refuses_a_name_in_neither(tmp_path):
    layers = _keras2_layers(_keras_net(seed=5))
    layers.append(("fc8", [("fc8/kernel:0", np.ones((2, 7), np.float32))]))  # another head, as when fine-tuning
    path = write_keras2_h5(tmp_path / "head.h5", layers)
    torch_model = _TorchNet()
    before = _values(torch_model)

    report = port.load_keras2_h5(torch_model, path, exclude=["fc", "fc8"])

    assert report.complete and report.excluded == ("fc", "fc8"), str(report)
    assert [source for source, _, _, _ in report.loaded] == ["conv1", "bn1", "up"]
    np.testing.assert_array_equal(torch_model.fc.weight.detach().numpy(), before["fc.weight"])
    with pytest.raises(ValueError, match=r"argument 'exclude' must name layers of the file or the model, got "
                                         r"\['fc9'\], which neither has"):
        port.load_keras2_h5(_TorchNet(), path, exclude=["fc", "fc8", "fc9"])


def test_exception_a_file_sharing_no_layer_with_the_target_is_refused(tmp_path):
    path = write_keras2_h5(tmp_path / "other.h5", [("dense_1", [("dense_1/kernel:0", np.ones((2, 5), np.float32))])])
    with pytest.raises(ValueError, match=r"other\.h5 shares no layer name with the target: the file has \['dense_1'\], "
                                         r"the target \['conv1', 'bn1', 'up', 'fc'\]; nothing was loaded"):
        port.load_keras2_h5(_TorchNet(), path)


def test_exception_mismatched_weights_load_nothing_unless_not_strict(tmp_path):
    layers = _keras2_layers(_keras_net(seed=3))
    layers = [(name, [(w, v[..., :3]) if name == "fc" and w.endswith("kernel:0") else (w, v) for w, v in weights])
              for name, weights in layers if name != "up"]
    layers.append(("up", [("up/kernel:0", np.zeros((4, 4, 2, 4), np.float32))]))  # no bias
    path = write_keras2_h5(tmp_path / "mismatch.h5", layers)
    torch_model = _TorchNet()
    before = _values(torch_model)

    with pytest.raises(ValueError, match=r"(?s)nothing was loaded:.*mismatched: fc: kernel \(2, 3\) in the file "
                                         r"vs \(2, 5\) in the target.*mismatched: up: the file has weights "
                                         r"\['kernel'\], the target \['bias', 'kernel'\]"):
        port.load_keras2_h5(torch_model, path)
    for name, value in _values(torch_model).items():
        np.testing.assert_array_equal(value, before[name])

    report = port.load_keras2_h5(torch_model, path, strict=False)
    assert [name for name, _ in report.mismatched] == ["fc", "up"]
    assert [source for source, _, _, _ in report.loaded] == ["conv1", "bn1"]
    np.testing.assert_array_equal(torch_model.up.weight.detach().numpy(), before["up.weight"])


def test_feature_save_layout_split_attributes_and_nested_models_read_as_the_same_layers(tmp_path):
    layers = _keras2_layers(_keras_net(seed=4))
    expected = {name: {w.split("/")[1][:-2]: v for w, v in weights} for name, weights in layers if weights}
    variants = {"weights": {}, "save": {"layout": "save"}, "split": {"split_attributes": True},
                "save-split": {"layout": "save", "split_attributes": True}}
    for variant, options in variants.items():
        read = port.read_keras2_h5(write_keras2_h5(tmp_path / f"{variant}.h5", layers, **options))
        assert list(read) == list(expected), variant
        for name, weights in expected.items():
            assert list(read[name]) == list(weights), (variant, name)
            for weight, value in weights.items():
                np.testing.assert_array_equal(read[name][weight], value)
    # A nested model's group holds its layers' weights under their own scopes (matterport's rpn_model).
    nested = [("input_1", []), ("rpn_model", [(w, v) for name, weights in layers for w, v in weights])]
    read = port.read_keras2_h5(write_keras2_h5(tmp_path / "nested.h5", nested))
    assert {name: list(weights) for name, weights in read.items()} == {
        name: list(weights) for name, weights in expected.items()}


def test_feature_weight_scopes_that_tf_uniquified_or_nested_name_the_group_layer(tmp_path):
    kernel, bias = np.ones((1, 1, 3, 2), np.float32), np.zeros(2, np.float32)
    layers = [("conv1", [("conv1_1/kernel:0", kernel), ("model_1/conv1/bias:0", bias)]),
              ("conv2", [("kernel:0", kernel)])]
    read = port.read_keras2_h5(write_keras2_h5(tmp_path / "scopes.h5", layers))
    assert {name: sorted(weights) for name, weights in read.items()} == {"conv1": ["bias", "kernel"],
                                                                        "conv2": ["kernel"]}


def test_feature_crfasrnn_crf_weights_load_into_both_crfrnn_layers_by_name_or_rename(tmp_path):
    from impls._models import crfasrnn_layers

    rng = np.random.default_rng(5)
    (shapes,) = [shapes for layer, _, shapes in crfasrnn_layers() if layer == "crfrnn"]
    values = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes}
    path = write_keras2_h5(tmp_path / "crfrnn.h5", [("input_1", []), ("crfrnn", [
        (f"crfrnn/{name}:0", value) for name, value in values.items()])])
    torch_layer = impls.torch.CrfRnn(21, name="crfrnn")  # the module itself, named as the file's layer
    keras_layer = impls.tf.CrfRnn(21, name="crf_rnn")
    keras_layer.build(None)

    torch_report = port.load_keras2_h5(torch_layer, path)
    keras_report = port.load_keras2_h5(keras_layer, path, rename={"crfrnn": "crf_rnn"})

    assert torch_report.complete and keras_report.complete, (str(torch_report), str(keras_report))
    assert [name for name, _ in keras_report.moved] == [f"crf_rnn/{name}" for name in CRF_WEIGHTS]
    assert "crf_rnn <- crfrnn (CrfRnn)" in str(keras_report)
    for name in CRF_WEIGHTS:
        np.testing.assert_array_equal(getattr(torch_layer, name).detach().numpy(), values[name])
        np.testing.assert_array_equal(getattr(keras_layer, name).numpy(), values[name])
    unnamed = impls.torch.CrfRnn(21)  # a module without a name is "" (torch's name of the root)
    assert port.load_keras2_h5(unnamed, path, rename={"crfrnn": ""}).complete


def test_exception_files_that_are_not_keras2_weight_files_are_refused(tmp_path):
    model = _keras_net()
    keras3 = tmp_path / "net.weights.h5"
    model.save_weights(keras3)
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    layers = _keras2_layers(model)
    keras1 = write_keras2_h5(tmp_path / "keras1.h5", layers, keras_version="1.2.2")
    cases = {keras3: r"Keras 3 \.weights\.h5 file", text: r"be an HDF5 file",
             keras1: r"which Keras 1\.2\.2 wrote"}
    for path, match in cases.items():
        with pytest.raises(ValueError, match=r"load_keras2_h5: argument 'path' must (.* )?" + match):
            port.load_keras2_h5(model, path)
    import h5py

    theano = write_keras2_h5(tmp_path / "theano.h5", layers)
    with h5py.File(theano, "a") as file:
        file.attrs["backend"] = b"theano"
    with pytest.raises(ValueError, match=r"which the Theano backend wrote"):
        port.read_keras2_h5(theano)
    with pytest.raises(FileNotFoundError, match=r"read_keras2_h5: argument 'path' must name an existing file"):
        port.read_keras2_h5(tmp_path / "missing.h5")


def test_exception_bad_arguments_are_refused_naming_them(tmp_path):
    path = write_keras2_h5(tmp_path / "net.h5", _keras2_layers(_keras_net(seed=6)))
    calls = {
        "path": lambda: port.load_keras2_h5(_TorchNet(), 3),
        "model": lambda: port.load_keras2_h5(object(), path),
        "exclude": lambda: port.load_keras2_h5(_TorchNet(), path, exclude="fc"),
        "strict": lambda: port.load_keras2_h5(_TorchNet(), path, strict=1),
        "rename": lambda: port.load_keras2_h5(_TorchNet(), path, rename={"conv1": 2}),
    }
    for argument, call in calls.items():
        with pytest.raises(TypeError, match=rf"^load_keras2_h5: argument '{argument}' must"):
            call()
    with pytest.raises(ValueError, match=r"argument 'rename' must map layers of the file, got \['conv9'\]"):
        port.load_keras2_h5(_TorchNet(), path, rename={"conv9": "conv1"})
    with pytest.raises(ValueError, match=r"argument 'rename' must map one file layer to each target layer"):
        port.load_keras2_h5(_TorchNet(), path, rename={"conv1": "fc", "bn1": "fc"})
    unbuilt = keras.Sequential([keras.layers.Dense(2, name="fc")])
    with pytest.raises(ValueError, match=r"argument 'model' must be built"):
        port.load_keras2_h5(unbuilt, path)


def test_feature_loading_into_torch_never_imports_tensorflow(tmp_path):
    """A torch user's load does not pay TF's import (seconds, and log lines on stderr)."""
    import subprocess
    import sys

    path = write_keras2_h5(tmp_path / "conv.h5", [("conv1", [("conv1/kernel:0", np.ones((1, 1, 2, 3), np.float32)),
                                                             ("conv1/bias:0", np.zeros(3, np.float32))])])
    script = ("import sys, torch\nfrom impls import port\nmodel = torch.nn.Module()\n"
              "model.conv1 = torch.nn.Conv2d(2, 3, 1)\n"
              f"assert port.load_keras2_h5(model, {str(path)!r}).complete\n"
              "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF was imported'\n")
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=120)
