"""Goldens of the ORIGINAL crfasrnn_keras (sadeepj/crfasrnn_keras, Keras 2 code and its compiled
TensorFlow op), run on TF 2.21 with Keras 2 (tf_keras), for checking our re-implementation in CI
where the original cannot run.

    /work/oracle-venv/bin/python reference/crfasrnn_oracle.py --crfasrnn-keras /tmp/crfasrnn_keras --output reference/
    /work/oracle-venv/bin/python reference/crfasrnn_oracle.py --crfasrnn-keras /tmp/crfasrnn_keras --time

What it does (the original's Python files run unchanged from their own checkout; nothing of them is
copied here; `keras` is mapped to tf_keras in sys.modules before they are imported):

1. builds their model (`crfrnn_model.get_crfrnn_model_def()`), sets the seeded weights of
   `tests.keras2_h5.crfasrnn_weights()` by layer name and saves them with Keras 2's own
   `model.save_weights(<tmp>.h5)`; writes that real file's structure to
   reference/crfasrnn_keras_h5_layout.json and prints every difference from the file our writer
   (`tests.keras2_h5.write_keras2_h5` with the same weights, i.e. `write_crfasrnn_h5`) produces;
2. builds the model again, `model.load_weights(<tmp>.h5)`, and runs their demo pipeline
   (run_demo.py) on skimage.data.coffee() saved as a PNG: `util.get_preprocessed_image`,
   `model.predict`, `util.get_label_image`; stores reference/crfasrnn_keras.npz (with
   reference.generate.save_npz) and its entry in reference/MANIFEST.json:
     input_digest      uint8 (32,)        sha256 of the float32 pre-processed input's bytes
     input_shape       int64 (4,)         (1, 500, 500, 3)
     image_hw          int64 (2,)         (img_h, img_w) of the resized photograph in the input
     labels            uint8 (500, 500)   argmax of the CRF output
     crf_logits        float32 (100, 100, 21)  the CRF output [::5, ::5]
     fcn_logits        float32 (100, 100, 21)  the CRF layer's input (cropped 'upsample') [::5, ::5]
     label_png_digest  uint8 (32,)        sha256 of the pixel array (uint8 'P' indices) of
                                          get_label_image's image
     label_png_shape   int64 (2,)         its shape (the photograph's: 400, 600)
3. with --time: model.predict on the 500x500 input, median of 3 after a warm-up, with 1 and 2
   TF threads (intra/inter-op, OMP_NUM_THREADS), the whole net, a sub-model up to the CRF
   layer's input, and their CrfRnnLayer alone (a model of the same layer on two Inputs); each
   thread setting in its own process.

The goldens are made with one TF thread (--threads, default 1) and regenerate bit for bit on one
machine; their manifest entry says "exact": false (float32 convolutions sum in a CPU-dependent
order) and lists the layout file as a companion, checked by checksum. --keep-h5 PATH keeps Keras
2's own weight file (534 MB). reference/generate.py knows this file (EXTERNAL): it keeps its entry
and leaves it out of --check.

The environment (a virtualenv outside the checkout; the project's own one is not touched):

    python3.11 -m venv /work/oracle-venv
    /work/oracle-venv/bin/pip install tensorflow-cpu==2.21.0 'tf-keras==2.21.*' h5py pillow numpy scikit-image
    # got: tensorflow-cpu 2.21.0, tf_keras 2.21.0, h5py 3.14.0, numpy 2.4.6, pillow 13.0.0, scikit-image 0.26.0

The original and its op (commit 0aa24ef of sadeepj/crfasrnn_keras):

    git clone <mirror of sadeepj/crfasrnn_keras> /tmp/crfasrnn_keras
    cd /tmp/crfasrnn_keras/src/cpp
    sed -i 's/      return Status::OK();/      return absl::OkStatus();/' high_dim_filter.cc
    PY=/work/oracle-venv/bin/python
    g++ -std=c++17 -shared high_dim_filter.cc modified_permutohedral.cc -o high_dim_filter.so -fPIC \\
        $($PY -c 'import tensorflow as tf; print(" ".join(tf.sysconfig.get_compile_flags()))') \\
        $($PY -c 'import tensorflow as tf; print(" ".join(tf.sysconfig.get_link_flags()))') -O2

The only edit to the original, in src/cpp/high_dim_filter.cc (TF 2.21's Status is absl::Status,
which has no OK()):

    -      return Status::OK();
    +      return absl::OkStatus();

and C++17 instead of the Makefile's -std=c++11 (TF's headers need it; tf.sysconfig's flags say
--std=c++17 too). The .so then loads with tf.load_op_library as is; their Python files are not
edited.
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
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = "crfasrnn_keras.npz"
LAYOUT = "crfasrnn_keras_h5_layout.json"
COMMAND = ("/work/oracle-venv/bin/python reference/crfasrnn_oracle.py --crfasrnn-keras /tmp/crfasrnn_keras "
           "--output reference/")
VERSIONED = ("numpy", "tensorflow-cpu", "tensorflow", "tf-keras", "h5py", "pillow", "scikit-image")
# Root attributes too bulky for the layout file (none in a save_weights file; model.save's JSON).
BULKY = ("model_config", "training_config")


def set_threads(threads: int | None) -> None:
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def load_original(checkout: pathlib.Path, threads: int | None = None):
    """(crfrnn_model, util) of the original, with `keras` mapped to tf_keras (Keras 2)."""
    import tensorflow as tf
    import tf_keras

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    topology = types.ModuleType("keras.engine.topology")
    topology.Layer = tf_keras.layers.Layer
    engine = types.ModuleType("keras.engine")
    engine.topology = topology
    sys.modules.update({"keras": tf_keras, "keras.models": tf_keras.models, "keras.layers": tf_keras.layers,
                        "keras.engine": engine, "keras.engine.topology": topology})
    sys.path.insert(0, str(checkout / "src"))
    import crfrnn_model
    import util

    return crfrnn_model, util


def commit_of(checkout: pathlib.Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def set_seeded_weights(model, weights) -> None:
    for layer_name, values in weights:
        if not values:
            continue
        layer = model.get_layer(layer_name)
        names = [w.name for w in layer.weights]
        expected = [name for name, _ in values]
        if names != expected:
            raise RuntimeError(f"{layer_name}: the model's weights are {names}, the seeded ones {expected}")
        layer.set_weights([value for _, value in values])


def _attribute(attrs, key):
    """(JSON value, type string) of an HDF5 attribute; the type as HDF5 stores it (fixed-length
    or variable-length string, its character set, or the numeric dtype) and its shape."""
    import h5py

    stored = attrs.get_id(key)
    string = h5py.check_string_dtype(stored.dtype)
    if string is not None:
        kind = f"{'vlen' if string.length is None else f'fixed {string.length}'} {string.encoding} string"
    else:
        kind = stored.dtype.str
    array = np.asarray(attrs[key])
    values = [v.decode("utf8") if isinstance(v, bytes) else v for v in array.ravel().tolist()]
    value = values if array.ndim else values[0]
    return value, f"{kind}, shape {list(stored.shape)}"


def _attributes(attrs) -> dict:
    return {key: dict(zip(("value", "dtype"), _attribute(attrs, key), strict=True)) for key in sorted(attrs)}


def h5_layout(path) -> dict:
    """The structure of a Keras 2 weight file: root attributes, layer order, each layer group's
    attributes and weight names, every dataset's path, shape and dtype."""
    import h5py

    with h5py.File(path, "r") as file:
        root_attrs = _attributes(file.attrs)
        layer_names = root_attrs.get("layer_names", {}).get("value")
        if layer_names is not None:
            root_attrs["layer_names"]["value"] = "<the list layer_names>"
        for key in BULKY:
            if key in root_attrs:
                root_attrs[key]["value"] = "<bulky, left out>"
        groups = {name: {"attrs": _attributes(file[name].attrs)} for name in file}
        datasets = {}

        def visit(name, item):
            if isinstance(item, h5py.Dataset):
                datasets[name] = {"shape": list(item.shape), "dtype": item.dtype.str}
            elif item.attrs and name not in groups:
                groups[name] = {"attrs": _attributes(item.attrs)}

        file.visititems(visit)
    return {"root_attrs": root_attrs, "layer_names": layer_names,
            "groups": groups, "datasets": datasets}


