"""Goldens of matterport's ORIGINAL Mask R-CNN (matterport/Mask_RCNN, Keras 2 / TF 1 code, from the
mrcnn-colab 2.1 wheel), run unmodified on TF 2.21 with Keras 2 (tf_keras) through an import shim,
with seeded weights, for checking our torch and Keras 3 re-implementations in CI where matterport
cannot run.

    /work/oracle-venv/bin/python reference/matterport_oracle.py --output reference/   # goldens + layouts
    /work/oracle-venv/bin/python reference/matterport_oracle.py --check               # regenerate, compare
    /work/oracle-venv/bin/python reference/matterport_oracle.py --self-test --configs A   # quick check
    /work/oracle-venv/bin/python reference/matterport_oracle.py --time                # detect() at 1024 px
    /work/oracle-venv/bin/python reference/matterport_oracle.py --serve --threads 2   # the benchmarks' arm

The environment (the virtualenv of reference/crfasrnn_oracle.py, outside the checkout):

    python3.11 -m venv /work/oracle-venv
    /work/oracle-venv/bin/pip install tensorflow-cpu==2.21.0 'tf-keras==2.21.*' h5py pillow numpy scikit-image
    /work/oracle-venv/bin/pip install mrcnn-colab==2.1 --no-deps     # matterport's mrcnn package
    # (`tox -e matterport` builds the same environment and runs tests/test_matterport_oracle.py)

The shim (`load_matterport`; nothing of matterport is copied or edited, it is imported from the
installed wheel): eager execution off (tf.compat.v1.disable_eager_execution(): matterport builds a
TF 1 graph); `keras` in sys.modules a module holding tf_keras' attributes, with keras.backend,
keras.layers, keras.models, keras.utils tf_keras' own, and keras.engine a module whose Layer is
tf_keras.layers.Layer and whose `saving` holds tf_keras' legacy HDF5 loaders
(load_weights_from_hdf5_group[_by_name], which MaskRCNN.load_weights calls with a list of layers,
as Keras 2.2 did: wrapped to hand tf_keras an object whose .layers is that list); after the import,
the name `tf` in mrcnn.model and mrcnn.utils is rebound to tf.compat.v1 (tf.log, tf.to_float,
tf.sets.set_intersection, tf.sparse_tensor_to_dense, ...); ProposalLayer.call wrapped to give
its output its static shape (None, proposal_count, 4) (batch_slice loses it, and the ROI-align
layers after it need it); tf_keras.Model.uses_learning_phase = False (read by run_graph). Every
model is built after tf_keras.backend.clear_session() in a session with --threads TF threads, so
the automatic layer names (activation, activation_1, ...) are the same in every run.

Configurations (mrcnn.config.Config subclasses, GPU_COUNT = IMAGES_PER_GPU = 1, everything else
matterport's default: DETECTION_MIN_CONFIDENCE 0.7, POST_NMS_ROIS_INFERENCE 1000, square resize):

    A   BACKBONE resnet50,  NUM_CLASSES 3 (bg + 2, as the balloon sample), IMAGE_MIN/MAX_DIM 256
    B   BACKBONE resnet101, NUM_CLASSES 81 (COCO),                        IMAGE_MIN/MAX_DIM 512

What it does, per configuration:

1. builds MaskRCNN("inference", config), saves matterport's own `keras_model.save_weights` file
   and writes its structure to reference/matterport_layout_<A|B>.json: "config" (the fields set,
   and the derived ones a re-implementation needs), "layer_names" (every layer in the file's
   order, weightless ones too), "weights" ({layer: [[weight name, shape], ...]}, weighted layers
   only, rpn_model's inner weights under rpn_model), "root_attrs" (their HDF5 types), "keras_version";
2. writes the seeded weights with tests.matterport_h5.write_matterport_h5(layout, seed 2018) and
   prints every structural difference from the real file (reference.crfasrnn_oracle's h5_layout
   and layout_differences); loads our file with matterport's `model.load_weights(path,
   by_name=False)` (every weighted layer in order: the file must list exactly the model's) and
   checks that `by_name=True` gives the same values;
3. runs `model.detect([photo])` on skimage.data's astronaut, coffee and chelsea, and the same
   inputs through a K.function of the graph's inner tensors, and stores
   reference/matterport_<A|B>.npz (reference.generate.save_npz) with, for each photo P:

     P.image_digest      uint8 (32,)   sha256 of the photo's uint8 bytes (skimage.data, as given)
     P.molded_digest     uint8 (32,)   sha256 of the float32 molded image's bytes (mold_inputs)
     P.molded_shape      int64 (4,)    (1, S, S, 3)
     P.image_meta        float32 (1, 12 + NUM_CLASSES)   compose_image_meta's vector
     P.meta_digest       uint8 (32,)   sha256 of image_meta as float32
     P.window            int32 (4,)    mold_inputs' window (y1, x1, y2, x2) in molded pixels
     P.anchors_digest    uint8 (32,)   sha256 of get_anchors(S) (float32, normalised)
     P.<map>             float32       feature map <map> subsampled: x[0, ::s, ::s, ::c]
     P.<map>.sum         float64 (C,)  x[0].sum over both pixel axes (float64), every channel
         maps: C2-C5 res2c_out, res3d_out, res4f_out (A) / res4w_out (B), res5c_out;
               P2-P6 fpn_p2, fpn_p3, fpn_p4, fpn_p5, fpn_p6
     P.rpn_class.sub     float32 (1, ceil(N/16), 2)  rpn_class[:, ::16] (N anchors, softmax)
     P.rpn_bbox.sub      float32 (1, ceil(N/16), 4)  rpn_bbox[:, ::16] (raw deltas)
     P.rpn_top.index     int64 (200,)  the 200 anchors of highest foreground score (descending,
                                       ties by index), and their rows:
     P.rpn_top.class     float32 (200, 2), P.rpn_top.bbox float32 (200, 4)
     P.ROI               float32 (1, 1000, 4)   ProposalLayer 'ROI' (normalised y1 x1 y2 x2, in full)
     P.mrcnn_class.argmax int64 (1000,), P.mrcnn_class.max float32 (1000,)  every ROI's class and prob
     P.mrcnn_class.sub   float32 (1, R, NUM_CLASSES)   mrcnn_class[:, ::r] (r = 1 for A, 10 for B)
     P.mrcnn_bbox.argmax float32 (1000, 4)  mrcnn_bbox's deltas of each ROI's argmax class
     P.mrcnn_bbox.sub    float32 (1, R, NUM_CLASSES, 4)  mrcnn_bbox[:, ::r]
     P.mrcnn_detection   float32 (1, 100, 6)  DetectionLayer's output in full (normalised boxes,
                                              class id, score; zero rows pad)
     P.mrcnn_mask        float32 (K, 28, 28)  mrcnn_mask's channel of each detection's class for
                                              its K non-zero rows
     P.rois              int32 (n, 4)  detect()'s dict: pixel boxes in the photo
     P.class_ids         int32 (n,)    P.scores float32 (n,)
     P.masks.packed      uint8         detect()'s bool masks (H, W, n), each cropped to its box
                                       (masks[y1:y2, x1:x2, i] for P.rois[i] = y1, x1, y2, x2; the
                                       generator checks that nothing lies outside), raveled (C
                                       order), concatenated over i and np.packbits'ed
     P.masks.offsets     int64 (n + 1,)  where each crop starts and ends in the unpacked bits:
                                       np.unpackbits(packed)[offsets[i]:offsets[i + 1]]
                                       .reshape(y2 - y1, x2 - x1)
     P.masks.shape       int64 (3,)    (H, W, n)
     P.masks.area        int64 (n,)    each mask's pixel count
   and the subsampling steps, for every map: <map>.step int64 (2,) = (s, c): s = max(1, H // 16),
   c = max(1, C // 32), i.e. at most 16 x 16 pixels and 32 channels; rpn.step int64 (1,) = 16;
   mrcnn.step int64 (1,) = r. The layer names are the names in matterport's graph (the C4 map
   is res4f_out for resnet50, res4w_out for resnet101's 22 identity blocks b..w).
4. --time: detect() on skimage.data.astronaut() with configuration B but IMAGE_MIN/MAX_DIM 1024,
   seeded weights, median of 3 after a warm-up, with 1 and 2 TF threads, each in its own process:
   wall seconds, the process's CPU seconds (time.process_time, all threads; on a loaded machine
   the one-thread CPU time is the better estimate of the unloaded wall time) and the load average;
   written to reference/matterport_timing.json (not a golden: not in the manifest).

--self-test (tests/test_matterport_oracle.py, `tox -e matterport`) rebuilds a configuration and
checks, without writing anything: the real save_weights file against the stored layout (layer
names, weight names and shapes, configuration); write_matterport_h5's file against the real one
(the one expected difference: tf_keras writes an empty top_level_model_weights group, Keras 2.2.4
did not) and against matterport's load_weights, by_name=False and by_name=True (every loaded
value equal to matterport_weights'); and every stored array of the first photograph (astronaut)
against a fresh run, within the tolerance below.

The goldens are made with one TF thread and regenerate bit for bit on one machine; their manifest
entries say "exact": false (float32 convolutions sum in a CPU-dependent order) and list the
layout file as a companion, checked by checksum. reference/generate.py knows these files
(EXTERNAL): it keeps their entries and leaves them out of its --check; this script's --check
regenerates into a temporary folder and compares (layouts byte for byte, arrays within
reference.generate.INEXACT_TOLERANCE, integer arrays and digests exactly).
"""

