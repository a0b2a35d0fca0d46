"""Goldens of OpenCV's dnn module running the authors' Caffe models (FCN-32s/16s/8s/8s-atonce of
fcn.berkeleyvision.org, CRF-RNN's FCN-8s part) and a zoo of small nets, one per layer type, with
seeded weights in the real wire format, for the default test run to check impls.caffe.Net and the
models loaded by impls.port.load_caffemodel against. OpenCV 4.x reads Caffe files with its own copy
of caffe.proto and its own layers (5.0 removed the importer: pin opencv-python-headless<5): a
reader and an engine that are not ours.

    python reference/caffe_oracle.py --layouts      # reference/caffe_layouts.json (from the prototxts)
    python reference/caffe_oracle.py --output reference/   # reference/caffe_fcn.npz, caffe_layers.npz
    python reference/caffe_oracle.py --check        # regenerate into a temporary folder and compare

`tox -e caffe-oracle` (not in the default run) installs OpenCV beside the package and runs
tests/test_caffe_oracle.py, which regenerates the goldens and compares them with the stored ones,
and checks that OpenCV reads every encoding tests/caffe_files.py writes (V1 and V2, BlobShape and
legacy 4-D shapes, packed and unpacked floats, doubles) to the same values.

What is stored (reference.generate.save_npz, listed in MANIFEST.json):

caffe_fcn.npz, for each authors' model M in voc-fcn32s, voc-fcn16s, voc-fcn8s, voc-fcn8s-atonce and
each image I (crops of skimage's astronaut and coffee at odd sizes, FCN's pre-processing: BGR, the
mean (104.00698793, 116.66876762, 122.67891434) subtracted, NCHW):
    M.I.score      float32 (1, 21, H/3, W/3)  OpenCV's 'score' blob (the net's output), [..., ::3, ::3]
    M.I.score_max  float32 ()       max |score| over every pixel
    M.I.labels     uint8 (H, W)     its argmax over the classes, every pixel
    M.I.fc7        float32 (1, 64, h, w)     every 64th channel of 'fc7' (after its ReLU)
    I.input        float32 (1, 3, H, W)      the input blob
and for crfasrnn (TVG_CRFRNN_new_deploy.prototxt up to its MultiStageMeanfield, which OpenCV has
not: the prototxt OpenCV runs ends at the blob 'coarse', its crops given the offsets the CRF-RNN
fork derives, 5, 9 and 31, and its duplicate layer names made unique), the same for 'coarse':
    crfasrnn.I.coarse, crfasrnn.I.coarse_max, crfasrnn.I.labels
(subsampled so that the file stays near a megabyte; the labels check every pixel).

caffe_layers.npz: for each net N of tests/caffe_nets.py's zoo, N.<top> of each top OpenCV gives.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

import numpy as np

FOLDER = pathlib.Path(__file__).resolve().parent
ROOT = FOLDER.parent
if str(ROOT) not in sys.path:  # the checkout's tests/ and reference/, behind the installed packages
    sys.path.append(str(ROOT))

COMMAND = "python reference/caffe_oracle.py --output reference/"
FCN_MODELS = ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce")
MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)  # infer.py's
# (image, top, left, height, width) of the inputs: odd sizes, each side different.
IMAGES = {"astronaut": ("astronaut", 40, 150, 97, 113), "coffee": ("coffee", 60, 200, 75, 131)}
CRFASRNN_OFFSETS = {"score-pool4c": 5, "score-pool3c": 9, "coarse": 31}


def fcn_input(name: str) -> np.ndarray:
    """(1, 3, H, W) float32: a crop of a skimage photo as infer.py prepares an image."""
    import skimage.data

    image, top, left, height, width = IMAGES[name]
    pixels = getattr(skimage.data, image)()[top:top + height, left:left + width]
    blob = pixels.astype(np.float32)[:, :, ::-1] - np.array(MEAN_BGR, np.float32)
    return np.ascontiguousarray(blob.transpose(2, 0, 1)[None])


# ---- Layouts -----------------------------------------------------------------------------------

def layouts() -> dict:
    """{model: {"file", "version", "name", "fixed", "layers": [[name, type, [blob shapes]]]}} of the
    authors' files: the layers of each training net in order (FCN: its val.prototxt, whose layers
    are train.prototxt's; CRF-RNN: its V1 deploy with a data layer before and a loss after, as its
    training net had), the blob shapes from impls.caffe's Net on the deploy net."""
    from impls import caffe
    from impls.port.prototxt import read_prototxt
    from tests.caffe_files import CAFFE_FOLDER

    out = {}
    for model in FCN_MODELS:
        val = CAFFE_FOLDER / model / "val.prototxt"
        net = caffe.Net(read_prototxt_text(caffe.deploy(val)), caffe.TEST)
        layers = []
        fixed = {}
        for layer in read_prototxt(val).messages("layer"):
            name, type_ = layer.string("name"), layer.string("type")
            shapes = [list(blob.shape) for blob in net.params.get(name, [])]
            layers.append([name, type_, shapes])
            if _fixed(layer):
                fixed[name] = "bilinear" if type_ == "Deconvolution" else \
                    layer.message("scale_param").message("filler").float("value")
        file = {"voc-fcn32s": "fcn32s-heavy-pascal.caffemodel", "voc-fcn16s": "fcn16s-heavy-pascal.caffemodel",
                "voc-fcn8s": "fcn8s-heavy-pascal.caffemodel", "voc-fcn8s-atonce": "fcn8s-atonce-pascal.caffemodel"}
        out[model] = {"file": file[model], "version": "V2", "name": "", "fixed": fixed, "layers": layers}
    deploy = CAFFE_FOLDER / "crfasrnn" / "TVG_CRFRNN_COCO_VOC.prototxt"
    net = caffe.Net(deploy, caffe.TEST)
    layers = [["data", "Data", []]]
    layers += [[layer.name, layer.type, [list(blob.shape) for blob in net.params.get(layer.name, [])]]
               for layer in net.layers]
    layers.append(["loss", "SoftmaxWithLoss", []])
    out["crfasrnn"] = {"file": "TVG_CRFRNN_COCO_VOC.caffemodel", "version": "V1", "name": "TVG_CRF_RNN_COCO_VOC",
                       "fixed": {"upsample": "bilinear"}, "layers": layers}
    return out


