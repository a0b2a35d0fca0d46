"""crfasrnn_keras's whole network (FCN-8s + CRF-as-RNN) as CrfRnnNet in torch and Keras, and its
drop-in CrfRnnLayer: the frameworks agree layer by layer on the original's (seeded) weights, every
input size and batch works, and the original's fixed crops come out of the sizes."""

import numpy as np
import pytest

from impls import _models, port

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import impls.tf  # noqa: E402
import impls.torch  # noqa: E402
from impls.tf.crfrnn import CrfRnnLayer  # noqa: E402
from tests.keras2_h5 import crfasrnn_skeleton, crfasrnn_weights, write_crfasrnn_h5, write_keras2_h5  # noqa: E402

PARITY = 1e-4  # relative max error per layer (max |torch - TF| / max |TF|), TF32 and oneDNN off
# Against the original's stored outputs: measured 1e-6 (torch) and 2.3e-6 (Keras) relative.
ORIGINAL_PARITY = 2e-5
VGG_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)  # the original's pre-processing
FCN_LAYERS = [name for _, block in _models.VGG16 for name, _ in block]


@pytest.fixture(scope="module")
def seeded_file(tmp_path_factory):
    """crfasrnn_keras's network with seeded weights, as a Keras 2 save_weights file (538 MB)."""
    return write_crfasrnn_h5(tmp_path_factory.mktemp("crfasrnn") / "crfrnn_keras_model.h5")


@pytest.fixture(scope="module")
def seeded(seeded_file):
    """A torch and a Keras CrfRnnNet, built once, both loaded from the seeded file by
    impls.port.load_keras2_h5 (strict: every weight of the file and of the model accounted for)."""
    torch_model = impls.torch.CrfRnnNet().eval()
    keras_model = impls.tf.CrfRnnNet()
    keras_model(np.zeros((1, 1, 1, 3), np.float32))  # build
    for model in (torch_model, keras_model):
        report = port.load_keras2_h5(model, seeded_file)
        assert report.complete and not report.excluded, str(report)
    return torch_model, keras_model


def test_feature_the_seeded_file_loads_into_both_frameworks_with_nothing_missing_or_unused(seeded_file, seeded):
    for model in seeded:
        report = port.load_keras2_h5(model, seeded_file)
        assert (report.missing, report.unused, report.mismatched) == ((), (), ()), str(report)
        assert sorted(target for _, target, _, _ in report.loaded) == sorted(layer for layer, _, _ in
                                                                          _models.crfasrnn_layers())
        assert len(report.moved) == 43
    torch_model, keras_model = seeded
    weights = dict(crfasrnn_weights())
    np.testing.assert_array_equal(keras_model.named["fc6"].kernel.numpy(), weights["fc6"][0][1])
    np.testing.assert_array_equal(torch_model.get_submodule("score-fr").weight.detach().numpy(),
                                  weights["score-fr"][0][1].transpose(3, 2, 0, 1))