from __future__ import annotations

import os

# Parity numerics for TF (as the project's conftest and generate.py set them), and Keras 2.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMAND = "/work/oracle-venv/bin/python reference/matterport_oracle.py --output reference/"
VERSIONED = ("numpy", "tensorflow-cpu", "tensorflow", "tf-keras", "h5py", "scikit-image", "mrcnn-colab")
PHOTOS = ("astronaut", "coffee", "chelsea")
CONFIGS = {
    "A": {"NAME": "matterport_A", "BACKBONE": "resnet50", "NUM_CLASSES": 3, "IMAGE_MIN_DIM": 256,
          "IMAGE_MAX_DIM": 256},
    "B": {"NAME": "matterport_B", "BACKBONE": "resnet101", "NUM_CLASSES": 81, "IMAGE_MIN_DIM": 512,
          "IMAGE_MAX_DIM": 512},
}
# Derived configuration fields a re-implementation needs (written into the layout file).
DERIVED = ("IMAGE_SHAPE", "IMAGE_META_SIZE", "BACKBONE_STRIDES", "RPN_ANCHOR_SCALES", "RPN_ANCHOR_RATIOS",
           "RPN_ANCHOR_STRIDE", "RPN_NMS_THRESHOLD", "PRE_NMS_LIMIT", "POST_NMS_ROIS_INFERENCE",
           "RPN_BBOX_STD_DEV", "BBOX_STD_DEV", "DETECTION_MAX_INSTANCES", "DETECTION_MIN_CONFIDENCE",
           "DETECTION_NMS_THRESHOLD", "MEAN_PIXEL", "POOL_SIZE", "MASK_POOL_SIZE", "MASK_SHAPE",
           "TOP_DOWN_PYRAMID_SIZE", "FPN_CLASSIF_FC_LAYERS_SIZE", "IMAGE_RESIZE_MODE", "IMAGE_MIN_SCALE",
           "TRAIN_BN", "USE_MINI_MASK")
