"""Regenerate the golden files of reference/ and reference/MANIFEST.json.

    python reference/generate.py           # (tox -e reference) rewrite the goldens and the manifest
    python reference/generate.py --check   # regenerate into a temporary folder; exit 1 on any
                                           # checksum or shape difference from MANIFEST.json

Goldens hold what has no live oracle on every machine: pydensecrf's outputs on the reference
images (CI machines without pydensecrf still compare against them, and a new pydensecrf
release that changes them shows up), the synthetic scenes of the accuracy gate (so a change
of the scene generator, which would move the gate's measured margin, shows up too), and the
outputs of small seeded FCN, ASPP, DeepLab-v2 and CRF-RNN configurations in torch and Keras
(so drift in either framework shows up), and Mask R-CNN's ProposalLayer and DetectionLayer
(matterport's defaults) on seeded inputs, from the NumPy oracle (so a port can be checked
against numbers without running this package).

Files are written byte for byte reproducibly (uncompressed zip members with a fixed date),
so regenerating on an unchanged tree changes no checksum; tests compare the contents with
the tolerance table, not bytes.
"""

from __future__ import annotations

import os

# Parity numerics for TF (as conftest sets them): before anything imports TensorFlow.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import difflib  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable, Collection  # noqa: E402

import numpy as np  # noqa: E402

FOLDER = pathlib.Path(__file__).resolve().parent
MANIFEST = "MANIFEST.json"
COMMAND = "python reference/generate.py"
VERSIONED = ("numpy", "scipy", "scikit-image", "pydensecrf2", "torch", "tensorflow-cpu", "tensorflow", "keras", "impls")

# The astronaut case: pydensecrf's DenseCRF2D with its default-example parameters on a crop
# of skimage's astronaut and 21-label unaries of the tests' smooth field.
ASTRONAUT = dict(size=(64, 96), labels=12, iterations=5, seed=3)
PYDENSECRF_PARAMETERS = dict(gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13,
                             bilateral_compat=10)


def pydensecrf_examples() -> dict[str, np.ndarray]:
    """pydensecrf's example recipe on im1-3 (MAP labels, KL divergences) and DenseCRF2D's Q on a
    crop of the astronaut."""
    import pydensecrf.densecrf as dcrf
    import pydensecrf.utils as utils

    from tests.inputs import CRF_EXAMPLES, crf_example, example_recipe

    arrays = {}
    for name in CRF_EXAMPLES:
        image, annotation, _ = crf_example(name)
        _, divergences, labels = example_recipe(dcrf, utils, image, annotation)
        arrays[f"{name}_labels"], arrays[f"{name}_kl"] = labels, np.asarray(divergences, dtype=np.float64)
    image, unary = astronaut_inputs()
    arrays["astronaut_q"] = pydensecrf_q(image, unary, ASTRONAUT["iterations"])
    return arrays


def astronaut_inputs() -> tuple[np.ndarray, np.ndarray]:
    from tests.inputs import crf_image, smooth_unary

    height, width = ASTRONAUT["size"]
    image = np.ascontiguousarray(crf_image("astronaut")[:height, :width])
    return image, smooth_unary(height, width, ASTRONAUT["labels"], seed=ASTRONAUT["seed"])


def pydensecrf_q(image: np.ndarray, unary: np.ndarray, iterations: int) -> np.ndarray:
    """(H, W, L) float32 Q of pydensecrf's DenseCRF2D with PYDENSECRF_PARAMETERS."""
    import pydensecrf.densecrf as dcrf

    height, width, labels = unary.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(-1, labels).T))
    crf.addPairwiseGaussian(sxy=PYDENSECRF_PARAMETERS["gaussian_sxy"], compat=PYDENSECRF_PARAMETERS["gaussian_compat"])
    crf.addPairwiseBilateral(sxy=PYDENSECRF_PARAMETERS["bilateral_sxy"], srgb=PYDENSECRF_PARAMETERS["bilateral_srgb"],
                             rgbim=image, compat=PYDENSECRF_PARAMETERS["bilateral_compat"])
    return np.array(crf.inference(iterations), dtype=np.float32).T.reshape(height, width, labels)


