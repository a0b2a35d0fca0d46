"""DeepLab-v2 and ASPP in torch and Keras: exact ports both ways (BatchNorm's epsilon and momentum
converted), layer-by-layer agreement, ASPP against an explicit dilated convolution, fusion."""

import numpy as np
import pytest

from impls import _models, port
from impls.testing import assert_close
from tests.caffe_nets import caffe_interp

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

import impls.tf  # noqa: E402
import impls.torch  # noqa: E402

PARITY = 1e-4  # relative max error, TF32 and oneDNN off (conftest)


def _randomise_batchnorm(model, seed):
    """Running statistics and affine parameters away from the defaults, so a BatchNorm port shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low, high in ((module.running_mean, -0.2, 0.2), (module.running_var, 0.5, 1.5),
                                          (module.weight, 0.5, 1.5), (module.bias, -0.2, 0.2)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)


def _pair(direction, scales=(1.0, 0.75, 0.5), **settings):
    torch.manual_seed(0)
    torch_model = impls.torch.DeepLabV2(21, scales, **settings).eval()
    _randomise_batchnorm(torch_model, 1)
    keras_model = impls.tf.DeepLabV2(21, scales, **settings)
    keras_model(np.zeros((1, 16, 16, 3), np.float32))
    if direction == "torch->tf":
        return torch_model, keras_model, port.torch_to_tf(torch_model, keras_model)
    reverse = impls.torch.DeepLabV2(21, scales, **settings).eval()
    port.torch_to_tf(torch_model, keras_model)  # give Keras non-default weights, then port them back
    return reverse, keras_model, port.tf_to_torch(keras_model, reverse)


def _maps(torch_model, keras_model, images):
    with torch.no_grad():
        torch_maps = torch_model.feature_maps(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    return torch_maps, {k: v.numpy() for k, v in keras_model.feature_maps(tf.constant(images)).items()}


@pytest.mark.parametrize("direction", ["torch->tf", "tf->torch"])
def test_feature_ported_deeplab_agrees_layer_by_layer(direction):
    torch_model, keras_model, report = _pair(direction)
    assert len(report.layers) == 212, str(report)  # 104 convolutions, 104 BatchNorms, 4 ASPP branches
    images = (np.random.default_rng(2).random((1, 97, 113, 3)) * 255).astype(np.float32)
    torch_maps, keras_maps = _maps(torch_model, keras_model, images)
    assert list(torch_maps) == list(keras_maps) and list(torch_maps)[-1] == "fused"
    assert port.first_difference(torch_maps, keras_maps, rtol=PARITY) is None, port.layer_differences(
        torch_maps, keras_maps)
    assert keras_maps["fused"].shape == (1, 13, 15, 21)


def test_feature_batchnorm_epsilon_and_momentum_are_converted():
    torch_model, keras_model, _ = _pair("torch->tf", scales=(1.0,))
    layer = next(found for found in keras_model._flatten_layers() if found.name == "bn2a_branch2a")
    assert (layer.epsilon, layer.momentum) == (1e-5, pytest.approx(0.9))
    layer.epsilon, layer.momentum = 1e-3, 0.99  # Keras' defaults
    port.tf_to_torch(keras_model, torch_model)
    module = torch_model.backbone.blocks[0].bn2a_branch2a
    assert (module.eps, module.momentum) == (1e-3, pytest.approx(0.01))


def test_feature_multi_scale_output_is_the_max_of_the_scales():
    torch.manual_seed(0)
    model = impls.torch.DeepLabV2(5).eval()
    with torch.no_grad():
        maps = model.feature_maps(torch.rand(1, 3, 41, 57) * 255)
    per_scale = torch.stack([maps[f"fc1_voc12@{s}"] for s in (1.0, 0.75, 0.5)])
    assert all(m.shape == maps["fused"].shape for m in per_scale)
    assert torch.equal(maps["fused"], per_scale.amax(0))


@pytest.mark.parametrize("settings", [
    {"resize": "tf1", "padding": "same", "batchnorm_epsilon": 1e-3},  # DrSleep's port
    {"resize": "half_pixel", "padding": "caffe"},
], ids=["drsleep", "half_pixel"])
def test_feature_each_source_setting_agrees_across_frameworks(settings):
    """Even sizes, where TF's SAME and Caffe's padding differ and every resize mode has its own
    sampling positions; the default (Caffe's) is test_feature_ported_deeplab_agrees_layer_by_layer."""
    torch_model, keras_model, _ = _pair("torch->tf", **settings)
    images = (np.random.default_rng(5).random((1, 96, 112, 3)) * 255).astype(np.float32)
    torch_maps, keras_maps = _maps(torch_model, keras_model, images)
    assert port.first_difference(torch_maps, keras_maps, rtol=PARITY) is None, port.layer_differences(
        torch_maps, keras_maps)


@pytest.mark.parametrize("resize, sizes", [("caffe", (385, 257)), ("tf1", (384, 256)), ("half_pixel", (385, 257))])
def test_feature_scaled_input_sizes_are_each_sources(resize, sizes):
    """Caffe's Interp shrinks then zooms ((513 - 1) // 4 * 3 + 1 = 385), TF1 truncates
    (int(0.75 x 513) = 384), half-pixel rounds up; at 321 Caffe's gives 241 and 161."""
    assert tuple(_models.scaled_size(513, s, resize) for s in (0.75, 0.5)) == sizes
    assert _models.scaled_size(321, 1.0, resize) == 321
    if resize == "caffe":
        assert (_models.scaled_size(321, 0.75, resize), _models.scaled_size(321, 0.5, resize)) == (241, 161)


def _tf1_resize(x, size, mode):
    """TF's own kernels for each mode: align_corners (Caffe's Interp), TF1's resize_images, TF 2's."""
    if mode == "half_pixel":
        return tf.image.resize(x, size).numpy()
    return tf.compat.v1.image.resize_bilinear(x, size, align_corners=mode == "caffe").numpy()


@pytest.mark.parametrize("mode", ["caffe", "tf1", "half_pixel"])
@pytest.mark.parametrize("source, target", [((13, 17), (7, 9)), ((7, 9), (13, 17)), ((65, 65), (49, 33))])
def test_feature_resize_modes_equal_their_reference_kernels(mode, source, target):
    from impls.tf import deeplab as keras_deeplab
    from impls.torch import deeplab as torch_deeplab

    x = np.random.default_rng(6).standard_normal((2, *source, 3)).astype(np.float32)
    expected = _tf1_resize(tf.constant(x), target, mode)
    got = torch_deeplab._resize(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), target, mode)
    # float32 sampling positions computed in another order: a few 1e-5 apart where modes differ by 1e-1
    assert_close(got.numpy().transpose(0, 2, 3, 1), expected, rtol=1e-5, atol=3e-5)
    assert_close(keras_deeplab._resize(tf.constant(x), target, mode).numpy(), expected, rtol=1e-5, atol=3e-5)
    if mode == "caffe":  # Caffe's Interp itself: (H - 1) / (h - 1) between aligned corners
        assert_close(got.numpy(), caffe_interp(x.transpose(0, 3, 1, 2), *target), rtol=1e-5, atol=1e-5)