MAPS = {"A": ("res2c_out", "res3d_out", "res4f_out", "res5c_out"),
        "B": ("res2c_out", "res3d_out", "res4w_out", "res5c_out")}
PYRAMID = ("fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6")
RPN_STEP = 16
RPN_TOP = 200
MRCNN_STEP = {"A": 1, "B": 10}


def golden_name(key: str) -> str:
    return f"matterport_{key}.npz"


def layout_name(key: str) -> str:
    return f"matterport_layout_{key}.json"


class _LayerList:
    """What tf_keras' HDF5 loaders read of a model, for a list of layers."""

    def __init__(self, layers):
        self.layers = list(layers)
        self._trainable_weights, self._non_trainable_weights = [], []

    def _flatten_layers(self):
        for layer in self.layers:
            yield from layer._flatten_layers()


def load_matterport(threads: int | None = 1):
    """(mrcnn.model, mrcnn.config, mrcnn.utils) running on tf_keras and tf.compat.v1 (the shim)."""
    import tensorflow as tf
    import tf_keras
    from tf_keras.src.saving.legacy import hdf5_format

    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.compat.v1.disable_eager_execution()
    saving = types.ModuleType("keras.engine.saving")
    # Keras 2.2's loaders took the list of layers; tf_keras' take a model (its .layers).
    saving.load_weights_from_hdf5_group = lambda f, layers, reshape=False: \
        hdf5_format.load_weights_from_hdf5_group(f, _LayerList(layers))
    saving.load_weights_from_hdf5_group_by_name = lambda f, layers, skip_mismatch=False, reshape=False: \
        hdf5_format.load_weights_from_hdf5_group_by_name(f, _LayerList(layers), skip_mismatch=skip_mismatch)
    engine = types.ModuleType("keras.engine")
    engine.Layer = tf_keras.layers.Layer
    engine.saving = saving
    keras = types.ModuleType("keras")
    keras.__dict__.update({k: v for k, v in vars(tf_keras).items() if not k.startswith("__")})
    keras.__version__ = tf_keras.__version__
    keras.engine = engine
    sys.modules.update({"keras": keras, "keras.backend": tf_keras.backend, "keras.layers": tf_keras.layers,
                        "keras.models": tf_keras.models, "keras.utils": tf_keras.utils,
                        "keras.engine": engine, "keras.engine.saving": saving})
    tf_keras.Model.uses_learning_phase = False
    import mrcnn.config
    import mrcnn.model
    import mrcnn.utils

    mrcnn.model.tf = tf.compat.v1
    mrcnn.utils.tf = tf.compat.v1
    layer = mrcnn.model.ProposalLayer
    if not getattr(layer.call, "_static_shape_shim", False):
        original = layer.call

        def call(self, inputs):
            proposals = original(self, inputs)
            proposals.set_shape((None, self.proposal_count, 4))
            return proposals

        call._static_shape_shim = True
        layer.call = call
    return mrcnn.model, mrcnn.config, mrcnn.utils


