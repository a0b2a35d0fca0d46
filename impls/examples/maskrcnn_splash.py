"""matterport's balloon sample (samples/balloon/balloon.py, splash): colour splash of Mask R-CNN's detections.

    python -m impls.examples.maskrcnn_splash balloon.jpg --weights mask_rcnn_balloon.h5 \\
        --framework torch --output splash.png

The flow of the sample's `detect_and_color_splash`: read the image, build the network with the
sample's inference configuration (BalloonConfig: NUM_CLASSES 1 + 1, DETECTION_MIN_CONFIDENCE 0.9,
matterport's defaults otherwise: ResNet-101, IMAGE_MIN_DIM 800, IMAGE_MAX_DIM 1024; one image per
batch), load matterport's Keras 2 weight file into the network of the chosen framework
(impls.port.load_keras2_h5, strict: a file that does not match the network is refused), run
`model.detect([image])[0]` and save `color_splash(image, r["masks"])`, the image in grey with its
colours kept where any instance is, as a PNG of the input's size.

`--backbone`, `--num-classes`, `--image-size` (IMAGE_MAX_DIM = S, IMAGE_MIN_DIM = min(800, S))
and `--min-confidence` override the configuration to match another matterport weight file
(mask_rcnn_coco.h5: --num-classes 81 --min-confidence 0.7).

The image: RGB; RGBA (alpha dropped), grayscale and palette images are converted to RGB, as
matterport's Dataset.load_image does; 16-bit and float images are refused.

The weights, e.g. mask_rcnn_balloon.h5, are matterport's (https://github.com/matterport/Mask_RCNN/releases);
they are not downloaded here.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

from impls import _maskrcnn

RELEASES_URL = "https://github.com/matterport/Mask_RCNN/releases"
# The balloon sample's BalloonConfig (and matterport's Config defaults for the rest).
BALLOON = dict(NAME="balloon", NUM_CLASSES=1 + 1, DETECTION_MIN_CONFIDENCE=0.9, BACKBONE="resnet101",
               IMAGE_MIN_DIM=800, IMAGE_MAX_DIM=1024)
# argparse's status for a usage error, kept for a missing weight file: the command cannot run.
EXIT_USAGE = 2
EXIT_FAILED = 1
# Image modes read as they are, or converted to RGB by Pillow (8 bits a channel); others refused.
_READ_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1")


def inference_config(*, backbone: str = BALLOON["BACKBONE"], num_classes: int = BALLOON["NUM_CLASSES"],
                     image_size: int | None = None,
                     min_confidence: float = BALLOON["DETECTION_MIN_CONFIDENCE"]) -> _maskrcnn.Config:
    """The balloon sample's InferenceConfig (GPU_COUNT 1, IMAGES_PER_GPU 1) with the overrides;
    `image_size` S sets IMAGE_MAX_DIM = S and IMAGE_MIN_DIM = min(800, S). A bad value raises
    the Config's TypeError/ValueError."""
    fields = dict(BALLOON, BACKBONE=backbone, NUM_CLASSES=num_classes, DETECTION_MIN_CONFIDENCE=min_confidence,
                  GPU_COUNT=1, IMAGES_PER_GPU=1)
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 64 or image_size % 64:
            raise ValueError(f"argument --image-size must be a positive multiple of 64 (matterport's FPN needs "
                             f"2**6), got {image_size!r}")
        fields.update(IMAGE_MAX_DIM=image_size, IMAGE_MIN_DIM=min(BALLOON["IMAGE_MIN_DIM"], image_size))
    return _maskrcnn.Config(**fields)