def test_feature_settings_are_attributes_checked_and_applied_to_every_batchnorm():
    model = impls.torch.DeepLabV2(3, (1.0,))
    model.batchnorm_epsilon, model.resize, model.padding = 1e-3, "tf1", "same"
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    assert (model.resize, model.padding, model.batchnorm_epsilon) == ("tf1", "same", 1e-3)
    keras_model = impls.tf.DeepLabV2(3, (1.0,), batchnorm_epsilon=1e-3)
    keras_model(np.zeros((1, 16, 16, 3), np.float32))
    epsilons = {layer.epsilon for layer in keras_model._flatten_layers()
                if isinstance(layer, tf.keras.layers.BatchNormalization)}
    assert epsilons == {1e-3}
    for bad, match in (({"resize": "bicubic"}, "'resize' must be one of"), ({"padding": "valid"}, "'padding'"),
                       ({"batchnorm_epsilon": 0}, "'batchnorm_epsilon' must be a number in")):
        with pytest.raises(ValueError, match=match):
            impls.torch.DeepLabV2(3, (1.0,), **bad)
        with pytest.raises(ValueError, match=match):
            setattr(model, *next(iter(bad.items())))


def test_feature_epsilon_changes_the_output_as_drsleeps_port():
    torch.manual_seed(0)
    model = impls.torch.DeepLabV2(4, (1.0,)).eval()
    _randomise_batchnorm(model, 3)
    images = torch.rand(1, 3, 33, 33) * 255
    with torch.no_grad():
        caffe_logits = model(images)
        model.batchnorm_epsilon = 1e-3
        drsleep_logits = model(images)
    assert not torch.allclose(caffe_logits, drsleep_logits, rtol=1e-4)