def make_config(config_module, key: str, **overrides):
    fields = {**CONFIGS[key], **overrides, "GPU_COUNT": 1, "IMAGES_PER_GPU": 1}
    return type(f"Config{key}", (config_module.Config,), fields)()


def build(model_module, config, threads: int | None, model_dir: str):
    """MaskRCNN in inference mode in a fresh graph and session (the same automatic names each time)."""
    import tensorflow as tf
    import tf_keras

    tf_keras.backend.clear_session()
    session_config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads or 0,
                                              inter_op_parallelism_threads=threads or 0)
    from tf_keras.src import backend

    backend.set_session(tf.compat.v1.Session(config=session_config))
    return model_module.MaskRCNN(mode="inference", config=config, model_dir=model_dir)


def _json_value(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def real_layout(path, config, key: str) -> dict:
    """The structure of matterport's own save_weights file, and the configuration."""
    import h5py

    from reference.crfasrnn_oracle import h5_layout

    structure = h5_layout(path)
    with h5py.File(path, "r") as file:
        layer_names = [str(name) for name in file.attrs["layer_names"]]
        weights = {}
        for layer in layer_names:
            names = [str(name) for name in file[layer].attrs["weight_names"]]
            if names:
                weights[layer] = [[name, list(file[layer][name].shape)] for name in names]
        keras_version = str(file.attrs["keras_version"])
    fields = {name: _json_value(getattr(config, name)) for name in sorted({*CONFIGS[key], *DERIVED})}
    return {"configuration": key, "config": fields, "layer_names": layer_names, "weights": weights,
            "keras_version": keras_version, "root_attrs": structure["root_attrs"],
            "producer": "keras_model.save_weights of matterport's MaskRCNN (mrcnn-colab 2.1) on tf_keras "
                        f"{importlib.metadata.version('tf-keras')}"}


def digest(array) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(np.ascontiguousarray(array).tobytes()).digest(), np.uint8).copy()


