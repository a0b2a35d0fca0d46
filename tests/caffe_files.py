"""Caffe .caffemodel files written in the real wire format without Caffe, and the seeded weights of
the authors' models (their files cannot be downloaded here). The tests, the README-commands test,
the benchmarks and reference/caffe_oracle.py (whose OpenCV reads these files with its own copy of
caffe.proto: the independent check of this writer) use them.

A .caffemodel is a serialised NetParameter (Caffe's src/caffe/proto/caffe.proto):

    NetParameter   name = 1 (string); layer = 100 (LayerParameter, V2 files);
                   layers = 2 (V1LayerParameter, V1 files)
    LayerParameter name = 1, type = 2 (string), bottom = 3, top = 4, blobs = 7
    V1LayerParameter  bottom = 2, top = 3, name = 4, type = 5 (enum), blobs = 6
    BlobProto      num, channels, height, width = 1-4 (legacy 4-D shape, int32);
                   data = 5 (float, packed); double_data = 8 (double, packed); shape = 7 (BlobShape)
    BlobShape      dim = 1 (int64, packed)

What files users have (reference/caffe/MANIFEST.md has each source):

- the FCN models of fcn.berkeleyvision.org (fcn{32s,16s,8s}-heavy-pascal.caffemodel,
  fcn8s-atonce-pascal.caffemodel), written by BVLC Caffe in 2016: V2 `layer` fields, BlobShape,
  packed floats; every layer of the training net (the Python data layer and the loss too, without
  blobs); the fixed upsamplers (lr_mult 0) hold the bilinear kernel as surgery.interp made it, the
  at-once scales their constant fillers;
- CRF-RNN's TVG_CRFRNN_COCO_VOC.caffemodel, written in 2015 by its Caffe fork (caffe-crfrnn), whose
  caffe.proto has no BlobShape and no V2 layers: V1 `layers` fields with the fork's enum (CROP 40,
  MULTI_STAGE_MEANFIELD 42), legacy 4-D blob shapes (a bias is (1, 1, 1, C)), MultiStageMeanfield's
  three blobs (1, 1, C, C);
- older FCN files (the 2015 model zoo) are V1 with legacy shapes too.

`authors_layout(model)` describes each (the layers of reference/caffe_layouts.json) and
`write_seeded(path, model, ...)` writes it with seeded values, in any of the encodings.
"""

from __future__ import annotations

import json
import pathlib
import zlib

import numpy as np

REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "reference"
CAFFE_FOLDER = REFERENCE / "caffe"
LAYOUTS = REFERENCE / "caffe_layouts.json"
SEED = 2015
# The V1 enum numbers of the layer types the authors' nets use (BVLC's, and the fork's 40 and 42).
V1_ENUM = {"Convolution": 4, "Deconvolution": 39, "ReLU": 18, "Pooling": 17, "Dropout": 6, "Crop": 40,
           "Eltwise": 25, "Split": 22, "MultiStageMeanfield": 42, "SoftmaxWithLoss": 21, "Data": 5,
           "InnerProduct": 14, "Scale": None, "BatchNorm": None, "Concat": 3, "Softmax": 20, "ArgMax": 30,
           "Silence": 36, "Python": None, "Input": None}
AUTHORS_MODELS = ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "crfasrnn")


# ---- The wire format -------------------------------------------------------------------------

def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 values are sign-extended to ten bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint((number << 3) | wire)


class Chunks:
    """A message being written: a list of bytes and arrays (written as they are, not joined), so
    that a 400 MB blob is not copied into a message buffer."""

    def __init__(self):
        self.parts, self.size = [], 0

    def add(self, part) -> Chunks:
        self.parts.append(part)
        self.size += part.nbytes if isinstance(part, np.ndarray) else len(part)
        return self

    def scalar(self, number: int, value: int) -> Chunks:
        return self.add(key(number, 0) + varint(value))

    def string(self, number: int, text: str) -> Chunks:
        data = text.encode("utf8")
        return self.add(key(number, 2) + varint(len(data)) + data)

    def message(self, number: int, inner: Chunks) -> Chunks:
        self.add(key(number, 2) + varint(inner.size))
        for part in inner.parts:
            self.add(part)
        return self

    def write(self, file) -> None:
        for part in self.parts:
            file.write(part.data if isinstance(part, np.ndarray) else part)


