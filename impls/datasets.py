"""Datasets in the PASCAL VOC layout, with a network's per-image scores beside them.

    ROOT/ImageSets/Segmentation/<split>.txt   one image id per line
    ROOT/JPEGImages/<id>.jpg                  the RGB image
    ROOT/SegmentationClass/<id>.png           palette labels (impls.voc.read_label_png; 255 = ignore)
    SCORES/<id>.npy or SCORES/<id>.npz        (H, W, C) scores ("HWC", the default) or (C, H, W)
                                              ("CHW"); softmax probabilities, or logits with
                                              logits=True; float16, float32 or float64

`VocDataset.load(id)` returns the image, the labels and the unary (negative log-probabilities,
float32, (H, W, C)) that dense_crf takes, converting the scores once per load. Every fault names
the file and what was expected: a missing or unreadable file, an image and labels of different
sizes, scores of another size or class count. Nothing is skipped silently: callers that want to
go on past a bad image catch `BadImage` and report it.
"""

from __future__ import annotations

import dataclasses
import pathlib
import zipfile
import zlib

import numpy as np

__all__ = ["VocDataset", "BadImage", "SCORE_LAYOUTS", "unary_from_scores"]

SCORE_LAYOUTS = ("HWC", "CHW")
# pydensecrf's unary_from_softmax clips probabilities at 1e-5 before the log.
PROBABILITY_FLOOR = 1e-5
# What NumPy raises on a truncated or corrupt .npy / .npz (a cut zip, a short read, bad deflate data).
UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


class BadImage(ValueError):
    """One image of a dataset cannot be used; `path` is the offending file."""

    def __init__(self, image_id: str, path: pathlib.Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.image_id, self.path, self.problem = image_id, path, problem


@dataclasses.dataclass(frozen=True)
class VocDataset:
    """One split of a VOC-layout dataset and the directory of its scores (see the module docstring)."""

    root: pathlib.Path
    split: str
    scores: pathlib.Path
    logits: bool = False
    scores_layout: str = "HWC"

    def __post_init__(self):
        # Absolute here, in the client: workers started in another directory see the same files.
        object.__setattr__(self, "root", pathlib.Path(self.root).absolute())
        object.__setattr__(self, "scores", pathlib.Path(self.scores).absolute())
        if self.scores_layout not in SCORE_LAYOUTS:
            raise ValueError(f"VocDataset: argument 'scores_layout' must be one of {SCORE_LAYOUTS}, "
                             f"got {self.scores_layout!r}")
        if not self.split_file.is_file():
            raise FileNotFoundError(f"{self.split_file}: the split's image list is missing (expected one image id "
                                    f"per line in ROOT/ImageSets/Segmentation/<split>.txt)")
        if not self.scores.is_dir():
            raise FileNotFoundError(f"{self.scores}: the scores directory is missing")

    @property
    def split_file(self) -> pathlib.Path:
        return self.root / "ImageSets" / "Segmentation" / f"{self.split}.txt"

    def ids(self) -> list[str]:
        """The split's image ids, in file order."""
        ids = [line.strip() for line in self.split_file.read_text().splitlines() if line.strip()]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.split_file}: lists an image id more than once")
        return ids

    def image_path(self, image_id: str) -> pathlib.Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> pathlib.Path:
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def score_path(self, image_id: str) -> pathlib.Path:
        for suffix in (".npy", ".npz"):
            path = self.scores / f"{image_id}{suffix}"
            if path.exists():
                return path
        return self.scores / f"{image_id}.npy"

    def load(self, image_id: str, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image uint8 (H, W, 3), labels uint8 (H, W), unary float32 (H, W, C)) of one image;
        BadImage naming the file otherwise. `num_classes`, when given, is checked."""
        image = self.read_image(image_id)
        labels = self.read_labels(image_id, image.shape[:2])
        return image, labels, self.read_unary(image_id, image.shape[:2], num_classes)

    def read_image(self, image_id: str) -> np.ndarray:
        from PIL import Image

        path = self.image_path(image_id)
        try:
            with Image.open(path) as opened:
                image = np.asarray(opened.convert("RGB"))
        except FileNotFoundError:
            raise BadImage(image_id, path, "missing (expected a JPEG image)") from None
        except OSError as error:
            raise BadImage(image_id, path, f"not a readable image ({error})") from None
        return image

    def read_labels(self, image_id: str, shape: tuple[int, int]) -> np.ndarray:
        from impls.voc import read_label_png

        path = self.label_path(image_id)
        try:
            labels = read_label_png(path)
        except FileNotFoundError:
            raise BadImage(image_id, path, "missing (expected a palette label PNG)") from None
        except (OSError, ValueError) as error:
            raise BadImage(image_id, path, f"not a readable label PNG ({error})") from None
        if labels.shape != tuple(shape):
            raise BadImage(image_id, path, f"labels of shape {labels.shape}, expected the image's {tuple(shape)}")
        return labels

    def read_unary(self, image_id: str, shape: tuple[int, int], num_classes: int | None = None) -> np.ndarray:
        path = self.score_path(image_id)
        expected = f"({shape[0]}, {shape[1]}, C)" if self.scores_layout == "HWC" else f"(C, {shape[0]}, {shape[1]})"
        if num_classes is not None:
            expected = expected.replace("C", str(num_classes))
        try:
            scores = _read_array(path)
        except FileNotFoundError:
            raise BadImage(image_id, path, f"missing (expected {expected} scores as .npy or .npz)") from None
        except UNREADABLE as error:
            raise BadImage(image_id, path, f"not a readable score file ({type(error).__name__}: {error})") from None
        if scores.dtype.name not in ("float16", "float32", "float64"):
            raise BadImage(image_id, path, f"scores of dtype {scores.dtype}, expected float16, float32 or float64")
        if scores.ndim == 3 and self.scores_layout == "CHW":
            scores = scores.transpose(1, 2, 0)
        if scores.ndim != 3 or scores.shape[:2] != tuple(shape) or (num_classes is not None
                                                                     and scores.shape[2] != num_classes):
            got = scores.shape if self.scores_layout == "HWC" or scores.ndim != 3 else scores.transpose(2, 0, 1).shape
            raise BadImage(image_id, path, f"scores of shape {got}, expected {expected} ({self.scores_layout})")
        if not np.isfinite(scores).all():
            raise BadImage(image_id, path, "scores hold NaN or inf")
        return unary_from_scores(scores, logits=self.logits)


def _read_array(path: pathlib.Path) -> np.ndarray:
    with open(path, "rb") as handle:  # closed here even when NumPy fails half-way through a bad file
        if path.suffix == ".npz":
            with np.load(handle, allow_pickle=False) as archive:
                if len(archive.files) != 1:
                    raise ValueError(f"expected one array in the .npz, got {archive.files}")
                return archive[archive.files[0]]
        return np.load(handle, allow_pickle=False)


def unary_from_scores(scores: np.ndarray, *, logits: bool = False) -> np.ndarray:
    """(H, W, C) float32 negative log-probabilities of softmax probabilities (clipped at 1e-5, as
    pydensecrf's unary_from_softmax) or of logits (minus log-softmax, in float64)."""
    scores = np.asarray(scores, dtype=np.float64)
    if logits:
        shifted = scores - scores.max(axis=-1, keepdims=True)
        return (np.log(np.exp(shifted).sum(axis=-1, keepdims=True)) - shifted).astype(np.float32)
    return (-np.log(np.clip(scores, PROBABILITY_FLOOR, 1.0))).astype(np.float32)