def _images(batch, height, width, seed=0):
    """Pre-processed like the original's inputs: BGR in 0-255 minus the VGG mean, NHWC, with
    smooth regions so that the CRF has edges to keep."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((batch, (height + 7) // 8, (width + 7) // 8, 3)) * 255
    image = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :height, :width]
    noisy = image + rng.normal(0, 8, image.shape)
    return (np.clip(noisy, 0, 255) - VGG_MEAN_BGR).astype(np.float32)


def _nchw(images):
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


def _torch_run(model, images):
    with torch.no_grad():
        return model(_nchw(images)).numpy().transpose(0, 2, 3, 1)


def _both_maps(seeded, images):
    torch_model, keras_model = seeded
    with torch.no_grad():
        torch_maps = torch_model.feature_maps(_nchw(images))
    return torch_maps, {name: value.numpy() for name, value in keras_model.feature_maps(images).items()}


# Even and odd sizes: pool1 rounds down, pool2-pool5 up, in both frameworks alike.
@pytest.mark.parametrize("height, width", [(64, 80), (47, 33)])
def test_feature_torch_and_keras_agree_layer_by_layer_on_the_seeded_weights(seeded, height, width):
    torch_maps, keras_maps = _both_maps(seeded, _images(1, height, width))
    expected = FCN_LAYERS[:2] + ["pool1"]
    assert list(torch_maps)[:3] == expected and list(torch_maps) == list(keras_maps)
    assert list(torch_maps)[-8:] == ["fc7", "score-fr", "score2", "score-pool4", "score4", "score-pool3",
                                     "upsample", "crfrnn"]
    assert port.first_difference(torch_maps, keras_maps, rtol=PARITY) is None, port.layer_differences(
        torch_maps, keras_maps)
    labels = torch_maps["crfrnn"].numpy().argmax(1), keras_maps["crfrnn"].argmax(-1)
    assert np.mean(labels[0] == labels[1]) >= 0.999
    # The CRF did something: its labels are not the FCN's everywhere.
    assert np.mean(keras_maps["upsample"].argmax(-1) != labels[1]) > 0


def test_feature_both_frameworks_reproduce_the_originals_predictions_on_a_photo(seeded, tmp_path):
    """The seeded file in crfasrnn_keras itself (its Keras 2 model and compiled op on TF 2.21,
    reference/crfasrnn_oracle.py) on scikit-image's coffee, pre-processed its way (fit into 500,
    means, BGR, zero padding): both frameworks give its FCN scores and its CRF output to float32
    rounding, and its labels, at 500x500."""
    from PIL import Image

    from impls import crfasrnn_keras
    from reference import generate

    skimage_data = pytest.importorskip("skimage.data")
    with np.load(generate.FOLDER / "crfasrnn_keras.npz", allow_pickle=False) as data:
        golden = dict(data)
    path = tmp_path / "coffee.png"
    Image.fromarray(skimage_data.coffee()).save(path)
    batch, *_ = crfasrnn_keras.get_preprocessed_image(path)
    torch_maps, keras_maps = _both_maps(seeded, batch)
    # The original's fixed Cropping2D layers at 500x500: 5, 9 and (31, 37) pixels.
    sizes = {name: keras_maps[name].shape[1] for name in ("score2", "score-pool4", "score4", "score-pool3")}
    assert sizes == {"score2": 34, "score-pool4": 44, "score4": 70, "score-pool3": 88}
    for framework, maps in (("torch", torch_maps), ("Keras", keras_maps)):
        maps = {name: _nhwc(maps[name]) for name in ("upsample", "crfrnn")}
        for name, key in (("upsample", "fcn_logits"), ("crfrnn", "crf_logits")):
            error = np.abs(maps[name][0, ::5, ::5] - golden[key]).max() / np.abs(golden[key]).max()
            assert error <= ORIGINAL_PARITY, f"{framework} {name}: relative error {error:.2e} to the original"
        agreement = np.mean(maps["crfrnn"][0].argmax(-1) == golden["labels"])
        assert agreement >= 0.999, f"{framework}: labels {agreement:.2%} equal to the original's"


def _nhwc(value):
    return value.numpy().transpose(0, 2, 3, 1) if isinstance(value, torch.Tensor) else np.asarray(value)


def test_feature_keras_call_is_inference_by_default_torch_eval_too(seeded):
    torch_model, keras_model = seeded
    images = _images(1, 17, 23, seed=1)
    np.testing.assert_array_equal(keras_model(images).numpy(), keras_model(images).numpy())
    np.testing.assert_array_equal(_torch_run(torch_model, images), _torch_run(torch_model, images))


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_cardinality_output_has_the_input_size(seeded, framework):
    torch_model, keras_model = seeded
    for height, width in [(1, 1), (17, 23), (64, 80), (101, 99)]:
        images = _images(1, height, width, seed=height)
        out = _torch_run(torch_model, images) if framework == "torch" else keras_model(images).numpy()
        assert out.shape == (1, height, width, 21), (height, width)
        assert np.isfinite(out).all()


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_cardinality_batch_of_two_equals_two_single_runs(seeded, framework):
    torch_model, keras_model = seeded
    images = _images(2, 33, 41, seed=2)
    run = (lambda x: _torch_run(torch_model, x)) if framework == "torch" else (lambda x: keras_model(x).numpy())
    batched = run(images)
    singles = np.concatenate([run(images[:1]), run(images[1:])])
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-4)


def test_feature_crops_of_500x500_are_the_originals_fixed_numbers():
    assert _models.crfasrnn_crops(500, 500) == {"score-pool4": ((5, 5), (5, 5)), "score-pool3": ((9, 9), (9, 9)),
                                                "upsample": ((31, 37), (31, 37))}
    # 17 rows: pools 107, 54, 27, 14, 7; fc6 1; score2 4; score4 10; upsample 88 = 31 + 17 + 40.
    assert _models.crfasrnn_crops(17, 500)["upsample"] == ((31, 40), (31, 37))


def test_cardinality_fcn_maps_fit_the_crops_for_every_size_torch():
    """On the meta device (shapes only): each crop leaves the size of the map it is added to."""
    model = impls.torch.CrfRnnNet().to("meta")
    for height, width in [(500, 500), (1, 1), (2, 3), (31, 32), (321, 480), (512, 17)]:
        maps = model._fcn_maps(torch.empty(1, 3, height, width, device="meta"))
        crops = _models.crfasrnn_crops(height, width)
        for layer, added_to in (("score-pool4", "score2"), ("score-pool3", "score4")):
            (top, bottom), (left, right) = crops[layer]
            full = maps[layer].shape[2:]
            assert (full[0] - top - bottom, full[1] - left - right) == maps[added_to].shape[2:], (height, width)
        assert tuple(maps["upsample"].shape) == (1, 21, height, width)
    assert tuple(model._fcn_maps(torch.empty(1, 3, 500, 500, device="meta"))["score2"].shape) == (1, 21, 34, 34)


def test_cardinality_traced_keras_model_takes_unknown_sizes(seeded):
    """Under tf.function with (None, None) sizes the crops come from the traced shapes."""
    _, keras_model = seeded
    traced = tf.function(keras_model, input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    images = _images(1, 19, 26, seed=3)
    np.testing.assert_allclose(traced(images).numpy(), keras_model(images).numpy(), rtol=1e-3, atol=1e-3)


def test_smoke_initial_weights_are_crfasrnn_kerass():
    eye = np.eye(21, dtype=np.float32)
    keras_model = impls.tf.CrfRnnNet()
    torch_model = impls.torch.CrfRnnNet()
    expected = dict(zip(_models.CRFASRNN_WEIGHT_NAMES, (eye, eye, -eye), strict=True))
    for name, value in expected.items():
        np.testing.assert_array_equal(getattr(keras_model.named["crfrnn"], name).numpy(), value)
        np.testing.assert_array_equal(getattr(torch_model.crfrnn, name).detach().numpy(), value)
    upsample = keras_model.named["upsample"]
    upsample.build((None, None, None, 21))
    kernel = impls.tf.bilinear_kernel(8).numpy()
    np.testing.assert_allclose(upsample.kernel.numpy()[:, :, 3, 3], kernel, rtol=1e-6)
    np.testing.assert_allclose(torch_model.get_submodule("upsample").weight.detach()[3, 3].numpy(), kernel, rtol=1e-6)
    assert upsample.kernel.numpy()[:, :, 3, 4].max() == 0
    config = keras_model.get_config()
    assert impls.tf.CrfRnnNet.from_config(config).get_config() == config


def test_smoke_layer_names_are_the_originals():
    weighted = [layer for layer, _, _ in _models.crfasrnn_layers()]
    torch_model = impls.torch.CrfRnnNet()
    assert [name for name, module in torch_model.named_children() if list(module.parameters())] == weighted
    keras_model = impls.tf.CrfRnnNet()
    assert list(keras_model.named) == weighted


def _small_crfasrnn_keras_model(num_classes=5):
    """crfasrnn_keras's get_crfrnn_model_def in miniature: Input, ZeroPadding2D, a scoring
    convolution, Cropping2D back to the input's size, CrfRnnLayer on [scores, input]."""
    img_input = keras.Input(shape=(20, 24, 3))
    x = keras.layers.ZeroPadding2D(padding=(4, 4))(img_input)
    x = keras.layers.Conv2D(num_classes, (3, 3), padding="valid", name="score")(x)
    upscore = keras.layers.Cropping2D(((1, 5), (2, 4)), name="upscore")(x)
    output = CrfRnnLayer(image_dims=(20, 24), num_classes=num_classes, theta_alpha=160., theta_beta=3.,
                         theta_gamma=3., num_iterations=5, name="crfrnn")([upscore, img_input])
    return keras.Model(img_input, output, name="crfrnn_net")