def test_feature_state_dict_with_the_older_aspp_names_loads():
    torch.manual_seed(0)
    old = impls.torch.ASPP(8, 3, rates=(2, 4))
    state = {key.replace("fc1_voc12_c0", "aspp_r2").replace("fc1_voc12_c1", "aspp_r4"): value
             for key, value in old.state_dict().items()}
    assert sorted(state) == ["aspp_r2.bias", "aspp_r2.weight", "aspp_r4.bias", "aspp_r4.weight"]
    fresh = impls.torch.ASPP(8, 3, rates=(2, 4))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.fc1_voc12_c1.weight, old.fc1_voc12_c1.weight)
    model = impls.torch.DeepLabV2(3, (1.0,))
    whole = {key.replace("aspp.fc1_voc12_c0", "aspp.aspp_r6"): value for key, value in model.state_dict().items()}
    assert "aspp.aspp_r6.weight" in whole
    impls.torch.DeepLabV2(3, (1.0,)).load_state_dict(whole)


def _largefov_pair(direction):
    torch.manual_seed(0)
    torch_model = impls.torch.DeepLabLargeFOV(5).eval()
    keras_model = impls.tf.DeepLabLargeFOV(5)
    keras_model(np.zeros((1, 17, 17, 3), np.float32))
    if direction == "torch->tf":
        return torch_model, keras_model, port.torch_to_tf(torch_model, keras_model)
    port.torch_to_tf(torch_model, keras_model)
    reverse = impls.torch.DeepLabLargeFOV(5).eval()
    return reverse, keras_model, port.tf_to_torch(keras_model, reverse)


@pytest.mark.parametrize("direction", ["torch->tf", "tf->torch"])
def test_feature_largefov_agrees_layer_by_layer(direction):
    torch_model, keras_model, report = _largefov_pair(direction)
    assert len(report.layers) == 16, str(report)  # 13 convolutions, fc6, fc7, fc8_voc12
    images = (np.random.default_rng(7).random((1, 65, 50, 3)) * 255 - 120).astype(np.float32)
    torch_maps, keras_maps = _maps(torch_model, keras_model, images)
    assert list(torch_maps) == list(keras_maps) and list(torch_maps)[-1] == "fc8_voc12"
    assert "pool5a" in torch_maps and "fc6" in torch_maps
    assert port.first_difference(torch_maps, keras_maps, rtol=PARITY) is None, port.layer_differences(
        torch_maps, keras_maps)
    assert keras_maps["fc8_voc12"].shape == (1, 9, 8, 5)


def test_feature_largefov_pool5a_counts_the_padding_in_the_average():
    torch_model = impls.torch.DeepLabLargeFOV(2).eval()
    with torch.no_grad():
        maps = torch_model.feature_maps(torch.rand(1, 3, 25, 25) * 255)
    pool5 = maps["pool5"][0, :, :2, :2]
    assert_close(maps["pool5a"][0, :, 0, 0], pool5.sum((1, 2)) / 9)  # the corner: 4 pixels, divisor 9


def test_cardinality_largefov_output_stride_8():
    model = impls.torch.DeepLabLargeFOV().to("meta").eval()
    for size, expected in ((513, 65), (321, 41), (500, 64)):
        assert model(torch.empty(1, 3, size, size, device="meta")).shape[2:] == (expected, expected)