def synthetic_scenes() -> dict[str, np.ndarray]:
    """The accuracy gate's synthetic set: images and labels of every scene, unaries of the first two."""
    from impls.synthetic import GATE_SET, synthetic_set

    scenes = synthetic_set(**GATE_SET)
    return {"images": np.stack([s[0] for s in scenes]), "labels": np.stack([s[1] for s in scenes]),
            "unaries": np.stack([s[2] for s in scenes[:2]])}


def seeded_models() -> dict[str, np.ndarray]:
    """Outputs of small seeded configurations in both frameworks: torch initialises the weights
    (torch.manual_seed(0); BatchNorm statistics drawn too), impls.port copies them into Keras,
    and both run on the same seeded input. FCN-32s/16s/8s with 3 classes on 37x41, ASPP(16, 3)
    on 9x11, DeepLabV2(3, scales (1, 0.5)) on 41x45 with the Caffe model's settings and with DrSleep's
    (TF1 resize, SAME padding, epsilon 1e-3), CrfRnn(3) with random matrices on 17x19,
    DeepLabLargeFOV(3) on 42x38."""
    import tensorflow as tf
    import torch

    import impls.tf
    import impls.torch
    from impls import port

    rng = np.random.default_rng(0)
    image = (rng.random((1, 37, 41, 3)) * 255).astype(np.float32)
    arrays = {}

    def run_both(name, make_torch, make_keras, x, extra=()):
        torch.manual_seed(0)
        torch_model = make_torch().eval()
        _draw_batchnorm(torch, torch_model)
        keras_model = make_keras()
        keras_model(tf.constant(x), *[tf.constant(e) for e in extra])
        port.torch_to_tf(torch_model, keras_model)
        with torch.no_grad():
            torch_in = [torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))) for a in (x, *extra)]
            arrays[f"{name}_torch"] = torch_model(*torch_in).numpy().transpose(0, 2, 3, 1)
        arrays[f"{name}_tf"] = keras_model(tf.constant(x), *[tf.constant(e) for e in extra]).numpy()

    for variant in ("32s", "16s", "8s"):
        run_both(f"fcn{variant}", lambda v=variant: impls.torch.FCN(v, 3), lambda v=variant: impls.tf.FCN(v, 3), image)
    features = rng.standard_normal((1, 9, 11, 16)).astype(np.float32)
    run_both("aspp", lambda: impls.torch.ASPP(16, 3), lambda: impls.tf.ASPP(16, 3), features)
    deeplab_image = (rng.random((1, 41, 45, 3)) * 255).astype(np.float32)
    run_both("deeplabv2", lambda: impls.torch.DeepLabV2(3, (1.0, 0.5)), lambda: impls.tf.DeepLabV2(3, (1.0, 0.5)),
             deeplab_image)
    logits = rng.standard_normal((1, 17, 19, 3)).astype(np.float32)
    crop = np.ascontiguousarray(deeplab_image[:, :17, :19]).astype(np.uint8)

    def crfrnn():
        layer = impls.torch.CrfRnn(3)
        with torch.no_grad():
            for parameter in layer.parameters():
                parameter.copy_(torch.randn(parameter.shape))
        return layer

    run_both("crfrnn", crfrnn, lambda: impls.tf.CrfRnn(3), logits, extra=(crop,))
    arrays["inputs_fcn"], arrays["inputs_aspp"], arrays["inputs_deeplabv2"] = image, features, deeplab_image
    arrays["inputs_crfrnn_logits"], arrays["inputs_crfrnn_image"] = logits, crop
    drsleep = {"resize": "tf1", "padding": "same", "batchnorm_epsilon": 1e-3}
    run_both("deeplabv2_drsleep", lambda: impls.torch.DeepLabV2(3, (1.0, 0.5), **drsleep),
             lambda: impls.tf.DeepLabV2(3, (1.0, 0.5), **drsleep), deeplab_image)
    arrays["inputs_largefov"] = (rng.random((1, 42, 38, 3)) * 255 - 120).astype(np.float32)
    run_both("largefov", lambda: impls.torch.DeepLabLargeFOV(3), lambda: impls.tf.DeepLabLargeFOV(3),
             arrays["inputs_largefov"])
    return arrays