def test_feature_crfrnn_layer_builds_like_the_original_and_refines_every_image():
    model = _small_crfasrnn_keras_model()
    crfrnn = model.get_layer("crfrnn")
    assert [v.path for v in crfrnn.weights] == [f"crfrnn/{name}" for name in _models.CRFASRNN_WEIGHT_NAMES]
    eye = np.eye(5, dtype=np.float32)
    for variable, value in zip(crfrnn.weights, (eye, eye, -eye), strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    images = _images(2, 20, 24, seed=4)
    batched = model(images).numpy()
    assert batched.shape == (2, 20, 24, 5)
    singles = np.concatenate([model(images[:1]).numpy(), model(images[1:]).numpy()])
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-5)
    # The same numbers as impls' CrfRnn with the layer's weights, on the layer's inputs.
    scores = keras.Model(model.input, model.get_layer("upscore").output)(images)
    reference = impls.tf.CrfRnn(5, 160., 3., 3., 5)
    for variable, value in zip(reference.weights, crfrnn.weights, strict=True):
        variable.assign(value)
    np.testing.assert_allclose(batched, reference(scores, images).numpy(), rtol=1e-5, atol=1e-5)


def _original_definition_in_keras3():
    """crfasrnn_keras's get_crfrnn_model_def as its users wrote it (Keras 2 functional API, fixed
    500x500 crops), in Keras 3 with our CrfRnnLayer: only the layer's import differs."""
    layers = keras.layers
    img_input = keras.Input(shape=(500, 500, 3))
    x = layers.ZeroPadding2D(padding=(100, 100))(img_input)
    pooled = {}
    for block, convs in _models.VGG16:
        for name, width in convs:
            x = layers.Conv2D(width, (3, 3), activation="relu", padding="valid" if name == "conv1_1" else "same",
                              name=name)(x)
        x = layers.MaxPooling2D((2, 2), strides=(2, 2), name=f"pool{block}",
                                padding="valid" if block == 1 else "same")(x)
        pooled[block] = x
    x = layers.Dropout(0.5)(layers.Conv2D(4096, (7, 7), activation="relu", name="fc6")(x))
    x = layers.Dropout(0.5)(layers.Conv2D(4096, (1, 1), activation="relu", name="fc7")(x))
    x = layers.Conv2D(21, (1, 1), name="score-fr")(x)
    score2 = layers.Conv2DTranspose(21, (4, 4), strides=2, name="score2")(x)
    score_pool4c = layers.Cropping2D((5, 5))(layers.Conv2D(21, (1, 1), name="score-pool4")(pooled[4]))
    score4 = layers.Conv2DTranspose(21, (4, 4), strides=2, name="score4", use_bias=False)(
        layers.Add()([score2, score_pool4c]))
    score_pool3c = layers.Cropping2D((9, 9))(layers.Conv2D(21, (1, 1), name="score-pool3")(pooled[3]))
    upsample = layers.Conv2DTranspose(21, (16, 16), strides=8, name="upsample", use_bias=False)(
        layers.Add()([score4, score_pool3c]))
    upscore = layers.Cropping2D(((31, 37), (31, 37)))(upsample)
    output = CrfRnnLayer(image_dims=(500, 500), num_classes=21, theta_alpha=160., theta_beta=3., theta_gamma=3.,
                         num_iterations=10, name="crfrnn")([upscore, img_input])
    return keras.Model(img_input, output, name="crfrnn_net")