def read_prototxt_text(text):
    from impls.port.prototxt import parse_prototxt

    return parse_prototxt(text)


def _fixed(layer) -> bool:
    """A layer the authors held fixed: its first param has lr_mult 0."""
    params = layer.messages("param")
    return bool(params) and params[0].float("lr_mult", 1.0) == 0 and layer.string("type") in ("Deconvolution",
                                                                                                "Scale")


# ---- OpenCV ------------------------------------------------------------------------------------

def opencv_forward(prototxt_text: str, caffemodel, inputs: dict, outputs: list[str]) -> dict:
    """{layer: its output} of OpenCV's dnn on a prototxt's text and a .caffemodel (default CPU
    backend); OpenCV names an output by the layer that makes it."""
    import cv2

    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "net.prototxt"
        path.write_text(prototxt_text)
        net = cv2.dnn.readNetFromCaffe(str(path), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    for name, value in inputs.items():
        net.setInput(np.ascontiguousarray(value, np.float32), name)
    return dict(zip(outputs, [np.array(x, np.float32) for x in net.forward(outputs)], strict=True))


def fcn_deploy_text(model: str) -> str:
    from impls import caffe
    from tests.caffe_files import CAFFE_FOLDER

    if model == "voc-fcn8s":
        return (CAFFE_FOLDER / model / "deploy.prototxt").read_text()
    return caffe.deploy(CAFFE_FOLDER / model / "val.prototxt")


def crfasrnn_opencv_text() -> str:
    """CRF-RNN's V2 deploy for OpenCV: the layers up to 'coarse' (the cropped FCN scores), each
    layer named uniquely (the original has three 'crop' and two 'fuse' layers) and each crop
    given the offset the fork derives (OpenCV's Crop without one crops at 0)."""
    from impls.port.prototxt import Message, format_prototxt, read_prototxt
    from tests.caffe_files import CAFFE_FOLDER

    message = read_prototxt(CAFFE_FOLDER / "crfasrnn" / "TVG_CRFRNN_new_deploy.prototxt")
    layers = message.messages("layer")
    names = [layer.string("name") for layer in layers]
    kept = []
    for layer in layers:
        if layer.string("type") in ("Split", "MultiStageMeanfield"):
            break
        fields = list(layer.fields)
        name, top = layer.string("name"), layer.strings("top")[0]
        if names.count(name) > 1:  # OpenCV names outputs by layer: each its top's name
            fields = [("name", top, 0) if f[0] == "name" else f for f in fields]
        if layer.string("type") == "Crop":
            offset = Message(fields=[("axis", 2, 0), ("offset", CRFASRNN_OFFSETS[top], 0)])
            fields.append(("crop_param", offset, 0))
        kept.append(("layer", Message(fields=fields), 0))
    head = [field for field in message.fields if field[0] != "layer"]
    return format_prototxt(Message(fields=head + kept))


def fcn_goldens(folder: pathlib.Path) -> dict:
    from tests.caffe_files import write_seeded

    arrays = {}
    for image in IMAGES:
        arrays[f"{image}.input"] = fcn_input(image)
    for model in FCN_MODELS:
        weights = write_seeded(folder / f"{model}.caffemodel", model)
        text = fcn_deploy_text(model)
        for image in IMAGES:
            # OpenCV names outputs by layer: fc7 after its in-place ReLU is layer relu7's
            out = opencv_forward(text, weights, {"data": arrays[f"{image}.input"]}, ["score", "relu7"])
            arrays.update(_scores(f"{model}.{image}", "score", out["score"]))
            arrays[f"{model}.{image}.fc7"] = np.ascontiguousarray(out["relu7"][:, ::64])
        os.remove(weights)
    weights = write_seeded(folder / "crfasrnn.caffemodel", "crfasrnn")
    for image in IMAGES:
        out = opencv_forward(crfasrnn_opencv_text(), weights, {"data": arrays[f"{image}.input"]}, ["coarse"])
        arrays.update(_scores(f"crfasrnn.{image}", "coarse", out["coarse"]))
    os.remove(weights)
    return arrays


SUBSAMPLE = 3


def _scores(prefix, name, scores):
    """A score map as stored: every SUBSAMPLE-th pixel, its max |value| and its labels (every pixel)."""
    return {f"{prefix}.{name}": np.ascontiguousarray(scores[:, :, ::SUBSAMPLE, ::SUBSAMPLE]),
            f"{prefix}.{name}_max": np.float32(np.abs(scores).max()),
            f"{prefix}.labels": scores[0].argmax(0).astype(np.uint8)}


def layer_goldens(folder: pathlib.Path) -> dict:
    from tests.caffe_nets import ZOO, zoo_inputs, zoo_weights

    arrays = {}
    for name, net in ZOO.items():
        if not net.opencv:
            continue
        weights = zoo_weights(folder / f"{name}.caffemodel", name) or _empty(folder)
        out = opencv_forward(net.prototxt, weights, zoo_inputs(name), list(net.tops))
        for top, value in out.items():
            arrays[f"{name}.{top}"] = value
    return arrays


def _empty(folder):
    """OpenCV's readNetFromCaffe takes a weight file even for a net without weights."""
    path = folder / "empty.caffemodel"
    path.write_bytes(b"")
    return path


def versions() -> dict:
    import cv2

    return {"opencv-python-headless": cv2.__version__, "numpy": np.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", action="store_true", help="write reference/caffe_layouts.json")
    parser.add_argument("--output", type=pathlib.Path, help="write the goldens into this folder")
    parser.add_argument("--check", action="store_true", help="regenerate and compare with the stored goldens")
    args = parser.parse_args(argv)
    if args.layouts:
        (FOLDER / "caffe_layouts.json").write_text(json.dumps(layouts(), indent=1) + "\n")
        print(f"wrote {FOLDER / 'caffe_layouts.json'}")
    if args.output or args.check:
        from reference.generate import save_npz

        with tempfile.TemporaryDirectory() as scratch:
            scratch = pathlib.Path(scratch)
            goldens = {"caffe_fcn.npz": fcn_goldens(scratch), "caffe_layers.npz": layer_goldens(scratch)}
            if args.check:
                return compare(goldens)
            for file, arrays in goldens.items():
                save_npz(args.output / file, arrays)
                print(f"wrote {args.output / file} ({len(arrays)} arrays)")
        register(args.output)
    return 0


def compare(goldens) -> int:
    failures = 0
    for file, arrays in goldens.items():
        with np.load(FOLDER / file) as stored:
            for key, value in arrays.items():
                scale = max(float(np.abs(stored[key]).max()), 1e-30)
                error = float(np.abs(stored[key] - value).max()) / scale
                if error > 1e-5:
                    print(f"{file}:{key}: relative difference {error:.3g}")
                    failures += 1
    print("goldens regenerate" if not failures else f"{failures} array(s) differ")
    return 1 if failures else 0


def register(folder: pathlib.Path) -> None:
    """Records the goldens in MANIFEST.json (their shapes, checksums, command and versions)."""
    from reference.generate import register_external

    register_external(folder / "caffe_fcn.npz", command=COMMAND, versions=versions(), exact=False,
                      produced_by="OpenCV dnn (readNetFromCaffe) on the authors' FCN and CRF-RNN prototxts with "
                                  "tests/caffe_files.py's seeded weights", companions=("caffe_layouts.json",))
    register_external(folder / "caffe_layers.npz", command=COMMAND, versions=versions(), exact=False,
                      produced_by="OpenCV dnn (readNetFromCaffe) on tests/caffe_nets.py's zoo, one net per layer "
                                  "type, with seeded weights")


if __name__ == "__main__":
    sys.exit(main())