def automatic_names(model) -> list[str]:
    """The layers of `model` named by Keras itself (class name in snake case, a counter)."""
    names = []
    for layer in model.layers:
        stem = re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", type(layer).__name__).lower()
        if re.fullmatch(rf"{stem}(_\d+)?", layer.name) and not layer.name.startswith("input_"):
            names.append(layer.name)
    return names


def one_based(name: str) -> str:
    """tf.keras' zero-based automatic layer name as Keras <= 2.2.4 gave it (dropout -> dropout_1,
    dropout_1 -> dropout_2)."""
    stem, _, count = name.rpartition("_") if re.search(r"_\d+$", name) else (name, "", "0")
    return f"{stem}_{int(count) + 1}"


def layout_differences(real: dict, ours: dict) -> list[str]:
    """Every difference of our writer's file from the real one, summarised by kind."""
    out = []
    automatic = set(real.get("automatic_names", ()))
    renamed = [one_based(name) if name in automatic else name for name in real["layer_names"]]
    if real["layer_names"] != ours["layer_names"]:
        out.append(f"layer_names: real {real['layer_names']}")
        out.append(f"             ours {ours['layer_names']}")
        out.append("  with tf.keras' zero-based automatic names made one-based: "
                   + ("the same list" if renamed == ours["layer_names"] else f"still different: {renamed}"))
    for key in sorted(set(real["root_attrs"]) | set(ours["root_attrs"])):
        a, b = real["root_attrs"].get(key), ours["root_attrs"].get(key)
        if a is None or b is None:
            out.append(f"root attribute {key}: only in {'ours' if a is None else 'the real file'}")
            continue
        for field in ("value", "dtype"):
            if a[field] != b[field] and not (key == "layer_names" and field == "value"):
                out.append(f"root attribute {key} {field}: real {a[field]!r}, ours {b[field]!r}")
    rename = dict(zip(real["layer_names"], renamed, strict=True))
    for name in sorted(set(real["groups"]) - set(ours["groups"])):
        if rename.get(name, name) not in ours["groups"]:
            out.append(f"group {name}: only in the real file, {real['groups'][name]}")
    for name in sorted(set(ours["groups"]) - {rename.get(n, n) for n in real["groups"]}):
        out.append(f"group {name}: only in ours")
    types = {}
    for name, group in real["groups"].items():
        other = ours["groups"].get(rename.get(name, name))
        if other is None:
            continue
        for key in sorted(set(group["attrs"]) | set(other["attrs"])):
            a, b = group["attrs"].get(key), other["attrs"].get(key)
            if a is None or b is None or a["value"] != b["value"]:
                out.append(f"group {name} attribute {key}: real {a}, ours {b}")
            elif a["dtype"] != b["dtype"]:
                kind = lambda t: t.split(",")[0].split(" ")[0]  # noqa: E731
                types.setdefault((key, kind(a["dtype"]), kind(b["dtype"])), []).append(name)
    for (key, a, b), names in sorted(types.items()):
        out.append(f"attribute {key} of {len(names)} layer group(s) stored as {a} (real) vs {b} (ours): "
                   f"{', '.join(sorted(names))}")
    for name in sorted(set(real["datasets"]) | set(ours["datasets"])):
        a, b = real["datasets"].get(name), ours["datasets"].get(name)
        if a != b:
            out.append(f"dataset {name}: real {a}, ours {b}")
    return out