def blob(values: np.ndarray, *, shapes: str = "blobshape", floats: str = "packed") -> Chunks:
    """A BlobProto of `values`: its shape as BlobShape ("blobshape") or legacy 4-D ("legacy", padded
    with leading 1s, as Caffe wrote a bias as (1, 1, 1, C)); its values as packed floats, unpacked
    floats (a tag before each value), or packed doubles (double_data)."""
    values = np.asarray(values)
    message = Chunks()
    if shapes == "legacy":
        if values.ndim > 4:
            raise ValueError(f"a legacy blob shape has four axes, got {values.shape}")
        for number, dim in zip((1, 2, 3, 4), (1,) * (4 - values.ndim) + values.shape, strict=True):
            message.scalar(number, dim)
    elif shapes == "blobshape":
        dims = b"".join(varint(dim) for dim in values.shape)
        message.message(7, Chunks().add(key(1, 2) + varint(len(dims)) + dims))
    else:
        raise ValueError(f"shapes must be 'blobshape' or 'legacy', got {shapes!r}")
    if floats == "packed":
        data = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
        message.add(key(5, 2) + varint(data.nbytes)).add(data)
    elif floats == "double":
        data = np.ascontiguousarray(values, dtype="<f8").reshape(-1)
        message.add(key(8, 2) + varint(data.nbytes)).add(data)
    elif floats == "unpacked":
        data = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
        records = np.empty((data.size, 5), np.uint8)
        records[:, 0] = (5 << 3) | 5
        records[:, 1:] = data.view(np.uint8).reshape(-1, 4)
        message.add(records.reshape(-1))
    else:
        raise ValueError(f"floats must be 'packed', 'unpacked' or 'double', got {floats!r}")
    return message


def layer_message(name: str, type_: str, blobs, *, version: str = "V2", bottoms=(), tops=(), extra: bytes = b"",
                  **encoding) -> Chunks:
    """A LayerParameter (V2) or V1LayerParameter (V1) with its blobs; `extra` is appended raw (a
    fork's own parameter fields, which a reader must skip)."""
    message = Chunks()
    if version == "V2":
        message.string(1, name).string(2, type_)
        for bottom in bottoms:
            message.string(3, bottom)
        for top in tops:
            message.string(4, top)
        for values in blobs:
            message.message(7, blob(values, **encoding))
    elif version == "V1":
        for bottom in bottoms:
            message.string(2, bottom)
        for top in tops:
            message.string(3, top)
        if V1_ENUM.get(type_) is None:
            raise ValueError(f"a V1 file has no layer type {type_!r} (layer {name!r})")
        message.string(4, name).scalar(5, V1_ENUM[type_])
        for values in blobs:
            message.message(6, blob(values, **encoding))
    else:
        raise ValueError(f"version must be 'V1' or 'V2', got {version!r}")
    if extra:
        message.add(extra)
    return message


def write_caffemodel(path, layers, *, version: str = "V2", name: str = "", shapes: str | None = None,
                     floats: str = "packed", extra: dict | None = None) -> pathlib.Path:
    """Writes `layers`, [(name, type, [blob arrays]) or (name, type, blobs, bottoms, tops)], as a
    .caffemodel. `shapes` defaults to BlobShape in V2 files and legacy 4-D in V1 files (as the
    Caffes that wrote each did); `extra` {layer name: raw bytes} adds fields to a layer."""
    shapes = shapes or ("blobshape" if version == "V2" else "legacy")
    net = Chunks()
    if name:
        net.string(1, name)
    for entry in layers:
        layer_name, type_, blobs, *rest = entry
        bottoms, tops = (rest + [(), ()])[:2]
        message = layer_message(layer_name, type_, blobs, version=version, bottoms=bottoms, tops=tops,
                                extra=(extra or {}).get(layer_name, b""), shapes=shapes, floats=floats)
        net.message(100 if version == "V2" else 2, message)
    path = pathlib.Path(path)
    with open(path, "wb") as file:
        net.write(file)
    return path


# ---- The authors' models, seeded -------------------------------------------------------------

def authors_layout(model: str) -> dict:
    """{"file": the real file's name, "version": "V1"/"V2", "layers": [[name, type, [blob shapes]], ...]}
    of an authors' model, the layers in the order of its training net (reference/caffe_layouts.json)."""
    layouts = json.loads(LAYOUTS.read_text())
    if model not in layouts:
        raise ValueError(f"authors_layout: model must be one of {sorted(layouts)}, got {model!r}")
    return layouts[model]


