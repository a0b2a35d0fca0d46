"""FCN-32s/16s/8s in torch and Keras: faithful shapes for any input size, and exact ports both
ways, checked layer by layer so that a broken port names its first differing layer."""

import numpy as np
import pytest

from impls import port

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

import impls.tf  # noqa: E402
import impls.torch  # noqa: E402

VARIANTS = ("32s", "16s", "8s", "8s-atonce")
PARITY = 1e-4  # relative max error (max |torch - TF| / max |TF|), TF32 and oneDNN off (conftest)


def _pair(variant, direction, num_classes=21, seed=0):
    """A torch and a Keras FCN with the same random weights, ported in `direction`."""
    torch.manual_seed(seed)
    keras_model = impls.tf.FCN(variant, num_classes)
    torch_model = impls.torch.FCN(variant, num_classes).eval()
    keras_model(np.zeros((1, 8, 8, 3), np.float32))  # build
    if direction == "torch->tf":
        report = port.torch_to_tf(torch_model, keras_model)
    else:
        report = port.tf_to_torch(keras_model, torch_model)
    return torch_model, keras_model, report


def _maps(torch_model, keras_model, images):
    with torch.no_grad():
        torch_maps = torch_model.feature_maps(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    keras_maps = {k: v.numpy() for k, v in keras_model.feature_maps(tf.constant(images)).items()}
    return torch_maps, keras_maps


@pytest.mark.parametrize("direction", ["torch->tf", "tf->torch"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_feature_ported_fcn_agrees_layer_by_layer(variant, direction):
    torch_model, keras_model, report = _pair(variant, direction)
    # 13 conv + fc6, fc7, score_fr, + head (at-once: + scale_pool4, scale_pool3)
    expected_layers = 16 + {"32s": 1, "16s": 3, "8s": 5, "8s-atonce": 7}[variant]
    assert len(report.layers) == expected_layers, str(report)
    images = (np.random.default_rng(1).random((1, 97, 113, 3)) * 255).astype(np.float32)
    torch_maps, keras_maps = _maps(torch_model, keras_model, images)
    assert list(torch_maps) == list(keras_maps)
    differences = dict(port.layer_differences(torch_maps, keras_maps))
    assert port.first_difference(torch_maps, keras_maps, rtol=PARITY) is None, differences
    assert keras_maps["score"].shape == (1, 97, 113, 21)


def test_feature_a_broken_port_names_its_first_differing_layer():
    torch_model, keras_model, _ = _pair("8s", "torch->tf")
    kernel = keras_model.named["conv3_2"].kernel
    kernel.assign(kernel.numpy()[::-1])  # a spatial flip: the classic porting bug
    images = (np.random.default_rng(2).random((1, 45, 51, 3)) * 255).astype(np.float32)
    name, error = port.first_difference(*_maps(torch_model, keras_model, images), rtol=PARITY)
    assert name == "conv3_2" and error > PARITY


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_feature_ported_fcn_agrees_at_321(variant):
    torch_model, keras_model, _ = _pair(variant, "torch->tf")
    images = (np.random.default_rng(3).random((1, 321, 321, 3)) * 255).astype(np.float32)
    assert port.first_difference(*_maps(torch_model, keras_model, images), rtol=PARITY) is None


# 8s-atonce is 8s with two per-channel scales, which change no size.
SIZED_VARIANTS = ("32s", "16s", "8s")


@pytest.mark.parametrize("variant", SIZED_VARIANTS)
def test_cardinality_output_size_equals_input_size_torch(variant):
    model = impls.torch.FCN(variant).to("meta")
    sizes = [(s, s) for s in range(32, 501)] + [(32, 500), (500, 33), (97, 113), (321, 480)]
    for height, width in sizes:
        out = model(torch.empty(1, 3, height, width, device="meta"))
        assert tuple(out.shape) == (1, 21, height, width), (variant, height, width)


@pytest.mark.parametrize("variant", SIZED_VARIANTS)
def test_cardinality_output_size_equals_input_size_tf(variant):
    model = impls.tf.FCN(variant)
    for height, width in [(32, 32), (33, 47), (224, 225), (500, 499)]:
        spec = tf.TensorSpec([1, height, width, 3], tf.float32)
        out = tf.function(model.call).get_concrete_function(spec).structured_outputs
        assert tuple(out.shape) == (1, height, width, 21), (variant, height, width)


@pytest.mark.parametrize("make, error, match", [
    (lambda: impls.torch.FCN("4s"), ValueError,
     r"argument 'variant' must be one of \('32s', '16s', '8s', '8s-atonce'\), got '4s'"),
    (lambda: impls.tf.FCN("4s"), ValueError, "argument 'variant' must be one of"),
    (lambda: impls.torch.FCN("8s", 0), ValueError, "'num_classes' must be a positive integer"),
    (lambda: impls.torch.FCN()(torch.zeros(1, 4, 40, 40)), ValueError, r"must have 3 channels \(C in NCHW\), got 4"),
    (lambda: impls.tf.FCN()(np.zeros((1, 40, 40, 1), np.float32)), ValueError, "must have 3 channels"),
    (lambda: impls.torch.FCN()(torch.zeros(1, 3, 0, 40)), ValueError, "must not be empty"),
])
def test_exception_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_exception_port_refuses_another_variant_or_class_count():
    keras_model = impls.tf.FCN("8s")
    keras_model(np.zeros((1, 8, 8, 3), np.float32))
    before = keras_model.named["score_fr"].kernel.numpy().copy()
    with pytest.raises(ValueError, match=r"layer names differ: only in torch: \['upscore'\], only in Keras: "):
        port.torch_to_tf(impls.torch.FCN("32s"), keras_model)
    with pytest.raises(ValueError, match=r"score_fr/kernel: torch \(1, 1, 4096, 5\) vs Keras \(1, 1, 4096, 21\)"):
        port.torch_to_tf(impls.torch.FCN("8s", 5), keras_model)
    np.testing.assert_array_equal(keras_model.named["score_fr"].kernel.numpy(), before)
    with pytest.raises(ValueError, match="call it once on an input"):
        port.torch_to_tf(impls.torch.FCN("8s"), impls.tf.FCN("8s"))


def test_feature_atonce_scales_its_skips_by_fixed_factors():
    """FCN-8s at-once is FCN-8s whose pool4 and pool3 skips are scaled by 0.01 and 0.0001 (fixed
    Caffe Scale layers) before they are scored: with the same weights its score_pool4 is 0.01 times
    FCN-8s's minus the bias's share, and the scales are held fixed in both frameworks."""
    torch.manual_seed(0)
    atonce, eight = impls.torch.FCN("8s-atonce").eval(), impls.torch.FCN("8s").eval()
    eight.load_state_dict({k: v for k, v in atonce.state_dict().items() if not k.startswith("scale_")})
    x = torch.rand(1, 3, 37, 41) * 255
    with torch.no_grad():
        ours, theirs = atonce.feature_maps(x), eight.feature_maps(x)
        bias = atonce.score_pool4.bias[:, None, None]
    torch.testing.assert_close(ours["scale_pool4"], theirs["pool4"] * 0.01)
    torch.testing.assert_close(ours["score_pool4"] - bias, (theirs["score_pool4"] - bias) * 0.01, rtol=1e-4, atol=1e-5)
    assert not atonce.scale_pool4.weight.requires_grad and not atonce.scale_pool3.weight.requires_grad
    keras_model = impls.tf.FCN("8s-atonce")
    keras_model(np.zeros((1, 8, 8, 3), np.float32))
    assert not keras_model.named["scale_pool3"].trainable
    np.testing.assert_array_equal(keras_model.named["scale_pool3"].scale.numpy(), np.full(256, 1e-4, np.float32))


def test_cardinality_tf_ceil_pooling_matches_torch_at_every_size():
    """TF has no ceil mode; its emulation decides every TF model's sizes, so check it against torch's."""
    from impls.tf.deeplab import max_pool_ceil as padded_pool
    from impls.tf.fcn import max_pool_ceil

    for size in range(2, 300):
        x = np.random.default_rng(size).random((1, size, size + 1, 1)).astype(np.float32)
        tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        expected = torch.nn.functional.max_pool2d(tx, 2, 2, ceil_mode=True).numpy().transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(max_pool_ceil(tf.constant(x), 2, 2).numpy(), expected, err_msg=str(size))
        expected = torch.nn.functional.max_pool2d(tx, 3, 2, padding=1, ceil_mode=True).numpy().transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(padded_pool(tf.constant(x), 3, 2, padding=1).numpy(), expected,
                                      err_msg=str(size))


def test_feature_keras_fcn_config_round_trips_name():
    pytest.importorskip("tensorflow")
    import impls.tf

    model = impls.tf.FCN("16s", 5, name="fcn_voc")
    clone = impls.tf.FCN.from_config(model.get_config())
    assert (clone.name, clone.variant, clone.num_classes) == ("fcn_voc", "16s", 5)
    assert clone.named["upscore2"].name == "upscore2" and clone.named["score_pool4"].name == "score_pool4"