def same_values(path_a, path_b, datasets) -> list[str]:
    import h5py

    with h5py.File(path_a, "r") as a, h5py.File(path_b, "r") as b:
        return [name for name in datasets if name in b and not np.array_equal(a[name][()], b[name][()])]


def run_pipeline(model, util, png: pathlib.Path) -> dict[str, np.ndarray]:
    """Their run_demo.py on `png`, and the goldens."""
    import tf_keras

    img_data, img_h, img_w, size = util.get_preprocessed_image(str(png))
    probs = model.predict(img_data, verbose=0)[0]
    label_image = np.asarray(util.get_label_image(probs, img_h, img_w, size))
    fcn = tf_keras.Model(model.input, model.get_layer("crfrnn").input[0])
    fcn_logits = fcn.predict(img_data, verbose=0)[0]
    digest = lambda a: np.frombuffer(hashlib.sha256(np.ascontiguousarray(a).tobytes()).digest(), np.uint8)  # noqa: E731
    return {
        "input_digest": digest(img_data.astype(np.float32)),
        "input_shape": np.array(img_data.shape, np.int64),
        "image_hw": np.array([img_h, img_w], np.int64),
        "labels": probs.argmax(axis=2).astype(np.uint8),
        "crf_logits": np.ascontiguousarray(probs[::5, ::5]).astype(np.float32),
        "fcn_logits": np.ascontiguousarray(fcn_logits[::5, ::5]).astype(np.float32),
        "label_png_digest": digest(label_image.astype(np.uint8)),
        "label_png_shape": np.array(label_image.shape, np.int64),
    }