def read_image(path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an image file: RGBA loses its alpha, grayscale and palette
    images are converted to RGB; 16-bit or float images raise ValueError naming the file."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in _READ_MODES:
            raise ValueError(f"read_image: {path} is a {image.mode!r} image (more than 8 bits a channel); "
                             f"convert it to 8-bit RGB first")
        if image.mode == "RGBA":  # matterport's load_image: image[..., :3]
            return np.ascontiguousarray(np.asarray(image)[..., :3])
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def tf_model_class():
    """impls.tf.maskrcnn.MaskRCNN, or RuntimeError saying why the Keras model cannot be used."""
    try:
        from impls.tf.maskrcnn import MaskRCNN
    except ImportError as error:
        raise RuntimeError(f"--framework tf needs TensorFlow and impls.tf.maskrcnn: {error}") from None
    if not callable(getattr(MaskRCNN, "detect", None)):
        raise RuntimeError("--framework tf: impls.tf.maskrcnn.MaskRCNN has no detect(); use --framework torch")
    return MaskRCNN


def build_model(config: _maskrcnn.Config, framework: str = "torch", device: str = "cpu"):
    """matterport's Mask R-CNN for `config` in `framework` (torch or tf), built, weights unset."""
    if framework == "torch":
        from impls.torch.maskrcnn import MaskRCNN

        model = MaskRCNN(config)
        try:
            return model.to(device)
        except (AssertionError, RuntimeError, ValueError) as error:  # torch's "not compiled with CUDA": assert
            raise RuntimeError(f"--device {device}: {error}") from None
    if framework != "tf":
        raise ValueError(f"build_model: framework must be 'torch' or 'tf', got {framework!r}")
    model = tf_model_class()(config)
    # Keras builds the layers on the first call: one on a small blank image, as load_keras2_h5
    # needs a built model (the weights' shapes do not depend on the image size).
    size = 64
    meta = _maskrcnn.compose_image_meta(0, (size, size, 3), (size, size, 3), (0, 0, size, size), 1.0,
                                        np.zeros(config.NUM_CLASSES))
    model(np.zeros((1, size, size, config.IMAGE_CHANNEL_COUNT), np.float32), meta[None].astype(np.float32))
    return model


def load_model(weights_path, config: _maskrcnn.Config, framework: str = "torch", device: str = "cpu"):
    """(the network with matterport's weights of `weights_path`, the load report); a file that
    does not match the network raises ValueError, copying nothing."""
    from impls.port import load_keras2_h5

    model = build_model(config, framework, device)
    return model, load_keras2_h5(model, weights_path, strict=True)


def splash(model, image: np.ndarray) -> tuple[np.ndarray, dict]:
    """(the colour splash (H, W, 3) uint8, matterport's detection dict) of one RGB image."""
    from impls.numpy import color_splash

    result = model.detect([image], verbose=0)[0]
    return np.asarray(color_splash(image, result["masks"])), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=pathlib.Path, help="an RGB image (JPEG, PNG, ...)")
    parser.add_argument("--weights", type=pathlib.Path, default=None,
                        help=f"a matterport Mask R-CNN .h5 weight file, e.g. mask_rcnn_balloon.h5 ({RELEASES_URL})")
    parser.add_argument("--framework", choices=("torch", "tf"), default="torch",
                        help="run the network in PyTorch or in Keras on TensorFlow (default torch)")
    parser.add_argument("--device", default="cpu",
                        help="torch only: the device, cpu or cuda[:N] (default cpu); tf places its own")
    parser.add_argument("--backbone", choices=_maskrcnn.BACKBONES, default=BALLOON["BACKBONE"],
                        help="the weight file's backbone (default resnet101)")
    parser.add_argument("--num-classes", type=int, default=BALLOON["NUM_CLASSES"],
                        help="classes, background included (default 2: background + balloon)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="IMAGE_MAX_DIM, the molded square's side (IMAGE_MIN_DIM = min(800, S)); "
                             "default matterport's 1024 (and 800)")
    parser.add_argument("--min-confidence", type=float, default=BALLOON["DETECTION_MIN_CONFIDENCE"],
                        help="DETECTION_MIN_CONFIDENCE (default the balloon sample's 0.9)")
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("splash.png"),
                        help="the colour splash, a PNG of the input's size (default splash.png)")
    args = parser.parse_args(argv)
    try:
        config = inference_config(backbone=args.backbone, num_classes=args.num_classes, image_size=args.image_size,
                                  min_confidence=args.min_confidence)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    if args.weights is None or not args.weights.is_file():
        given = "no --weights given" if args.weights is None else f"weight file {args.weights} not found"
        print(f"maskrcnn_splash: {given}. This example needs matterport-layout Mask R-CNN .h5 weights (Keras 2 "
              f"save_weights), e.g. mask_rcnn_balloon.h5 from {RELEASES_URL} ; nothing is downloaded "
              f"automatically: download the file and pass it with --weights mask_rcnn_balloon.h5 (and "
              f"--backbone/--num-classes matching it)", file=sys.stderr)
        return EXIT_USAGE
    start = time.perf_counter()
    # An unreadable image, a weight file that does not match the network or a framework that
    # cannot run: the message says which and why; a traceback would only bury it.
    try:
        image = read_image(args.image)
        model, report = load_model(args.weights, config, args.framework, args.device)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"maskrcnn_splash: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(report.summary())
    loaded = time.perf_counter()
    pixels, result = splash(model, image)
    detected = time.perf_counter()
    from PIL import Image

    Image.fromarray(pixels).save(args.output)
    count = len(result["class_ids"])
    print(f"{args.framework}: {count} instance(s) (class ids {sorted(set(result['class_ids'].tolist()))}); wrote "
          f"{args.output} ({pixels.shape[1]}x{pixels.shape[0]}); load {loaded - start:.1f} s, detect "
          f"{detected - loaded:.1f} s, total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
