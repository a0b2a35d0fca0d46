"""DeepLab-v2 and ASPP in torch and Keras: exact ports both ways (BatchNorm's epsilon and momentum
converted), layer-by-layer agreement, ASPP against an explicit dilated convolution, fusion."""

import numpy as np
import pytest

from impls import port
from impls.testing import assert_close

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


def _pair(direction, scales=(1.0, 0.75, 0.5)):
    torch.manual_seed(0)
    torch_model = impls.torch.DeepLabV2(21, scales).eval()
    _randomise_batchnorm(torch_model, 1)
    keras_model = impls.tf.DeepLabV2(21, scales)
    keras_model(np.zeros((1, 16, 16, 3), np.float32))
    if direction == "torch->tf":
        return torch_model, keras_model, port.torch_to_tf(torch_model, keras_model)
    reverse = impls.torch.DeepLabV2(21, scales).eval()
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
    per_scale = torch.stack([maps[f"aspp@{s}"] for s in (1.0, 0.75, 0.5)])
    assert all(m.shape == maps["fused"].shape for m in per_scale)
    assert torch.equal(maps["fused"], per_scale.amax(0))


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
    expected = sum(_dilated_conv_loops(x, getattr(torch_aspp, f"aspp_r{r}").weight.detach().numpy().transpose(
        2, 3, 1, 0), getattr(torch_aspp, f"aspp_r{r}").bias.detach().numpy(), r) for r in (rate, rate + 1))
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
    assert (clone.name, clone.rates, [b.name for b in clone.branches]) == ("head", (2, 4), ["aspp_r2", "aspp_r4"])
    model = impls.tf.DeepLabV2(4, scales=(1.0,), name="deeplab_voc")
    clone = impls.tf.DeepLabV2.from_config(model.get_config())
    assert (clone.name, clone.num_classes, clone.scales) == ("deeplab_voc", 4, (1.0,))