def coffee_png(folder: pathlib.Path) -> pathlib.Path:
    from PIL import Image
    from skimage import data

    path = folder / "coffee.png"
    Image.fromarray(data.coffee()).save(path)
    return path


def versions(checkout: pathlib.Path) -> dict:
    found = {"python": platform.python_version(), "crfasrnn_keras": commit_of(checkout)}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def update_manifest(output: pathlib.Path, checkout: pathlib.Path) -> dict:
    from reference.generate import MANIFEST, describe

    keras_version = importlib.metadata.version("tf-keras")
    entry = {**describe(output / GOLDEN),
             "produced_by": f"crfasrnn_keras (sadeepj, {commit_of(checkout)[:7]}) on TF "
                            f"{importlib.metadata.version('tensorflow-cpu')} + tf_keras {keras_version}, "
                            "custom op built from source",
             "command": COMMAND, "exact": False, "versions": versions(checkout),
             "companions": {LAYOUT: hashlib.sha256((output / LAYOUT).read_bytes()).hexdigest()}}
    path = output / MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {"command": COMMAND, "files": {}}
    manifest["files"][GOLDEN] = entry
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return entry


def generate(checkout: pathlib.Path, output: pathlib.Path, threads: int | None,
             keep_h5: pathlib.Path | None = None) -> None:
    from reference.generate import save_npz
    from tests.keras2_h5 import crfasrnn_weights, write_keras2_h5

    crfrnn_model, util = load_original(checkout, threads)
    with tempfile.TemporaryDirectory(prefix="crfasrnn_oracle_") as scratch:
        scratch = pathlib.Path(scratch)
        weights = crfasrnn_weights()
        model = crfrnn_model.get_crfrnn_model_def()
        set_seeded_weights(model, weights)
        real = scratch / "crfasrnn_keras_real.h5"
        model.save_weights(str(real), save_format="h5")
        layout = {**h5_layout(real), "automatic_names": automatic_names(model)}
        del model
        (output / LAYOUT).write_text(json.dumps(layout, indent=1, sort_keys=True) + "\n")
        ours = write_keras2_h5(scratch / "crfasrnn_keras_ours.h5", weights)
        del weights
        differences = layout_differences(layout, h5_layout(ours))
        print(f"{len(differences)} difference(s) of our writer's file from Keras 2's save_weights:")
        print("\n".join("  " + line for line in differences))
        unequal = same_values(real, ours, layout["datasets"])
        print(f"datasets of equal path with unequal values: {unequal or 'none'}")
        ours.unlink()
        if keep_h5 is not None:
            shutil.copyfile(real, keep_h5)
            print(f"kept Keras 2's file as {keep_h5}")

        model = crfrnn_model.get_crfrnn_model_def()
        model.load_weights(str(real))
        arrays = run_pipeline(model, util, coffee_png(scratch))
    save_npz(output / GOLDEN, arrays)
    entry = update_manifest(output, checkout)
    print(f"wrote {output / GOLDEN} ({(output / GOLDEN).stat().st_size} bytes, sha256 {entry['sha256']}), "
          f"{output / LAYOUT} and its manifest entry")
    print(f"labels present: {np.unique(arrays['labels']).tolist()}")