def mask_rcnn_postprocessing() -> dict[str, np.ndarray]:
    """tests.inputs.detection_inputs(seed=0) and the NumPy oracle's proposal_layer and
    detection_layer outputs on them, with matterport's default configuration."""
    from impls.numpy import detection_layer, proposal_layer
    from tests.inputs import detection_inputs

    inputs = detection_inputs(seed=0)
    return {**inputs,
            "proposals": proposal_layer(inputs["rpn_probs"], inputs["rpn_deltas"], inputs["anchors"]),
            "detections": detection_layer(inputs["rois"], inputs["class_probs"], inputs["class_deltas"])}


def _draw_batchnorm(torch, model):
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) * 0.4 - 0.2)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


# exact: the same bytes on any machine (integer or single-threaded, fixed-order float code);
# otherwise float results of convolutions whose summation order depends on the CPU and thread
# count, compared with a tolerance across machines (and by checksum on one machine).
PRODUCERS = {
    "pydensecrf_examples.npz": (pydensecrf_examples, "pydensecrf example recipe on im1-3; DenseCRF2D on astronaut",
                                True),
    "synthetic_scenes.npz": (synthetic_scenes, "impls.synthetic.synthetic_set(**GATE_SET)", True),
    "seeded_models.npz": (seeded_models,
                          "seeded FCN-32s/16s/8s, ASPP, DeepLabV2, CrfRnn, DeepLabLargeFOV in torch and Keras", False),
    # exp and log of NumPy's SIMD loops may round differently on another CPU.
    "mask_rcnn_postprocessing.npz": (
        mask_rcnn_postprocessing, "impls.numpy proposal_layer and detection_layer on detection_inputs(seed=0)", False),
}


# Goldens written by another script in its own environment (reference/crfasrnn_oracle.py runs the
# original crfasrnn_keras: Keras 2 and its compiled op): generate() keeps their manifest entries,
# --check leaves them out, verify() checks their checksums and those of their "companions" (files
# beside them, such as the layout of Keras 2's weight file) where present.
EXTERNAL = {"crfasrnn_keras.npz": "reference/crfasrnn_oracle.py",
            "matterport_A.npz": "reference/matterport_oracle.py",
            "matterport_B.npz": "reference/matterport_oracle.py",
            "caffe_fcn.npz": "reference/caffe_oracle.py",
            "caffe_layers.npz": "reference/caffe_oracle.py"}


