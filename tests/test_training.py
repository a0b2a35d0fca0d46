"""Training pieces of the FCN/DeepLab seeds in every backend: the loss that ignores non-class
labels, nearest-neighbour label downscaling, the poly schedule, DeepLab's 10x/20x multipliers,
and the seed tutorial's single-image FCN-32s training, whose loss must fall."""

import numpy as np
import pytest

from impls import port
from impls.synthetic import synthetic_scene
from impls.testing import Backend, assert_close, to_numpy


def _loop_loss(logits, labels):
    total, count = 0.0, 0
    for index in np.ndindex(labels.shape):
        label = labels[index]
        if 0 <= label < logits.shape[-1]:
            row = logits[index].astype(np.float64)
            total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[label]
            count += 1
    return total / count if count else 0.0


def test_feature_loss_ignores_labels_outside_the_classes(backend, dtype, rng):
    logits = rng.standard_normal((2, 7, 9, 5)).astype(dtype)
    labels = rng.integers(0, 5, (2, 7, 9))
    labels[0, :2] = 255
    labels[1, 3, :4] = 5  # >= num_classes: ignored too
    loss = backend.module.segmentation_loss(backend.from_nhwc(logits), backend.tensor(labels))
    assert_close(np.asarray(to_numpy(loss), np.float64), np.float64(_loop_loss(logits, labels)),
                 rtol=1e-6 if dtype == np.float32 else 1e-12, atol=0)  # float32 sums of 100 terms


def test_feature_loss_of_nothing_counted_is_zero(backend):
    loss = backend.module.segmentation_loss(backend.from_nhwc(np.ones((1, 2, 2, 3), np.float32)),
                                            backend.tensor(np.full((1, 2, 2), 255)))
    assert float(to_numpy(loss)) == 0.0


def test_feature_downscaled_labels_agree_and_keep_255(backend, rng):
    labels = rng.integers(0, 21, (2, 37, 45)).astype(np.int64)
    labels[:, 10:20] = 255
    expected = labels[:, np.floor((np.arange(5) + 0.5) * 37 / 5).astype(int)][
        :, :, np.floor((np.arange(6) + 0.5) * 45 / 6).astype(int)]
    got = to_numpy(backend.module.downscale_labels(backend.tensor(labels), (5, 6)))
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(got)) <= set(np.unique(labels))


def test_feature_poly_learning_rate():
    import impls.numpy

    assert impls.numpy.poly_learning_rate(2.5e-4, 0, 100) == 2.5e-4
    assert impls.numpy.poly_learning_rate(1.0, 50, 100) == pytest.approx(0.5 ** 0.9)
    assert impls.numpy.poly_learning_rate(1.0, 120, 100) == 0.0
    with pytest.raises(ValueError, match="'step' must be >= 0"):
        impls.numpy.poly_learning_rate(1.0, -1, 100)


def test_feature_poly_schedule_drives_torch_and_keras_alike():
    torch = pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    import impls.torch

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: impls.torch.poly_learning_rate(1.0, s, 10))
    torch_rates = []
    for _ in range(10):
        torch_rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    keras_schedule = keras.optimizers.schedules.PolynomialDecay(0.1, 10, end_learning_rate=0.0, power=0.9)
    np.testing.assert_allclose(torch_rates, [float(keras_schedule(s)) for s in range(10)], rtol=1e-6)


def _tiny_models():
    """A conv trunk + ASPP classifier in both frameworks, with the same weights."""
    import keras
    import torch

    import impls.tf
    import impls.torch

    class TorchTiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.aspp = impls.torch.ASPP(8, 3, rates=(1, 2))

        def forward(self, x):
            return self.aspp(torch.relu(self.conv1(x)))

    class KerasTiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv1 = keras.layers.Conv2D(8, 3, padding="same", name="conv1")
            self.aspp = impls.tf.ASPP(8, 3, rates=(1, 2))

        def call(self, x):
            return self.aspp(keras.ops.relu(self.conv1(x)))

    torch.manual_seed(0)
    torch_model, keras_model = TorchTiny(), KerasTiny()
    keras_model(np.zeros((1, 8, 8, 3), np.float32))
    port.torch_to_tf(torch_model, keras_model)
    return torch_model, keras_model, TorchTiny