def test_feature_the_originals_keras_definition_builds_with_the_drop_in_and_loads_the_file(seeded_file, tmp_path):
    from PIL import Image

    from impls import crfasrnn_keras
    from reference import generate

    skimage_data = pytest.importorskip("skimage.data")
    model = _original_definition_in_keras3()
    report = port.load_keras2_h5(model, seeded_file)
    assert report.complete and len(report.moved) == 43, str(report)
    Image.fromarray(skimage_data.coffee()).save(tmp_path / "coffee.png")
    batch, *_ = crfasrnn_keras.get_preprocessed_image(tmp_path / "coffee.png")
    with np.load(generate.FOLDER / "crfasrnn_keras.npz", allow_pickle=False) as data:
        golden = data["crf_logits"]
    ours = model(batch).numpy()[0, ::5, ::5]
    assert np.abs(ours - golden).max() / np.abs(golden).max() <= ORIGINAL_PARITY


def _broken(case):
    """crfasrnn_keras's file structure (no data) with one fault: a tensor removed, one extra, or
    a kernel stored transposed (OIHW instead of HWIO)."""
    layers = dict(crfasrnn_skeleton())
    if case == "removed":
        layers["conv3_1"] = layers["conv3_1"][:1]  # its bias is gone
    elif case == "extra":
        layers["fc8"] = [("fc8/kernel:0", (1, 1, 4096, 21)), ("fc8/bias:0", (21,))]
    else:
        layers["score-pool3"] = [("score-pool3/kernel:0", (21, 256, 1, 1)), ("score-pool3/bias:0", (21,))]
    return list(layers.items())


