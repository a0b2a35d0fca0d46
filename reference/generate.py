"""Regenerate the golden files of reference/ and reference/MANIFEST.json.

    python reference/generate.py           # (tox -e reference) rewrite the goldens and the manifest
    python reference/generate.py --check   # regenerate into a temporary folder; exit 1 on any
                                           # checksum or shape difference from MANIFEST.json

Goldens hold what has no live oracle on every machine: pydensecrf's outputs on the reference
images (CI machines without pydensecrf still compare against them, and a new pydensecrf
release that changes them shows up), and the synthetic scenes of the accuracy gate (so a
change of the scene generator, which would move the gate's measured margin, shows up too).
Seeded model and CRF-RNN outputs join as those land.

Files are written byte for byte reproducibly (uncompressed zip members with a fixed date),
so regenerating on an unchanged tree changes no checksum; tests compare the contents with
the tolerance table, not bytes.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib.metadata
import io
import json
import pathlib
import platform
import sys
import tempfile
import zipfile

import numpy as np

FOLDER = pathlib.Path(__file__).resolve().parent
MANIFEST = "MANIFEST.json"
COMMAND = "python reference/generate.py"
VERSIONED = ("numpy", "scipy", "scikit-image", "pydensecrf2", "impls")

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

    from impls.testing import CRF_EXAMPLES, crf_example, example_recipe

    arrays = {}
    for name in CRF_EXAMPLES:
        image, annotation, _ = crf_example(name)
        _, divergences, labels = example_recipe(dcrf, utils, image, annotation)
        arrays[f"{name}_labels"], arrays[f"{name}_kl"] = labels, np.asarray(divergences, dtype=np.float64)
    image, unary = astronaut_inputs()
    arrays["astronaut_q"] = pydensecrf_q(image, unary, ASTRONAUT["iterations"])
    return arrays


def astronaut_inputs():
    from impls.testing import crf_image, smooth_unary

    height, width = ASTRONAUT["size"]
    image = np.ascontiguousarray(crf_image("astronaut")[:height, :width])
    return image, smooth_unary(height, width, ASTRONAUT["labels"], seed=ASTRONAUT["seed"])


def pydensecrf_q(image, unary, iterations):
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


PRODUCERS = {
    "pydensecrf_examples.npz": (pydensecrf_examples, "pydensecrf example recipe on im1-3; DenseCRF2D on astronaut"),
    "synthetic_scenes.npz": (synthetic_scenes, "impls.synthetic.synthetic_set(**GATE_SET)"),
}


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, reproducibly: members in name order, stored uncompressed, with a fixed timestamp."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def describe(path) -> dict:
    """{sha256, arrays: {name: {shape, dtype}}} of an .npz file."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: {"shape": list(data[name].shape), "dtype": data[name].dtype.name} for name in sorted(data)}
    return {"sha256": hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest(), "arrays": arrays}


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def generate(folder: pathlib.Path, *, log=print) -> dict:
    """Writes every golden into `folder` and returns the manifest (also written there)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"command": COMMAND, "files": {}}
    for file_name, (produce, what) in PRODUCERS.items():
        log(f"generating {file_name}: {what}")
        save_npz(folder / file_name, produce())
        manifest["files"][file_name] = {**describe(folder / file_name), "produced_by": what, "command": COMMAND,
                                        "versions": versions()}
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
    return problems


def manifest_diff(old: dict, new: dict) -> str:
    """Unified diff of the checksums and shapes of two manifests (versions left out)."""
    def essential(manifest):
        files = {name: {"sha256": entry["sha256"], "arrays": entry["arrays"]} for name, entry in
                 manifest["files"].items()}
        return json.dumps(files, indent=2, sort_keys=True).splitlines()

    return "\n".join(difflib.unified_diff(essential(old), essential(new), "MANIFEST.json", "regenerated",
                                          lineterm=""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="regenerate into a temporary folder and compare")
    parser.add_argument("--output", type=pathlib.Path, default=FOLDER, help="folder to write (default reference/)")
    args = parser.parse_args(argv)
    if not args.check:
        generate(args.output)
        print(f"wrote {len(PRODUCERS)} golden file(s) and {MANIFEST} to {args.output}")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        diff = manifest_diff(load_manifest(args.output), generate(pathlib.Path(scratch)))
    if diff:
        print(f"regenerated goldens differ from {args.output / MANIFEST}:\n{diff}", file=sys.stderr)
        return 1
    print("regenerated goldens equal the manifest")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
