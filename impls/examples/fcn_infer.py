"""fcn.berkeleyvision.org's infer.py: segment an image with the authors' Caffe FCN model.

    python -m impls.examples.fcn_infer IMAGE --prototxt deploy.prototxt --caffemodel FILE \\
        [--framework torch|tf|caffe] --output labels.png

infer.py's flow: the image as Caffe takes it (BGR, the mean (104.00698793, 116.66876762,
122.67891434) subtracted, channels first), the net run at the image's size, the argmax of 'score'
saved as a PASCAL VOC palette PNG of the image's size. `--framework torch` (the default) and `tf`
load the .caffemodel into impls.torch.FCN or impls.tf.FCN (the variant, 32s, 16s, 8s or 8s at-once,
read from the prototxt's layers) with impls.port.load_caffemodel, strictly: a file that does not
match is refused, naming the layers. `--framework caffe` runs the prototxt itself in impls.caffe.Net
(any net of the layer types it has: CRF-RNN's too). A train/val prototxt (a data layer instead of
an input) is made a deploy net first (impls.caffe.deploy).

The weights are the authors' (fcn8s-heavy-pascal.caffemodel and its siblings); they are not
downloaded here: see AUTHORS_WEIGHTS for where they are published.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

EXIT_USAGE = 2  # argparse's status for a usage error, kept for a missing weight file
EXIT_FAILED = 1
MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)  # infer.py's
AUTHORS_WEIGHTS = {
    "32s": "http://dl.caffe.berkeleyvision.org/fcn32s-heavy-pascal.caffemodel",
    "16s": "http://dl.caffe.berkeleyvision.org/fcn16s-heavy-pascal.caffemodel",
    "8s": "http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel",
    "8s-atonce": "http://dl.caffe.berkeleyvision.org/fcn8s-atonce-pascal.caffemodel",
}
# The layer that tells each variant apart in the authors' prototxts.
_VARIANT_LAYERS = (("scale_pool3", "8s-atonce"), ("upscore8", "8s"), ("upscore16", "16s"), ("upscore", "32s"))


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float32 of RGB uint8 pixels (H, W, 3), as infer.py: BGR, mean subtracted."""
    blob = np.asarray(pixels, np.float32)[:, :, ::-1] - np.array(MEAN_BGR, np.float32)
    return np.ascontiguousarray(blob.transpose(2, 0, 1)[None])


def deploy_message(prototxt, shape):
    """The prototxt as a deploy net (its Message): made one, for `shape`, if it reads a dataset."""
    from impls import caffe
    from impls.port.prototxt import parse_prototxt, read_prototxt

    return parse_prototxt(caffe.deploy(read_prototxt(prototxt), shape))


def fcn_variant(message) -> str | None:
    names = {layer.string("name") for layer in message.messages("layer") if "name" in layer}
    return next((variant for layer, variant in _VARIANT_LAYERS if layer in names), None)


def scores_of(message, caffemodel, image, framework: str):
    """((1, C, H, W) class scores, load report) of the image blob by the net in `framework`."""
    if framework == "caffe":
        from impls import caffe

        net = caffe.Net(message, caffe.TEST, weights=str(caffemodel))
        name = net.inputs[0]
        net.blobs[name].reshape(*image.shape)
        net.blobs[name].data[...] = image
        output = "score" if "score" in net.outputs else net.outputs[0]
        return net.forward()[output].copy(), net.report
    variant = fcn_variant(message)
    if variant is None:
        raise ValueError("the prototxt is not one of FCN's (no upscore, upscore16, upscore8 layer): "
                         "--framework caffe runs any net")
    classes = next(layer.message("convolution_param").int("num_output") for layer in message.messages("layer")
                   if layer.string("name") == "score_fr")
    from impls import port

    if framework == "torch":
        import torch

        import impls.torch

        model = impls.torch.FCN(variant, classes).eval()
        report = port.load_caffemodel(model, caffemodel)
        with torch.no_grad():
            return model(torch.from_numpy(image)).numpy(), report
    import impls.tf

    model = impls.tf.FCN(variant, classes)
    model(np.zeros((1, 8, 8, 3), np.float32))
    report = port.load_caffemodel(model, caffemodel)
    return model(image.transpose(0, 2, 3, 1)).numpy().transpose(0, 3, 1, 2), report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=pathlib.Path, help="an RGB image (JPEG, PNG, ...)")
    parser.add_argument("--prototxt", type=pathlib.Path, required=True,
                        help="the net: the authors' deploy.prototxt (or a val.prototxt, made a deploy net)")
    parser.add_argument("--caffemodel", type=pathlib.Path, default=None, help="the authors' weights (.caffemodel)")
    parser.add_argument("--framework", choices=("torch", "tf", "caffe"), default="torch",
                        help="impls.torch.FCN, impls.tf.FCN, or impls.caffe.Net on the prototxt (default torch)")
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("labels.png"),
                        help="the label image: a PASCAL VOC palette PNG of the input's size (default labels.png)")
    args = parser.parse_args(argv)
    if args.caffemodel is None or not args.caffemodel.is_file():
        given = "no --caffemodel given" if args.caffemodel is None else f"weight file {args.caffemodel} not found"
        published = "; ".join(f"FCN-{variant}: {url}" for variant, url in AUTHORS_WEIGHTS.items())
        print(f"fcn_infer: {given}. This command needs the authors' trained weights, published at {published} "
              f"(fcn.berkeleyvision.org); they are not downloaded automatically: download one and pass it with "
              f"--caffemodel FILE", file=sys.stderr)
        return EXIT_USAGE
    start = time.perf_counter()
    try:
        from impls.crfasrnn_keras import read_image
        from impls.voc import write_label_png

        pixels = read_image(args.image)[:, :, :3]
        image = preprocess(pixels)
        message = deploy_message(args.prototxt, image.shape)
        scores, report = scores_of(message, args.caffemodel, image, args.framework)
    except (ValueError, OSError) as error:
        print(f"fcn_infer: {error}", file=sys.stderr)
        return EXIT_FAILED
    labels = scores[0].argmax(0).astype(np.uint8)
    write_label_png(args.output, labels)
    print(report.summary())
    print(f"{args.framework}: wrote {args.output} ({labels.shape[1]}x{labels.shape[0]}) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
