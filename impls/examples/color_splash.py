"""Colour splash of a synthetic scene, as matterport's balloon sample renders its detections.

Each instance (a connected region of one foreground class of an impls.synthetic scene) plays a
detection: its box, and its mask cropped to the box and resized to a 28 x 28 soft mask as a
Mask R-CNN mask head outputs it. unmold_mask pastes each back into the image, and color_splash
keeps the colours under the instances and turns the rest grey. The PNG shows the scene, the
ground-truth instances and the splash side by side.

    python -m impls.examples.color_splash --output splash.png [--backend torch] [--seed 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pathlib

import numpy as np
import skimage.measure
import skimage.transform
from PIL import Image

from impls.synthetic import synthetic_scene

MASK_SIZE = 28  # matterport's MASK_SHAPE


@dataclasses.dataclass(frozen=True)
class Splash:
    image: np.ndarray  # (H, W, 3) uint8 scene
    instances: np.ndarray  # (H, W) int: 0 background, k for instance k
    masks: np.ndarray  # (H, W, K) bool, unmolded from the 28 x 28 soft masks
    splash: np.ndarray  # (H, W, 3) uint8


def instance_boxes_and_masks(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(instance map, [(y1, x1, y2, x2)], [28 x 28 float mask]) of the connected foreground regions."""
    instances = skimage.measure.label(labels, background=0, connectivity=1)
    boxes, soft_masks = [], []
    for region in skimage.measure.regionprops(instances):
        y1, x1, y2, x2 = region.bbox
        crop = (instances[y1:y2, x1:x2] == region.label).astype(np.float32)
        boxes.append((y1, x1, y2, x2))
        soft_masks.append(skimage.transform.resize(crop, (MASK_SIZE, MASK_SIZE), order=1, anti_aliasing=False))
    return instances, boxes, soft_masks


def render(height: int = 120, width: int = 160, *, seed: int = 3, backend: str = "numpy") -> Splash:
    """The splash of one seeded scene, computed with impls.<backend>'s unmold_mask and color_splash."""
    module = importlib.import_module(f"impls.{backend}")
    image, labels = synthetic_scene(height, width, seed=seed)
    instances, boxes, soft_masks = instance_boxes_and_masks(labels)
    tensor, to_numpy = _converters(backend)
    masks = [to_numpy(module.unmold_mask(tensor(mask), box, image.shape)) for mask, box in zip(soft_masks, boxes,
                                                                                              strict=True)]
    masks = np.stack(masks, axis=-1) if masks else np.zeros((height, width, 0), bool)
    if backend == "torch":
        splash = to_numpy(module.color_splash(tensor(image.transpose(2, 0, 1)), tensor(masks.transpose(2, 0, 1))))
        splash = splash.transpose(1, 2, 0)
    else:
        splash = to_numpy(module.color_splash(tensor(image), tensor(masks)))
    return Splash(image, instances, masks, splash)


def _converters(backend):
    if backend == "torch":
        import torch

        return (lambda a: torch.from_numpy(np.ascontiguousarray(a))), (lambda t: t.numpy())
    if backend == "tf":
        import tensorflow as tf

        return tf.constant, (lambda t: t.numpy())
    return np.asarray, np.asarray


def save_png(result: Splash, path: str | pathlib.Path) -> pathlib.Path:
    """Scene | instances (a colour each) | splash, side by side, as one PNG."""
    palette = np.random.default_rng(0).integers(40, 256, size=(result.instances.max() + 1, 3)).astype(np.uint8)
    palette[0] = 0
    gap = np.full((result.image.shape[0], 4, 3), 255, np.uint8)
    panel = np.concatenate([result.image, gap, palette[result.instances], gap, result.splash], axis=1)
    path = pathlib.Path(path)
    Image.fromarray(panel).save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("splash.png"))
    parser.add_argument("--backend", choices=("numpy", "torch", "tf"), default="numpy")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=2, default=(120, 160), metavar=("HEIGHT", "WIDTH"))
    args = parser.parse_args(argv)
    result = render(*args.size, seed=args.seed, backend=args.backend)
    print(f"{result.masks.shape[-1]} instances; wrote {save_png(result, args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
