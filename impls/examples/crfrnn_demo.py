"""crfasrnn_keras's demo (run_demo.py): segment an image with its trained CRF-RNN network.

    python -m impls.examples.crfrnn_demo image.jpg --weights crfrnn_keras_model.h5 \\
        --framework torch --output labels.png

The flow of run_demo.py: pre-process the image as crfasrnn_keras does (fit into 500x500, mean
subtraction, BGR, zero padding), load the trained Keras 2 weights into the network of the chosen
framework (impls.port.load_keras2_h5, strict: a file that does not match is refused), predict,
and save the labels as a PASCAL VOC palette PNG at the input's size. `--size 0` runs the network
at the image's own size instead, without resizing or padding.

The weights, crfrnn_keras_model.h5, are crfasrnn_keras's (converted from the Caffe CRF-RNN
model); they are not downloaded here: fetch them from impls.crfasrnn_keras.WEIGHTS_URL.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from impls import crfasrnn_keras

# argparse's status for a usage error, kept for a missing weight file: the command cannot run.
EXIT_USAGE = 2
EXIT_FAILED = 1


def load_model(weights_path, framework: str = "torch"):
    """(crfasrnn_keras's network in `framework`, the load report) with the weights of
    `weights_path`; a file that does not match the network raises ValueError, copying nothing."""
    from impls.port import load_keras2_h5

    model = crfasrnn_keras.get_crfrnn_model_def(framework)
    return model, load_keras2_h5(model, weights_path, strict=True)


def segment(model, pixels, *, size: int | None = crfasrnn_keras.INPUT_SIZE):
    """The label image, at the image's size, of the RGB uint8 pixels (H, W, 3) by `model`: run at
    `size` x `size` as crfasrnn_keras (fit and pad), or at the image's own size with size None."""
    batch, img_h, img_w, original_size = crfasrnn_keras.preprocess(pixels, size)
    scores = crfasrnn_keras.predict(model, batch)[0]
    return crfasrnn_keras.get_label_image(scores, img_h, img_w, original_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=pathlib.Path, help="an RGB image (JPEG, PNG, ...)")
    parser.add_argument("--weights", type=pathlib.Path, default=None,
                        help=f"crfasrnn_keras's crfrnn_keras_model.h5 (from {crfasrnn_keras.WEIGHTS_URL})")
    parser.add_argument("--framework", choices=("torch", "tf"), default="torch",
                        help="run the network in PyTorch or in Keras on TensorFlow (default torch)")
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("labels.png"),
                        help="the label image: a PASCAL VOC palette PNG of the input's size (default labels.png)")
    parser.add_argument("--size", type=int, default=crfasrnn_keras.INPUT_SIZE,
                        help="fit the image into SIZE x SIZE and pad it, as crfasrnn_keras (default 500); "
                             "0: run at the image's own size")
    args = parser.parse_args(argv)
    if args.size < 0:
        parser.error(f"argument --size must be 0 or a positive integer, got {args.size}")
    if args.weights is None or not args.weights.is_file():
        given = "no --weights given" if args.weights is None else f"weight file {args.weights} not found"
        print(f"crfrnn_demo: {given}. This demo needs crfasrnn_keras's trained weights, crfrnn_keras_model.h5, "
              f"published at {crfasrnn_keras.WEIGHTS_URL} ; they are not downloaded automatically: download "
              f"the file and pass it with --weights crfrnn_keras_model.h5", file=sys.stderr)
        return EXIT_USAGE
    start = time.perf_counter()
    # An image that cannot be read or a weight file that does not match the network: the
    # message says which and why; a traceback would only bury it.
    try:
        pixels = crfasrnn_keras.read_image(args.image)
        model, report = load_model(args.weights, args.framework)
    except (ValueError, OSError) as error:
        print(f"crfrnn_demo: {error}", file=sys.stderr)
        return EXIT_FAILED
    labels = segment(model, pixels, size=args.size or None)
    labels.save(args.output)
    print(report.summary())
    print(f"{args.framework}: wrote {args.output} ({labels.size[0]}x{labels.size[1]}) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