@pytest.mark.parametrize("case, named", [("removed", r"mismatched: conv3_1: the file has weights \['kernel'\], "
                                                     r"the target \['bias', 'kernel'\]"),
                                         ("extra", r"unused \(no layer of that name in the model\): fc8"),
                                         ("transposed", r"mismatched: score-pool3: kernel \(21, 256, 1, 1\) in the "
                                                        r"file vs \(1, 1, 256, 21\) in the target")])
def test_exception_a_broken_crfasrnn_file_is_refused_naming_the_layer(seeded, case, named, tmp_path):
    path = write_keras2_h5(tmp_path / f"{case}.h5", _broken(case))
    for model in seeded:
        before = [np.array(w) for w in _weights(model)]
        with pytest.raises(ValueError, match=r"(?s)does not match the model \(strict=True\); nothing was loaded:.*"
                                             + named):
            port.load_keras2_h5(model, path)
        assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, _weights(model), strict=True))
    # strict=False loads the rest (here: zeros, the file has no data) and reports the fault.
    report = port.load_keras2_h5(impls.torch.CrfRnnNet(), path, strict=False, exclude=["fc6", "fc7"])
    assert not report.complete and len(report.problems) == 1, str(report)


def _weights(model):
    """A few weights of either framework's network, to see that a refused load copied nothing."""
    if isinstance(model, torch.nn.Module):
        return [model.get_submodule(name).weight.detach().numpy() for name in ("conv1_1", "score-pool3", "fc7")]
    return [model.named[name].kernel.numpy() for name in ("conv1_1", "score-pool3", "fc7")]


def test_feature_crfrnn_layer_takes_any_size_and_keeps_its_config():
    layer = CrfRnnLayer(image_dims=(500, 500), num_classes=3, theta_alpha=160., theta_beta=3., theta_gamma=3.,
                        num_iterations=2, name="crfrnn")
    unaries = np.random.default_rng(5).normal(size=(1, 9, 11, 3)).astype(np.float32)
    assert layer([unaries, _images(1, 9, 11)]).shape == (1, 9, 11, 3)
    assert layer.compute_output_shape([(None, 9, 11, 3), (None, 9, 11, 3)]) == (None, 9, 11, 3)
    config = layer.get_config()
    assert config["image_dims"] == (500, 500) and config["num_iterations"] == 2
    assert CrfRnnLayer.from_config(config).get_config() == config


@pytest.mark.parametrize("framework", ["torch", "tf"])
@pytest.mark.parametrize("shape, image_dtype, error, match", [
    ((64, 80), np.float32, ValueError, "must be a 4-D"),
    ((1, 64, 80, 4), np.float32, ValueError, "must have 3 channels"),
    ((1, 64, 80, 3), np.int32, TypeError, "must have a floating dtype"),
])
def test_exception_bad_images_are_refused_up_front(seeded, framework, shape, image_dtype, error, match):
    torch_model, keras_model = seeded
    images = np.zeros(shape, image_dtype)
    with pytest.raises(error, match=f"CrfRnnNet: argument 'images' {match}"):
        if framework == "torch":
            torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy() if images.ndim == 4 else images))
        else:
            keras_model(images)


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_exception_bad_configuration_names_the_network(framework):
    model = {"torch": impls.torch.CrfRnnNet, "tf": impls.tf.CrfRnnNet}[framework]
    with pytest.raises(ValueError, match="^CrfRnnNet: argument 'num_classes' must be at least 2"):
        model(num_classes=1)
    with pytest.raises(ValueError, match="^CrfRnnNet: argument 'theta_beta' must be a positive number"):
        model(theta_beta=0)