def _dilated_conv_loops(x, kernel, bias, rate):
    """Plain-loop 'same' dilated convolution of NHWC x with an HWIO kernel (the ASPP oracle)."""
    n, height, width, _ = x.shape
    size = kernel.shape[0]
    out = np.zeros((n, height, width, kernel.shape[3])) + bias
    for b in range(n):
        for i in range(height):
            for j in range(width):
                for u in range(size):
                    for v in range(size):
                        y, z = i + (u - size // 2) * rate, j + (v - size // 2) * rate
                        if 0 <= y < height and 0 <= z < width:
                            out[b, i, j] += x[b, y, z] @ kernel[u, v]
    return out


@pytest.mark.parametrize("rate", [1, 2, 6])
def test_feature_aspp_equals_explicit_dilated_convolutions(rate):
    rng = np.random.default_rng(rate)
    x = rng.standard_normal((1, 9, 11, 4))
    torch_aspp = impls.torch.ASPP(4, 3, rates=(rate, rate + 1)).double()
    branches = zip((torch_aspp.fc1_voc12_c0, torch_aspp.fc1_voc12_c1), (rate, rate + 1), strict=True)
    expected = sum(_dilated_conv_loops(x, branch.weight.detach().numpy().transpose(2, 3, 1, 0),
                                       branch.bias.detach().numpy(), r) for branch, r in branches)
    with torch.no_grad():
        got = torch_aspp(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    assert_close(got, expected)
    keras_aspp = impls.tf.ASPP(4, 3, rates=(rate, rate + 1))
    keras_aspp(tf.constant(x, tf.float32))
    port.torch_to_tf(torch_aspp, keras_aspp)
    assert_close(keras_aspp(tf.constant(x, tf.float32)).numpy(), expected, rtol=1e-5, atol=1e-5)  # float32


@pytest.mark.slow
def test_feature_ported_deeplab_agrees_at_321():
    torch_model, keras_model, _ = _pair("torch->tf")
    images = (np.random.default_rng(4).random((1, 321, 321, 3)) * 255).astype(np.float32)
    torch_maps, keras_maps = _maps(torch_model, keras_model, images)
    assert keras_maps["fused"].shape == (1, 41, 41, 21)
    assert port.first_difference(torch_maps, keras_maps, rtol=PARITY) is None


def test_cardinality_output_stride_8():
    model = impls.torch.DeepLabV2().to("meta").eval()
    for size in (321, 513, 97, 64, 500):
        out = model(torch.empty(1, 3, size, size, device="meta"))
        assert out.shape[2] == out.shape[3] and abs(out.shape[2] - size / 8) <= 2, (size, out.shape)
    assert tuple(model(torch.empty(1, 3, 321, 513, device="meta")).shape[2:]) == (41, 65)


@pytest.mark.parametrize("make, error, match", [
    (lambda: impls.torch.DeepLabV2()(torch.zeros(1, 1, 64, 64)), ValueError, r"must have 3 channels"),
    (lambda: impls.tf.DeepLabV2()(np.zeros((1, 64, 64, 4), np.float32)), ValueError, r"must have 3 channels"),
    (lambda: impls.torch.DeepLabV2()(torch.zeros(1, 3, 3, 64)), ValueError, r"must be at least 4x4, got 3x64"),
    (lambda: impls.torch.DeepLabV2(scales=()), ValueError, "'scales' must be numbers in"),
    (lambda: impls.tf.ASPP(2048, 21, rates=(6, 0)), ValueError, "'rates' must be a positive integer"),
    (lambda: impls.torch.ASPP(0, 21), ValueError, "'in_channels' must be a positive integer"),
])
def test_exception_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_exception_batchnorm_with_cumulative_momentum_is_refused_and_nothing_copied():
    """torch's momentum=None (cumulative average) used to become Keras momentum 1.0, which
    freezes the moving statistics; now the port refuses it before copying anything."""
    import keras

    module = torch.nn.Sequential()
    module.add_module("bn", torch.nn.BatchNorm2d(3, momentum=None))
    with torch.no_grad():
        module.bn.weight.fill_(2.0)
    inputs = keras.Input((4, 4, 3))
    keras_model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))
    with pytest.raises(ValueError, match=r"BatchNorm 'bn' has momentum=None.*nothing was copied"):
        port.torch_to_tf(module, keras_model)
    assert np.array_equal(keras_model.get_layer("bn").gamma.numpy(), np.ones(3, np.float32))
    assert keras_model.get_layer("bn").momentum == pytest.approx(0.99)


def test_feature_keras_deeplab_and_aspp_configs_round_trip_names():
    pytest.importorskip("tensorflow")
    import impls.tf

    aspp = impls.tf.ASPP(8, 3, rates=(2, 4), name="head")
    clone = impls.tf.ASPP.from_config(aspp.get_config())
    assert (clone.name, clone.rates) == ("head", (2, 4))
    assert [branch.name for branch in clone.branches] == ["fc1_voc12_c0", "fc1_voc12_c1"]
    model = impls.tf.DeepLabV2(4, scales=(1.0,), resize="tf1", batchnorm_epsilon=1e-3, padding="same",
                               name="deeplab_voc")
    clone = impls.tf.DeepLabV2.from_config(model.get_config())
    assert (clone.name, clone.num_classes, clone.scales) == ("deeplab_voc", 4, (1.0,))
    assert (clone.resize, clone.batchnorm_epsilon, clone.padding) == ("tf1", 1e-3, "same")
    largefov = impls.tf.DeepLabLargeFOV.from_config(impls.tf.DeepLabLargeFOV(7, name="lfov").get_config())
    assert (largefov.name, largefov.num_classes) == ("lfov", 7)
