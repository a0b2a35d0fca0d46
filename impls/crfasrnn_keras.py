"""crfasrnn_keras compatibility: run its trained network (crfrnn_keras_model.h5) with this project.

crfasrnn_keras (github.com/sadeepj/crfasrnn_keras) ships the CRF-RNN network (FCN-8s on VGG-16
followed by CRF-as-RNN, converted from the Caffe model) as a Keras 2 model, a weight file and a
demo, run_demo.py, built on two helpers of its src/util.py. This module gives the same names:

- `get_preprocessed_image(file_name)`: its pre-processing, bit for bit (fit the longer side to
  500 with bilinear resampling, subtract the ImageNet means, RGB -> BGR, zero-pad to 500x500),
  as `preprocess(read_image(file_name))`: `preprocess(image, size=500)` takes an RGB array and
  can skip the resize and padding (`size=None`): our network runs at any size.
- `get_label_image(probs, img_h, img_w, original_size)`: its label image, a palette PNG with
  the PASCAL VOC colours at the input's size.
- `get_crfrnn_model_def(framework="tf")`: the network, as impls.tf.CrfRnnNet (Keras 3, NHWC)
  or impls.torch.CrfRnnNet (NCHW); `predict(model, batch)` runs either on the NHWC batch.
- `CrfRnnLayer`: the drop-in of its layer (impls.tf.crfrnn.CrfRnnLayer), imported on first use.
- `WEIGHTS_URL`: where its trained weights are published; impls.port.load_keras2_h5 reads them
  into either framework. Nothing here downloads them.

What differs from the original: a grayscale, palette or other non-RGB image raises ValueError
(the original asserts on 2-D arrays and mis-reads other modes, e.g. CMYK's first three
channels as RGB); the network is not tied to a 500x500 input nor to a batch of one; and this
module imports with NumPy and Pillow alone, TensorFlow or torch only when a model is asked for.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np

from impls import _checks

# CrfRnnLayer is left out: `import *` would import TensorFlow for it (see __getattr__).
__all__ = ["WEIGHTS_URL", "IMAGENET_MEANS", "INPUT_SIZE", "read_image", "preprocess", "get_preprocessed_image",
           "get_label_image", "predict", "get_crfrnn_model_def"]

WEIGHTS_URL = "https://github.com/sadeepj/crfasrnn_keras/releases/download/v1.0/crfrnn_keras_model.h5"
# The original's means, RGB, subtracted in float32 as it does (the exact bits depend on it).
IMAGENET_MEANS = np.array([123.68, 116.779, 103.939], dtype=np.float32)
# The side the original fits every image to, and pads it to: its Keras model's fixed input.
INPUT_SIZE = 500
# The network's settings in crfasrnn_keras's get_crfrnn_model_def.
_MODEL_SETTINGS = dict(num_classes=21, theta_alpha=160.0, theta_beta=3.0, theta_gamma=3.0, iterations=10)
_FRAMEWORKS = ("tf", "torch")
# Image modes whose first three channels are R, G, B: what the original reads correctly.
_RGB_MODES = ("RGB", "RGBA")


def preprocess(image, size: int | None = INPUT_SIZE):
    """(batch (1, S, S, 3) float32 BGR minus the ImageNet means, img_h, img_w, original_size) of an
    RGB uint8 array (H, W, 3) (a 4th, alpha, channel is dropped after resizing, as the original
    does). With `size` S, the image is resized with bilinear resampling so that its longer side
    is S (the original's arithmetic: int(w * min(S / w, S / h))) and zero-padded at the bottom
    and right to S x S; img_h, img_w are the resized image's, original_size the input's (W, H).
    With size=None the image keeps its size and is not padded (batch (1, H, W, 3))."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"preprocess: argument 'image' must be a uint8 RGB array, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] not in (3, 4) or 0 in image.shape:
        raise ValueError(f"preprocess: argument 'image' must be an RGB array (H, W, 3) (or RGBA (H, W, 4)), "
                         f"got shape {image.shape}; convert a grayscale image to RGB first")
    if size is not None:
        size = _checks.positive_int(size, op="preprocess", name="size")
    original_size = (image.shape[1], image.shape[0])
    if size is not None:
        w, h = original_size
        ratio = min(float(size) / w, float(size) / h)
        # Through Pillow, in the image's own mode, as the original: RGBA resizes premultiplied.
        resized = Image.fromarray(image).resize((int(w * ratio), int(h * ratio)), resample=Image.Resampling.BILINEAR)
        image = np.asarray(resized)
    im = image.astype(np.float32)[:, :, :3] - IMAGENET_MEANS
    im = im[:, :, ::-1]  # RGB -> BGR: the Caffe model's channel order
    img_h, img_w = im.shape[:2]
    if size is not None:
        im = np.pad(im, ((0, size - img_h), (0, size - img_w), (0, 0)), mode="constant", constant_values=0)
    return np.ascontiguousarray(im, dtype=np.float32)[None], img_h, img_w, original_size