def bilinear_weights(shape) -> np.ndarray:
    """A Deconvolution's (C, C, k, k) weights as fcn.berkeleyvision.org's surgery.interp sets them:
    the bilinear kernel on the channel diagonal, computed in float64, stored as float32."""
    channels, _, size, _ = shape
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    grid = np.ogrid[:size, :size]
    kernel = (1 - abs(grid[0] - centre) / factor) * (1 - abs(grid[1] - centre) / factor)
    weights = np.zeros(shape, np.float64)
    weights[range(channels), range(channels)] = kernel
    return weights.astype(np.float32)


def seeded_blob(model: str, layer: str, index: int, shape, type_: str, fixed: dict, seed: int = SEED) -> np.ndarray:
    """One blob's seeded values, the same on every machine (PCG64 by the layer's name): He-normal
    weights (so that activations keep their scale through VGG-16), small biases; the fixed layers as
    the authors' files hold them (`fixed`: {layer: "bilinear" or a constant}); MultiStageMeanfield's
    kernel weights near its initial 3 I / 5 I and compatibility near -I."""
    shape = tuple(shape)
    if layer in fixed:
        rule = fixed[layer]
        return bilinear_weights(shape) if rule == "bilinear" else np.full(shape, rule, np.float32)
    rng = np.random.default_rng([seed, zlib.crc32(f"{model}/{layer}/{index}".encode())])
    if type_ == "MultiStageMeanfield":
        channels = shape[-1]
        base = {0: 3.0, 1: 5.0, 2: -1.0}[index] * np.eye(channels)
        return (base + 0.1 * rng.standard_normal((channels, channels))).astype(np.float32).reshape(shape)
    if index == 0 and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if type_ != "Deconvolution" else int(shape[0] * np.prod(shape[2:]))
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
    return (0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def seeded_layers(model: str, seed: int = SEED, version: str | None = None) -> list:
    """[(name, type, [blobs])] of an authors' model in its file's order, seeded. In a V1 file (as
    FCN's 2015 files were) the training net's data layer is a Data layer (V1 has no Python type)."""
    layout = authors_layout(model)
    fixed = layout.get("fixed", {})
    rename = {"Python": "Data"} if (version or layout["version"]) == "V1" else {}
    return [(name, rename.get(type_, type_),
             [seeded_blob(model, name, i, shape, type_, fixed, seed) for i, shape in enumerate(shapes)])
            for name, type_, shapes in layout["layers"]]


def write_seeded(path, model: str, *, version: str | None = None, seed: int = SEED, **encoding) -> pathlib.Path:
    """An authors' model with seeded weights, in its real file's encoding (or `version`, `shapes`,
    `floats` as write_caffemodel takes them)."""
    layout = authors_layout(model)
    version = version or layout["version"]
    return write_caffemodel(path, seeded_layers(model, seed, version), version=version, name=layout.get("name", ""),
                            **encoding)


def prototxt(model: str, kind: str = "deploy") -> pathlib.Path:
    """The path of an authors' prototxt stored under reference/caffe/ (see its MANIFEST.md)."""
    return CAFFE_FOLDER / model / f"{kind}.prototxt"


def write_readme_files(folder, *, crfasrnn: bool = False) -> None:
    """The files the README's Caffe recipes name, in `folder`: voc-fcn8s/deploy.prototxt (the
    authors') and voc-fcn8s/fcn8s-heavy-pascal.caffemodel (seeded, in its layout); with `crfasrnn`,
    TVG_CRFRNN_COCO_VOC.caffemodel too (seeded, V1 as the real one)."""
    import shutil

    folder = pathlib.Path(folder)
    (folder / "voc-fcn8s").mkdir(parents=True, exist_ok=True)
    shutil.copy(prototxt("voc-fcn8s"), folder / "voc-fcn8s" / "deploy.prototxt")
    write_seeded(folder / "voc-fcn8s" / "fcn8s-heavy-pascal.caffemodel", "voc-fcn8s")
    if crfasrnn:
        write_seeded(folder / "TVG_CRFRNN_COCO_VOC.caffemodel", "crfasrnn")
