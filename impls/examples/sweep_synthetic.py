"""A VOC-layout dataset of synthetic scenes with softmax scores, and a dense CRF sweep over it.

    python -m impls.examples.sweep_synthetic OUT [--images 24] [--workers 2]

writes OUT/voc (ImageSets/Segmentation/val.txt, JPEGImages, SegmentationClass, scores) from
impls.synthetic scenes and their coarse FCN-like unaries, then runs impls.sweep over a 4 x 4
grid of the bilateral kernel's weight and width into OUT/sweep (results.csv, heatmap.png): the
figure of the README. The same writer makes the datasets of tests/test_sweep.py and the sweep
benchmark.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from impls.synthetic import coarse_unary, synthetic_scene
from impls.voc import write_label_png

CLASSES = 5
README_GRID = ["bilateral_compat=5,10,20,40", "bilateral_sxy=20,40,80,160"]


def write_voc_dataset(root: str | pathlib.Path, count: int = 6, size: tuple[int, int] = (40, 56), *,
                      layout: str = "HWC", seed: int = 0, split: str = "val") -> pathlib.Path:
    """A VOC-layout `split` of `count` synthetic scenes (the top two rows void, 255) with softmax
    scores from impls.synthetic.coarse_unary: float16 .npy for even images, float32 .npz for odd
    ones, (H, W, C) or, with layout="CHW", (C, H, W). Returns `root`."""
    from PIL import Image

    root = pathlib.Path(root)
    for folder in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass", "scores"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = [f"scene_{i:03d}" for i in range(count)]
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    for i, image_id in enumerate(ids):
        image, labels = synthetic_scene(*size, num_classes=CLASSES, seed=seed + i)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        labels = labels.copy()
        labels[:2, :] = 255
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", labels)
        unary = coarse_unary(np.where(labels == 255, 0, labels), CLASSES, seed=seed + i)
        probabilities = np.exp(-unary) / np.exp(-unary).sum(axis=-1, keepdims=True)
        if layout == "CHW":
            probabilities = probabilities.transpose(2, 0, 1)
        if i % 2:
            np.savez(root / "scores" / f"{image_id}.npz", scores=probabilities.astype(np.float32))
        else:
            np.save(root / "scores" / f"{image_id}.npy", probabilities.astype(np.float16))
    return root


def main(argv: list[str] | None = None) -> int:
    from impls import sweep

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(80, 112), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--workers", type=int)
    args = parser.parse_args(argv)
    root = write_voc_dataset(args.out / "voc", args.images, tuple(args.size))
    command = [str(root), "--split", "val", "--scores", str(root / "scores"), "--grid", *README_GRID,
               "--out", str(args.out / "sweep")]
    return sweep.main(command + (["--workers", str(args.workers)] if args.workers else []))


if __name__ == "__main__":
    raise SystemExit(main())
