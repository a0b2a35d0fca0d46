"""CRF-as-RNN trained end to end on synthetic scenes, in torch or Keras.

    python -m impls.examples.crfrnn_synthetic --framework torch   (or tf)

A small fully convolutional head predicts class scores at 1/8 resolution from the image and
upsamples them with FCN's frozen bilinear deconvolution: its boundaries are as coarse as an
FCN-32s's. The head is trained alone; then a copy of it, followed by CrfRnn, is fine-tuned end
to end while the head alone trains for the same number of further steps. Both are scored by
mean IoU on held-out scenes.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from impls.numpy.metrics import confusion_matrix, mean_iou
from impls.synthetic import synthetic_set

CLASSES = 4
SIZE = (64, 64)
STRIDE = 8


@dataclasses.dataclass(frozen=True)
class Result:
    framework: str
    head_miou: float
    crfrnn_miou: float
    seconds: float

    @property
    def gain(self):
        return self.crfrnn_miou - self.head_miou

    def __str__(self):
        return (f"{self.framework}: held-out mean IoU, head alone {self.head_miou:.4f}, head + CrfRnn "
                f"{self.crfrnn_miou:.4f} (gain {self.gain:+.4f}); {self.seconds:.0f} s")


def scenes(count, seed):
    """(images uint8 (N, H, W, 3), labels int64 (N, H, W))."""
    data = synthetic_set(count, *SIZE, num_classes=CLASSES, seed=seed)
    return np.stack([d[0] for d in data]), np.stack([d[1] for d in data]).astype(np.int64)


def score(predicted_labels, labels):
    return float(mean_iou(confusion_matrix(predicted_labels, labels, CLASSES)))


def train_and_evaluate(framework, *, head_steps=200, crf_steps=100, batch=4, seed=0) -> Result:
    train_images, train_labels = scenes(48, seed=seed + 1)
    test_images, test_labels = scenes(16, seed=seed + 2)
    run = {"torch": _torch_run, "tf": _tf_run}[framework]
    start = time.perf_counter()
    head_predictions, crf_predictions = run(train_images, train_labels, test_images, head_steps, crf_steps, batch,
                                            seed)
    return Result(framework, score(head_predictions, test_labels), score(crf_predictions, test_labels),
                  time.perf_counter() - start)


def _batches(rng, count, batch, steps):
    for _ in range(steps):
        yield rng.choice(count, size=batch, replace=False)


# torch -------------------------------------------------------------------------------------

def _torch_run(train_images, train_labels, test_images, head_steps, crf_steps, batch, seed):
    import copy

    import torch

    import impls.torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(train_images).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(train_labels)
    head = _torch_head(torch, impls.torch)
    crf = impls.torch.CrfRnn(CLASSES, theta_alpha=20, theta_beta=20, theta_gamma=3, iterations=5)

    def train(model_parts, steps, learning_rate):
        parameters = [p for part in model_parts for p in part.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=learning_rate)
        for index in _batches(rng, len(images), batch, steps):
            logits = _torch_forward(model_parts, images[index])
            loss = torch.nn.functional.cross_entropy(logits, labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    train([head], head_steps, 1e-2)
    head_with_crf = copy.deepcopy(head)
    train([head], crf_steps, 1e-3)
    train([head_with_crf, crf], crf_steps, 1e-3)
    test = torch.from_numpy(test_images).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        return (_torch_forward([head], test).argmax(1).numpy(),
                _torch_forward([head_with_crf, crf], test).argmax(1).numpy())


def _torch_head(torch, backend):
    nn = torch.nn
    layers = []
    channels = 3
    for width in (16, 32, 32):
        layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU()]
        channels = width
    layers += [nn.Conv2d(channels, CLASSES, 1), backend.BilinearUpsample(CLASSES, STRIDE, trainable=False)]
    return nn.Sequential(*layers)


def _torch_forward(parts, images):
    logits = parts[0](images.float() / 255.0)
    return parts[1](logits, images) if len(parts) > 1 else logits


# Keras -------------------------------------------------------------------------------------

def _tf_run(train_images, train_labels, test_images, head_steps, crf_steps, batch, seed):
    import keras
    import tensorflow as tf

    import impls.tf

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    head = _keras_head(keras, impls.tf)
    crf = impls.tf.CrfRnn(CLASSES, theta_alpha=20, theta_beta=20, theta_gamma=3, iterations=5)
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def train(parts, steps, learning_rate):
        optimizer = keras.optimizers.Adam(learning_rate)
        variables = [v for part in parts for v in part.trainable_variables]
        for index in _batches(rng, len(train_images), batch, steps):
            with tf.GradientTape() as tape:
                loss = loss_function(train_labels[index], _keras_forward(parts, train_images[index]))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    train([head], head_steps, 1e-2)
    head_with_crf = keras.models.clone_model(head)
    head_with_crf.set_weights(head.get_weights())
    train([head], crf_steps, 1e-3)
    train([head_with_crf, crf], crf_steps, 1e-3)
    return (np.argmax(_keras_forward([head], test_images), -1),
            np.argmax(_keras_forward([head_with_crf, crf], test_images), -1))


def _keras_head(keras, backend):
    layers = [keras.Input((*SIZE, 3))]
    for width in (16, 32, 32):
        layers.append(keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu"))
    layers += [keras.layers.Conv2D(CLASSES, 1), backend.BilinearUpsample(CLASSES, STRIDE, trainable=False)]
    return keras.Sequential(layers)


def _keras_forward(parts, images):
    import tensorflow as tf

    logits = parts[0](tf.cast(images, tf.float32) / 255.0)
    return parts[1](logits, images) if len(parts) > 1 else logits


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("torch", "tf"), default="torch")
    parser.add_argument("--head-steps", type=int, default=200)
    parser.add_argument("--crf-steps", type=int, default=100)
    args = parser.parse_args(argv)
    print(train_and_evaluate(args.framework, head_steps=args.head_steps, crf_steps=args.crf_steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