def read_image(file_name) -> np.ndarray:
    """(H, W, 3) uint8 pixels of an RGB image file ((H, W, 4) of an RGBA one, which preprocess
    resizes as the original does). Any other mode (grayscale, palette, CMYK, ...) raises
    ValueError that names the file and its mode: convert it to RGB first."""
    from PIL import Image

    with Image.open(file_name) as image:
        if image.mode not in _RGB_MODES:
            raise ValueError(f"read_image: {file_name} is a {image.mode!r} image; only RGB images are supported "
                             f"(as in crfasrnn_keras): convert it first, e.g. Image.open(path).convert('RGB')")
        return np.asarray(image)


def get_preprocessed_image(file_name):
    """crfasrnn_keras's util.get_preprocessed_image: (batch (1, 500, 500, 3) float32, img_h, img_w,
    original_size (W, H)) of the image file, bit for bit. An image that is not RGB (grayscale,
    palette, CMYK, ...) raises ValueError: convert it to RGB first."""
    return preprocess(read_image(file_name), INPUT_SIZE)


def get_label_image(probs, img_h, img_w, original_size):
    """crfasrnn_keras's util.get_label_image: the 'P' image of argmax(probs) over the classes (the
    last axis of (H, W, C), or of a batch of one (1, H, W, C)), cropped to img_h x img_w, with
    the PASCAL VOC palette, resized (nearest: Pillow's only resampling of palette images) to
    original_size (W, H). Logits give the same labels as probabilities."""
    from PIL import Image

    from impls.voc import palette

    probs = np.asarray(probs)
    if probs.ndim == 4 and probs.shape[0] == 1:
        probs = probs[0]
    if probs.ndim != 3 or 0 in probs.shape:
        raise ValueError(f"get_label_image: argument 'probs' must be (H, W, C) class scores (or a batch of one), "
                         f"got shape {probs.shape}")
    labels = np.ascontiguousarray(probs.argmax(axis=2).astype(np.uint8)[:img_h, :img_w])
    label_image = Image.fromarray(labels, "P")
    label_image.putpalette(palette().reshape(-1).tolist())
    return label_image.resize(tuple(original_size))


def predict(model, batch) -> np.ndarray:
    """(N, H, W, C) float32 NumPy class scores of a torch or Keras model (a CrfRnnNet) on a
    (N, H, W, 3) float32 batch such as get_preprocessed_image's: a torch model runs in eval mode
    without gradients on its own device, in NCHW, and its output comes back as NHWC."""
    batch = np.asarray(batch)
    _checks.float_batch(batch.shape, batch.dtype.name, op="predict", layout="NHWC", name="batch")
    _checks.channel_count(batch.shape[3], 3, op="predict", layout="NHWC", name="batch")
    # A model's framework is already imported if the model exists: look in sys.modules rather
    # than import torch or TensorFlow (either may be absent, and importing one costs seconds).
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return _predict_torch(torch, model, batch)
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.layers.Layer):
        return np.asarray(keras.ops.convert_to_numpy(model(batch, training=False)), dtype=np.float32)
    raise TypeError(f"predict: argument 'model' must be a torch.nn.Module or a Keras model, "
                    f"got {type(model).__name__}")


def _predict_torch(torch, model, batch):
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(device))
    return out.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32, copy=False)


def get_crfrnn_model_def(framework: str = "tf"):
    """crfasrnn_keras's network with its settings (21 classes, theta_alpha 160, theta_beta 3,
    theta_gamma 3, 10 iterations), untrained but with its weights created: impls.tf.CrfRnnNet
    (NHWC) for "tf", impls.torch.CrfRnnNet (NCHW) for "torch". Load the trained weights with
    impls.port.load_keras2_h5(model, "crfrnn_keras_model.h5")."""
    _checks.one_of(framework, _FRAMEWORKS, op="get_crfrnn_model_def", name="framework")
    module = importlib.import_module(f"impls.{framework}")
    model = module.CrfRnnNet(**_MODEL_SETTINGS)
    if framework == "tf":
        # A Keras model creates its weights on its first call (the original's functional model
        # had them at once): the smallest image makes them, so that weights can be loaded.
        model(np.zeros((1, 1, 1, 3), np.float32))
    return model


def __getattr__(name):
    # CrfRnnLayer needs TensorFlow: import it when asked for, not with this module.
    if name == "CrfRnnLayer":
        from impls.tf.crfrnn import CrfRnnLayer

        return CrfRnnLayer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