def test_feature_learning_rate_multipliers_agree_between_frameworks(rng):
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("tensorflow")
    import impls.tf.training
    import impls.torch.training

    torch_model, keras_model, make_torch = _tiny_models()
    images = rng.random((2, 11, 13, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 11, 13))
    labels[0, 0] = 255
    learning_rate = 0.05

    groups = impls.torch.training.parameter_groups(torch_model, learning_rate)
    assert [g["multiplier"] for g in groups] == [1.0, 10.0, 20.0] and len(groups[2]["params"]) == 2
    optimizer = torch.optim.SGD(groups, lr=learning_rate)
    loss = impls.torch.segmentation_loss(torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())),
                                         torch.from_numpy(labels))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    multipliers = impls.tf.training.learning_rate_multipliers(keras_model)
    with tf.GradientTape() as tape:
        keras_loss = impls.tf.segmentation_loss(keras_model(images), labels)
    variables = keras_model.trainable_variables
    gradients = [g * multipliers.get(v.path, 1.0) for g, v in zip(tape.gradient(keras_loss, variables), variables,
                                                                     strict=True)]
    tf.keras.optimizers.SGD(learning_rate).apply_gradients(zip(gradients, variables, strict=True))

    assert_close(float(loss.detach()), float(keras_loss), rtol=1e-6)
    stepped = make_torch()
    port.tf_to_torch(keras_model, stepped)
    for (name, ours), theirs in zip(torch_model.named_parameters(), stepped.parameters(), strict=True):
        assert_close(ours.detach(), theirs.detach(), rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_smoke_single_image_fcn32s_training_loss_falls(framework):
    """The seed tutorial: one image, FCN-32s, Adam at 1e-4; the loss must fall."""
    pytest.importorskip({"torch": "torch", "tf": "tensorflow"}[framework])
    image, labels = synthetic_scene(48, 48, num_classes=3, seed=7)
    images, labels = image[None].astype(np.float32), labels[None].astype(np.int64)
    losses = _train_fcn32s(framework, images, labels, steps=6)
    assert losses[-1] < losses[0] * 0.9, losses


def _train_fcn32s(framework, images, labels, steps):
    backend = Backend(framework)
    if framework == "torch":
        import torch

        import impls.torch

        torch.manual_seed(0)
        model = impls.torch.FCN("32s", 3)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        x, y, losses = backend.from_nhwc(images), torch.from_numpy(labels), []
        for _ in range(steps):
            loss = impls.torch.segmentation_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        return losses
    import keras
    import tensorflow as tf

    import impls.tf

    keras.utils.set_random_seed(0)
    model = impls.tf.FCN("32s", 3)
    optimizer, losses = keras.optimizers.Adam(1e-4), []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = impls.tf.segmentation_loss(model(images, training=True), labels)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("logits_shape, labels_shape, labels_dtype, error, match", [
    ((1, 4, 4, 3), (1, 4, 5), np.int64, ValueError, r"must have the logits' \(N, H, W\) = \(1, 4, 4\)"),
    ((1, 4, 4, 3), (1, 4, 4), np.float32, TypeError, "must hold integer labels"),
])
def test_exception_bad_loss_inputs(backend, logits_shape, labels_shape, labels_dtype, error, match):
    logits = backend.from_nhwc(np.zeros(logits_shape, np.float32))
    with pytest.raises(error, match=match):
        backend.module.segmentation_loss(logits, backend.tensor(np.zeros(labels_shape, labels_dtype)))


def test_exception_loss_needs_a_batch():
    import impls.numpy

    with pytest.raises(ValueError, match="'logits' must be 4-D"):
        impls.numpy.segmentation_loss(np.zeros((4, 4, 3)), np.zeros((4, 4), np.int64))