def map_steps(shape) -> tuple[int, int]:
    _, h, _, c = shape
    return max(1, h // 16), max(1, c // 32)


def stage_tensors(model, key: str) -> dict:
    """{name: tensor} of the graph's layers whose outputs are stored."""
    keras_model = model.keras_model
    names = (*MAPS[key], *PYRAMID, "rpn_class", "rpn_bbox", "ROI", "mrcnn_class", "mrcnn_bbox",
             "mrcnn_detection", "mrcnn_mask")
    return {name: keras_model.get_layer(name).output for name in names}


def run_photo(model, key: str, name: str, image: np.ndarray) -> dict[str, np.ndarray]:
    import tf_keras

    config = model.config
    molded, metas, windows = model.mold_inputs([image])
    anchors = model.get_anchors(molded[0].shape)
    tensors = stage_tensors(model, key)
    function = tf_keras.backend.function(model.keras_model.inputs, list(tensors.values()))
    values = dict(zip(tensors, function([molded, metas, np.broadcast_to(anchors, (1,) + anchors.shape)]),
                      strict=True))
    result = model.detect([image])[0]
    p = f"{name}."
    out = {p + "image_digest": digest(image.astype(np.uint8)),
           p + "molded_digest": digest(molded.astype(np.float32)),
           p + "molded_shape": np.array(molded.shape, np.int64),
           p + "image_meta": metas.astype(np.float32),
           p + "meta_digest": digest(metas.astype(np.float32)),
           p + "window": np.asarray(windows[0], np.int32),
           p + "anchors_digest": digest(anchors.astype(np.float32))}
    for layer in (*MAPS[key], *PYRAMID):
        x = values[layer]
        s, c = map_steps(x.shape)
        out[p + layer] = np.ascontiguousarray(x[0, ::s, ::s, ::c], np.float32)
        out[p + layer + ".sum"] = x[0].astype(np.float64).sum(axis=(0, 1))
        out[f"{layer}.step"] = np.array([s, c], np.int64)
    rpn_class, rpn_bbox = values["rpn_class"], values["rpn_bbox"]
    out[p + "rpn_class.sub"] = np.ascontiguousarray(rpn_class[:, ::RPN_STEP], np.float32)
    out[p + "rpn_bbox.sub"] = np.ascontiguousarray(rpn_bbox[:, ::RPN_STEP], np.float32)
    top = np.lexsort((np.arange(rpn_class.shape[1]), -rpn_class[0, :, 1]))[:RPN_TOP]
    out[p + "rpn_top.index"] = top.astype(np.int64)
    out[p + "rpn_top.class"] = np.ascontiguousarray(rpn_class[0, top], np.float32)
    out[p + "rpn_top.bbox"] = np.ascontiguousarray(rpn_bbox[0, top], np.float32)
    out["rpn.step"] = np.array([RPN_STEP], np.int64)
    out[p + "ROI"] = values["ROI"].astype(np.float32)
    probs, deltas = values["mrcnn_class"], values["mrcnn_bbox"]
    argmax = probs[0].argmax(axis=1)
    r = MRCNN_STEP[key]
    out[p + "mrcnn_class.argmax"] = argmax.astype(np.int64)
    out[p + "mrcnn_class.max"] = probs[0].max(axis=1).astype(np.float32)
    out[p + "mrcnn_class.sub"] = np.ascontiguousarray(probs[:, ::r], np.float32)
    out[p + "mrcnn_bbox.argmax"] = np.ascontiguousarray(deltas[0, np.arange(len(argmax)), argmax], np.float32)
    out[p + "mrcnn_bbox.sub"] = np.ascontiguousarray(deltas[:, ::r], np.float32)
    out["mrcnn.step"] = np.array([r], np.int64)
    detections = values["mrcnn_detection"].astype(np.float32)
    out[p + "mrcnn_detection"] = detections
    rows = np.flatnonzero(detections[0, :, 4] != 0)
    classes = detections[0, rows, 4].astype(np.int64)
    out[p + "mrcnn_mask"] = np.ascontiguousarray(values["mrcnn_mask"][0, rows, :, :, classes], np.float32) \
        if len(rows) else np.zeros((0,) + tuple(config.MASK_SHAPE), np.float32)
    masks = np.asarray(result["masks"], bool)
    out[p + "rois"] = np.asarray(result["rois"], np.int32)
    out[p + "class_ids"] = np.asarray(result["class_ids"], np.int32)
    out[p + "scores"] = np.asarray(result["scores"], np.float32)
    crops, offsets = [], [0]
    for i, (y1, x1, y2, x2) in enumerate(out[p + "rois"]):
        crop = masks[y1:y2, x1:x2, i]
        if crop.sum() != masks[:, :, i].sum():
            raise RuntimeError(f"{name}: detection {i}'s mask reaches outside its box")
        crops.append(crop.ravel())
        offsets.append(offsets[-1] + crop.size)
    out[p + "masks.packed"] = np.packbits(np.concatenate(crops) if crops else np.zeros(0, bool))
    out[p + "masks.offsets"] = np.array(offsets, np.int64)
    out[p + "masks.shape"] = np.array(masks.shape, np.int64)
    out[p + "masks.area"] = masks.sum(axis=(0, 1)).astype(np.int64)
    # detect() and the K.function ran the same graph on the same inputs.
    if not np.isin(out[p + "scores"], detections[0, rows, 5]).all():
        raise RuntimeError(f"{name}: detect()'s scores {result['scores']} are not the graph's {detections[0, rows, 5]}")
    return out


def photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {name: getattr(data, name)() for name in PHOTOS}


def check_loading(model, ours: pathlib.Path, real: pathlib.Path) -> list[str]:
    """Loads our file with matterport's load_weights by_name=False; then matterport's own file
    (Keras' initial values), so that every weight changes; then ours again by_name=True. [] when
    both loads of ours give the file's values."""
    import h5py

    with h5py.File(ours, "r") as file:
        expected = {weight.name: file[layer.name][weight.name][()] if weight.name in file[layer.name] else None
                    for layer in model.keras_model.layers for weight in layer.weights}
    problems = []
    for by_name in (False, True):
        if by_name:
            model.load_weights(str(real), by_name=False)
            unchanged = sum(np.array_equal(expected[w.name], v) for w, v in
                            zip(model.keras_model.weights, model.keras_model.get_weights(), strict=True))
            if unchanged > len(expected) // 2:
                problems.append(f"loading matterport's own file left {unchanged} weights at our values")
        model.load_weights(str(ours), by_name=by_name)
        for weight, value in zip(model.keras_model.weights, model.keras_model.get_weights(), strict=True):
            if expected.get(weight.name) is None or not np.array_equal(expected[weight.name], value):
                problems.append(f"by_name={by_name}: {weight.name} differs from the file")
    return problems


def generate_one(key: str, output: pathlib.Path, threads: int, log=print) -> dict:
    output.mkdir(parents=True, exist_ok=True)
    from reference.crfasrnn_oracle import h5_layout, layout_differences
    from reference.generate import save_npz
    from tests.matterport_h5 import MATTERPORT_SEED, write_matterport_h5

    model_module, config_module, _ = load_matterport(threads)
    config = make_config(config_module, key)
    with tempfile.TemporaryDirectory(prefix="matterport_oracle_") as scratch:
        scratch = pathlib.Path(scratch)
        start = time.perf_counter()
        model = build(model_module, config, threads, str(scratch))
        log(f"{key}: built in {time.perf_counter() - start:.1f} s, {len(model.keras_model.layers)} layers")
        real = scratch / "real.h5"
        model.keras_model.save_weights(str(real))
        layout = real_layout(real, config, key)
        (output / layout_name(key)).write_text(json.dumps(layout, indent=1, sort_keys=True) + "\n")
        ours = write_matterport_h5(scratch / "ours.h5", layout, MATTERPORT_SEED)
        differences = layout_differences(h5_layout(real), h5_layout(ours))
        log(f"{key}: {len(differences)} difference(s) of write_matterport_h5's file from save_weights':")
        for line in differences:
            log("  " + line)
        problems = check_loading(model, ours, real)
        log(f"{key}: matterport's load_weights(by_name=False/True) of our file: {problems or 'same values'}")
        if problems:
            raise RuntimeError("\n".join(problems))
        arrays = {}
        for name, image in photos().items():
            start = time.perf_counter()
            arrays.update(run_photo(model, key, name, image))
            log(f"{key}: {name} {image.shape}: {len(arrays[name + '.class_ids'])} detection(s), classes "
                f"{arrays[name + '.class_ids'].tolist()}, scores {np.round(arrays[name + '.scores'], 3).tolist()} "
                f"({time.perf_counter() - start:.1f} s)")
    save_npz(output / golden_name(key), arrays)
    return arrays


# The one structural difference of write_matterport_h5's file from tf_keras' save_weights file:
# tf_keras writes an empty group for the model's own (top-level) weights, Keras 2.2.4 did not.
EXPECTED_DIFFERENCES = ("group top_level_model_weights: only in the real file",)


def self_test(key: str, output: pathlib.Path, threads: int, log=print) -> list[str]:
    """Rebuilds configuration `key` and checks it against the stored files: the real
    save_weights file's layer order, weight names and shapes and the configuration against
    matterport_layout_<key>.json; write_matterport_h5's file against the real one (structure) and
    against matterport's load_weights (by_name False and True give the seeded values); detect()
    and the stored stages on the first photograph within INEXACT_TOLERANCE. [] when all agree."""
    from reference.crfasrnn_oracle import h5_layout, layout_differences
    from reference.generate import INEXACT_TOLERANCE
    from tests.matterport_h5 import MATTERPORT_SEED, matterport_weights, write_matterport_h5

    problems = []
    stored = json.loads((output / layout_name(key)).read_text())
    model_module, config_module, _ = load_matterport(threads)
    config = make_config(config_module, key)
    with tempfile.TemporaryDirectory(prefix="matterport_self_test_") as scratch:
        scratch = pathlib.Path(scratch)
        model = build(model_module, config, threads, str(scratch))
        real = scratch / "real.h5"
        model.keras_model.save_weights(str(real))
        layout = real_layout(real, config, key)
        for field in ("layer_names", "weights", "config"):
            if layout[field] != stored[field]:
                problems.append(f"{key}: the real file's {field} differs from {layout_name(key)}'s")
        ours = write_matterport_h5(scratch / "ours.h5", stored, MATTERPORT_SEED)
        for line in layout_differences(h5_layout(real), h5_layout(ours)):
            if not line.startswith(EXPECTED_DIFFERENCES):
                problems.append(f"{key}: our file differs from save_weights': {line}")
        problems += [f"{key}: {line}" for line in check_loading(model, ours, real)]
        seeded = {weight: value for _, weights in matterport_weights(stored, MATTERPORT_SEED)
                  for weight, value in weights}
        for layer in model.keras_model.layers:
            for weight, value in zip(layer.weights, layer.get_weights(), strict=True):
                if not np.array_equal(seeded.get(weight.name), value):
                    problems.append(f"{key}: {weight.name} loaded is not matterport_weights' value")
        del seeded
        name = PHOTOS[0]
        fresh = run_photo(model, key, name, photos()[name])
    with np.load(output / golden_name(key)) as golden:
        for array, value in fresh.items():
            expected = golden[array]
            if expected.shape != value.shape:
                problems.append(f"{key}: {array} is {value.shape}, stored {expected.shape}")
            elif expected.dtype.kind in "fc":
                if not np.allclose(value, expected, **INEXACT_TOLERANCE):
                    problems.append(f"{key}: {array} differs by up to {np.abs(value - expected).max():.3g}")
            elif not np.array_equal(value, expected):
                problems.append(f"{key}: {array} differs")
    log(f"{key}: self-test {'passed' if not problems else 'FAILED'} ({len(fresh)} arrays of {name} compared)")
    return problems


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def manifest_entry(output: pathlib.Path, key: str) -> dict:
    from reference.generate import describe

    return {**describe(output / golden_name(key)),
            "produced_by": f"matterport Mask R-CNN (mrcnn-colab {importlib.metadata.version('mrcnn-colab')}), "
                           f"configuration {key} ({CONFIGS[key]['BACKBONE']}, {CONFIGS[key]['NUM_CLASSES']} "
                           f"classes, {CONFIGS[key]['IMAGE_MAX_DIM']} px), seeded weights "
                           "(tests.matterport_h5), on TF "
                           f"{importlib.metadata.version('tensorflow-cpu')} + tf_keras "
                           f"{importlib.metadata.version('tf-keras')} through an import shim",
            "command": COMMAND, "exact": False, "versions": versions(),
            "companions": {layout_name(key): hashlib.sha256((output / layout_name(key)).read_bytes()).hexdigest()}}


def update_manifest(output: pathlib.Path, keys) -> None:
    from reference.generate import MANIFEST

    path = output / MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {"command": COMMAND, "files": {}}
    for key in keys:
        manifest["files"][golden_name(key)] = manifest_entry(output, key)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def compare(golden: pathlib.Path, fresh: pathlib.Path, keys) -> list[str]:
    """What differs between stored and regenerated goldens: layouts byte for byte, integer and
    digest arrays exactly, floats within reference.generate.INEXACT_TOLERANCE."""
    from reference.generate import INEXACT_TOLERANCE

    problems = []
    for key in keys:
        if (golden / layout_name(key)).read_bytes() != (fresh / layout_name(key)).read_bytes():
            problems.append(f"{layout_name(key)} differs")
        with np.load(golden / golden_name(key)) as a, np.load(fresh / golden_name(key)) as b:
            if sorted(a) != sorted(b):
                problems.append(f"{golden_name(key)}: arrays {sorted(set(a) ^ set(b))} in one file only")
            for name in sorted(set(a) & set(b)):
                x, y = a[name], b[name]
                if x.shape != y.shape or x.dtype != y.dtype:
                    problems.append(f"{golden_name(key)}: {name} is {y.dtype}{y.shape}, stored {x.dtype}{x.shape}")
                elif x.dtype.kind in "fc":
                    if not np.allclose(y, x, **INEXACT_TOLERANCE):
                        problems.append(f"{golden_name(key)}: {name} differs by up to {np.abs(y - x).max():.3g}")
                elif not np.array_equal(x, y):
                    problems.append(f"{golden_name(key)}: {name} differs")
    return problems


def seeded_model(threads: int, size: int):
    """matterport's MaskRCNN, configuration B at `size` px, with the seeded weights (seed 2018)."""
    from tests.matterport_h5 import MATTERPORT_SEED, write_matterport_h5

    model_module, config_module, _ = load_matterport(threads)
    config = make_config(config_module, "B", IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size)
    with tempfile.TemporaryDirectory(prefix="matterport_seeded_") as scratch:
        model = build(model_module, config, threads, scratch)
        real = pathlib.Path(scratch) / "real.h5"
        model.keras_model.save_weights(str(real))
        layout = real_layout(real, config, "B")
        ours = write_matterport_h5(pathlib.Path(scratch) / "ours.h5", layout, MATTERPORT_SEED)
        model.load_weights(str(ours), by_name=False)
    return model


def time_worker(threads: int, size: int, repeats: int = 3) -> dict:
    from skimage import data

    model = seeded_model(threads, size)
    image = data.astronaut()
    result = model.detect([image])[0]
    seconds, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        model.detect([image])
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    load = os.getloadavg()[0]
    return {"threads": threads, "size": size, "backbone": "resnet101", "num_classes": 81, "photo": "astronaut",
            "detections": len(result["class_ids"]), "median_s": round(float(np.median(seconds)), 3),
            "all_s": [round(t, 3) for t in seconds], "median_cpu_s": round(float(np.median(cpu)), 3),
            "load_average_1min": round(load, 2)}


def serve(threads: int, size: int, requests=sys.stdin, replies=sys.stdout) -> int:
    """The benchmarks' matterport arm (bench/test_bench_maskrcnn.py): builds the seeded model once,
    then answers one JSON line per request line, each timed inside this process:

        {"op": "detect", "result": false}  -> {"seconds": s}; with "result": true also rois,
                                              class_ids, scores and the masks (packbits, base64)
        {"op": "stage", "until": "fpn_p6"} -> {"seconds": s} of the graph up to that layer's output
                                              (molded input fed, as model.detect feeds it)

    on skimage.data.astronaut(); the first reply is {"ready": true, "build_s": s, "versions": ...}.
    Anything else on stdout (Keras' progress output) goes to stderr, so the protocol stays clean."""
    import base64

    import tf_keras
    from skimage import data

    sys.stdout = sys.stderr
    start = time.perf_counter()
    model = seeded_model(threads, size)
    image = data.astronaut()
    molded, metas, _ = model.mold_inputs([image])
    anchors = model.get_anchors(molded[0].shape)
    feed = [molded, metas, np.broadcast_to(anchors, (1,) + anchors.shape)]
    functions = {}

    def reply(message):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    reply({"ready": True, "build_s": round(time.perf_counter() - start, 3), "versions": versions()})
    for line in requests:
        request = json.loads(line)
        if request.get("op") == "detect":
            begin = time.perf_counter()
            result = model.detect([image])[0]
            message = {"seconds": time.perf_counter() - begin}
            if request.get("result"):
                masks = result["masks"].astype(bool)
                message |= {"rois": result["rois"].tolist(), "class_ids": result["class_ids"].tolist(),
                            "scores": result["scores"].tolist(), "mask_shape": list(masks.shape),
                            "masks": base64.b64encode(np.packbits(masks)).decode("ascii")}
            reply(message)
        elif request.get("op") == "stage":
            until = request["until"]
            if until not in functions:
                output = model.keras_model.get_layer(until).output
                functions[until] = tf_keras.backend.function(model.keras_model.inputs, [output])
                functions[until](feed)  # the first call builds the callable
            begin = time.perf_counter()
            functions[until](feed)
            reply({"seconds": time.perf_counter() - begin})
        else:
            reply({"error": f"unknown request {request!r}"})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=pathlib.Path, default=ROOT / "reference")
    parser.add_argument("--configs", default="AB", help="which configurations (default AB)")
    parser.add_argument("--threads", type=int, default=1, help="TF threads for the goldens (default 1)")
    parser.add_argument("--check", action="store_true", help="regenerate into a temporary folder and compare")
    parser.add_argument("--time", action="store_true", help="time detect() at --size px with 1 and 2 threads")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--self-test", action="store_true",
                        help="rebuild, check the layout, our weight file and one photo against the stored files")
    parser.add_argument("--serve", action="store_true",
                        help="the benchmarks' matterport arm: answer JSON requests on stdin (see serve())")
    parser.add_argument("--worker", choices=("time", "generate", "self-test"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keys = [key for key in args.configs if key in CONFIGS]
    output = args.output.resolve()
    if args.serve:
        return serve(args.threads, args.size)
    if args.worker == "time":
        print(json.dumps(time_worker(args.threads, args.size)))
        return 0
    if args.worker == "self-test":
        problems = []
        for key in keys:
            problems += self_test(key, output, args.threads)
        print("\n".join(problems))
        return 1 if problems else 0
    if args.self_test:  # each configuration in its own process
        failed = 0
        for key in keys:
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            failed |= subprocess.run([sys.executable, __file__, "--worker", "self-test", "--configs", key,
                                      "--threads", str(args.threads), "--output", str(output)], env=env).returncode
        print("matterport self-test " + ("FAILED" if failed else "passed"))
        return 1 if failed else 0
    if args.worker == "generate":
        for key in keys:
            generate_one(key, output, args.threads)
        return 0
    if args.time:
        results = []
        for threads in (1, 2):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            done = subprocess.run([sys.executable, __file__, "--worker", "time", "--threads", str(threads),
                                   "--size", str(args.size)], env=env, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-4000:], file=sys.stderr)
                return done.returncode
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]))
        timing = {"what": "matterport detect() on skimage.data.astronaut(), configuration B at "
                          f"{args.size} px, seeded weights, median of 3 after a warm-up",
                  "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
                  "versions": versions(), "results": results}
        (output / "matterport_timing.json").write_text(json.dumps(timing, indent=1, sort_keys=True) + "\n")
        return 0
    target = output
    scratch = tempfile.TemporaryDirectory(prefix="matterport_check_") if args.check else None
    if scratch:
        target = pathlib.Path(scratch.name)
    for key in keys:  # each configuration in its own process: a fresh TF runtime
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run([sys.executable, __file__, "--worker", "generate", "--configs", key,
                               "--threads", str(args.threads), "--output", str(target)], env=env)
        if done.returncode:
            return done.returncode
    if scratch:
        problems = compare(output, target, keys)
        scratch.cleanup()
        print("\n".join(problems) if problems else "regenerated matterport goldens agree with the stored ones")
        return 1 if problems else 0
    update_manifest(output, keys)
    for key in keys:
        print(f"wrote {output / golden_name(key)} ({(output / golden_name(key)).stat().st_size} bytes) and "
              f"{output / layout_name(key)} ({(output / layout_name(key)).stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