def time_worker(checkout: pathlib.Path, threads: int, repeats: int = 3) -> dict:
    """Median seconds of model.predict (whole net, and up to the CRF layer's input) on the
    coffee input, after one warm-up, with seeded weights."""
    import tf_keras

    from tests.keras2_h5 import crfasrnn_weights

    crfrnn_model, util = load_original(checkout, threads)
    model = crfrnn_model.get_crfrnn_model_def()
    set_seeded_weights(model, crfasrnn_weights())
    fcn = tf_keras.Model(model.input, model.get_layer("crfrnn").input[0])
    with tempfile.TemporaryDirectory() as scratch:
        img_data, *_ = util.get_preprocessed_image(str(coffee_png(pathlib.Path(scratch))))
    layer = model.get_layer("crfrnn")
    unaries, image = tf_keras.Input(shape=(500, 500, 21)), tf_keras.Input(shape=(500, 500, 3))
    crf = tf_keras.Model([unaries, image], layer([unaries, image]))  # the same layer, alone
    crf_inputs = [fcn.predict(img_data, verbose=0), img_data]
    result = {"threads": threads}
    for name, net, x in (("whole", model, img_data), ("fcn", fcn, img_data), ("crf_layer", crf, crf_inputs)):
        net.predict(x, verbose=0)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            net.predict(x, verbose=0)
            seconds.append(time.perf_counter() - start)
        result[name] = round(float(np.median(seconds)), 3)
        result[f"{name}_all"] = [round(t, 3) for t in seconds]
    result["whole_minus_fcn"] = round(result["whole"] - result["fcn"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crfasrnn-keras", type=pathlib.Path, required=True, help="checkout of the original")
    parser.add_argument("--output", type=pathlib.Path, default=ROOT / "reference")
    parser.add_argument("--threads", type=int, default=1, help="TF threads for the goldens (default 1)")
    parser.add_argument("--time", action="store_true", help="time model.predict with 1 and 2 threads")
    parser.add_argument("--keep-h5", type=pathlib.Path, help="keep Keras 2's own save_weights file here")
    parser.add_argument("--time-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    checkout = args.crfasrnn_keras.resolve()
    if not (checkout / "src" / "cpp" / "high_dim_filter.so").exists():
        parser.error(f"{checkout}/src/cpp/high_dim_filter.so is not built (see this script's docstring)")
    if args.time_worker:
        set_threads(args.threads)
        print(json.dumps(time_worker(checkout, args.threads)))
        return 0
    if args.time:
        for threads in (1, 2):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            done = subprocess.run([sys.executable, __file__, "--crfasrnn-keras", str(checkout), "--time-worker",
                                   "--threads", str(threads)], env=env, capture_output=True, text=True, check=True)
            print(done.stdout.strip().splitlines()[-1])
        return 0
    set_threads(args.threads)
    generate(checkout, args.output.resolve(), args.threads, args.keep_h5)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