def save_npz(path: str | pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, reproducibly: members in name order, stored uncompressed, with a fixed timestamp."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def register_external(path: pathlib.Path, *, produced_by: str, command: str, versions: dict, exact: bool,
                      companions=()) -> None:
    """Records a golden another script wrote (EXTERNAL) in the MANIFEST.json beside it: its arrays,
    checksum, what made it and how, and the checksums of its companion files."""
    path = pathlib.Path(path)
    manifest_path = path.parent / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"command": COMMAND, "files": {}}
    entry = {**describe(path), "produced_by": produced_by, "command": command, "exact": exact, "versions": versions}
    if companions:
        entry["companions"] = {name: hashlib.sha256((path.parent / name).read_bytes()).hexdigest()
                               for name in companions}
    manifest["files"][path.name] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def describe(path: str | pathlib.Path) -> dict:
    """{sha256, arrays: {name: {shape, dtype}}} of an .npz file."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: {"shape": list(data[name].shape), "dtype": data[name].dtype.name} for name in sorted(data)}
    return {"sha256": hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest(), "arrays": arrays}


def versions() -> dict[str, str | None]:
    from tests.inputs import library_versions

    return {"python": platform.python_version(), **library_versions(VERSIONED)}


def generate(folder: pathlib.Path, *, log: Callable[[str], object] = print,
             only: Collection[str] | None = None) -> dict:
    """Writes the goldens (all, or the file names in `only`) into `folder` and returns the manifest
    (also written there)."""
    folder.mkdir(parents=True, exist_ok=True)
    previous = load_manifest(folder)["files"] if (folder / MANIFEST).exists() else {}
    manifest = {"command": COMMAND, "files": {name: entry for name, entry in previous.items() if name in EXTERNAL}}
    for file_name, (produce, what, exact) in PRODUCERS.items():
        if only is not None and file_name not in only:
            continue
        log(f"generating {file_name}: {what}")
        save_npz(folder / file_name, produce())
        manifest["files"][file_name] = {**describe(folder / file_name), "produced_by": what, "command": COMMAND,
                                        "exact": exact, "versions": versions()}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def load_manifest(folder: pathlib.Path = FOLDER) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def verify(folder: pathlib.Path, manifest: dict) -> list[str]:
    """What disagrees between the .npz files in `folder` and `manifest`: missing, unlisted, changed files."""
    problems = []
    listed = set(manifest["files"])
    present = {path.name for path in folder.glob("*.npz")}
    problems += [f"{name}: listed in the manifest but missing" for name in sorted(listed - present)]
    problems += [f"{name}: present but not in the manifest" for name in sorted(present - listed)]
    for name in sorted(listed & present):
        expected, found = manifest["files"][name], describe(folder / name)
        for key in ("sha256", "arrays"):
            if expected[key] != found[key]:
                problems.append(f"{name}: {key} is {found[key]}, the manifest says {expected[key]}")
        for companion, checksum in expected.get("companions", {}).items():
            if (folder / companion).exists() and \
                    hashlib.sha256((folder / companion).read_bytes()).hexdigest() != checksum:
                problems.append(f"{companion} (beside {name}): sha256 differs from the manifest's")
    return problems


# Inexact goldens across machines: float32 convolutions summed in another order.
INEXACT_TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def content_differences(golden_folder: pathlib.Path, fresh_folder: pathlib.Path, manifest: dict) -> list[str]:
    """What differs between fresh and stored goldens: a checksum for exact files, values beyond
    INEXACT_TOLERANCE for the others."""
    problems = []
    for name, entry in manifest["files"].items():
        fresh = fresh_folder / name
        if not fresh.exists():
            continue
        if entry.get("exact", True):
            if describe(fresh)["sha256"] != entry["sha256"]:
                problems.append(f"{name}: sha256 changed")
            continue
        with np.load(golden_folder / name) as stored, np.load(fresh) as new:
            for key in stored:
                a, b = new[key].astype(np.float64), stored[key].astype(np.float64)
                if a.shape != b.shape or not np.allclose(a, b, **INEXACT_TOLERANCE):
                    worst = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
                    problems.append(f"{name}:{key}: max |difference| {worst:.3g} beyond {INEXACT_TOLERANCE}")
    return problems


def manifest_diff(old: dict, new: dict) -> str:
    """Unified diff of the checksums and shapes of two manifests (versions left out)."""
    def essential(manifest):
        files = {name: {"sha256": entry["sha256"], "arrays": entry["arrays"]} for name, entry in
                 manifest["files"].items() if name not in EXTERNAL}
        return json.dumps(files, indent=2, sort_keys=True).splitlines()

    return "\n".join(difflib.unified_diff(essential(old), essential(new), "MANIFEST.json", "regenerated",
                                          lineterm=""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="regenerate into a temporary folder and compare")
    parser.add_argument("--output", type=pathlib.Path, default=FOLDER, help="folder to write (default reference/)")
    args = parser.parse_args(argv)
    if not args.check:
        generate(args.output)
        print(f"wrote {len(PRODUCERS)} golden file(s) and {MANIFEST} to {args.output}")
        return 0
    manifest = load_manifest(args.output)
    with tempfile.TemporaryDirectory() as scratch:
        diff = manifest_diff(manifest, generate(pathlib.Path(scratch)))
        problems = content_differences(args.output, pathlib.Path(scratch), manifest)
    if diff:
        print(f"regenerated checksums differ from {args.output / MANIFEST}:\n{diff}")
    if problems:
        print("beyond what the goldens allow:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    print("regenerated goldens agree with the manifest" + (" (inexact files within tolerance)" if diff else ""))
    return 0


if __name__ == "__main__":
    # Run as a script: the checkout (for tests.inputs) goes behind the installed packages on sys.path.
    sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
