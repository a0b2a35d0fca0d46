"""Dense CRF over a whole dataset, and its parameter search, on Dask distributed.

    python -m impls.sweep ROOT --split val --scores SCORES --grid bilateral_compat=3,4,5 \\
        bilateral_sxy=40,60,80 --out OUT                   # an in-process LocalCluster
    python -m impls.sweep ... --scheduler tcp://host:8786   # a cluster you already run
    python -m impls.sweep ... --grid bilateral_compat=4 bilateral_sxy=60 --apply   # labels of a split

Each task is one chunk of images under one setting of the grid (dense_crf's keyword
arguments); it returns the chunk's confusion matrix (impls.numpy, ignore index 255), so images
never travel through the scheduler: workers read them by path from shared storage. Every
finished task is appended to OUT/tasks.jsonl as it completes (one flushed line each), so a run
that is interrupted, or whose machine goes away, resumes where it stopped when the same command
is run again; a worker that dies has its tasks rerun elsewhere by Dask, and a result is counted
once. OUT/results.csv has a row per setting (mean IoU, pixel accuracy, per-class IoU, images,
seconds), OUT/heatmap.png the mean IoU over two arguments with the others at their best.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import hashlib
import inspect
import itertools
import json
import os
import pathlib
import sys
import time
import uuid
from collections.abc import Callable, Sequence

import numpy as np

from impls.datasets import SCORE_LAYOUTS, BadImage, VocDataset

__all__ = ["parse_grid", "run", "SweepResult", "SweepError", "main"]

IGNORE_INDEX = 255
STORE = "tasks.jsonl"
CONFIG = "sweep.json"


class SweepError(RuntimeError):
    """A sweep cannot go on (a bad file without --skip-bad, an output folder of another sweep)."""


# The grid ---------------------------------------------------------------------------------

def _crf_arguments() -> list[str]:
    import impls.numpy

    parameters = inspect.signature(impls.numpy.dense_crf).parameters
    return [name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "engine"]


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """{argument: values} of "ARG=V1,V2,..." items; numbers become int or float."""
    known = _crf_arguments()
    grid: dict[str, list] = {}
    for item in items:
        name, separator, values = item.partition("=")
        if not separator or not values:
            raise ValueError(f"--grid: expected ARG=V1,V2,..., got {item!r}")
        if name not in known:
            raise ValueError(f"--grid: {name!r} is not a dense_crf argument; expected one of {known}")
        if name in grid:
            raise ValueError(f"--grid: {name!r} is given twice")
        grid[name] = [_number(value.strip()) for value in values.split(",")]
    if not grid:
        raise ValueError("--grid: give at least one ARG=V1,V2,...")
    return grid


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def settings_of(grid: dict[str, list]) -> list[dict]:
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


@dataclasses.dataclass(frozen=True)
class Task:
    """One chunk of image ids under one setting; `kind` "sweep" (a confusion matrix) or "apply"
    (label PNGs)."""

    kind: str
    setting: tuple[tuple[str, object], ...]
    ids: tuple[str, ...]

    @functools.cached_property
    def key(self) -> str:
        ids = hashlib.sha1("\n".join(self.ids).encode()).hexdigest()[:16]
        return f"{self.kind}:{json.dumps(dict(self.setting), sort_keys=True)}:{ids}"


def plan(ids: Sequence[str], grid: dict[str, list], chunk_size: int, kind: str = "sweep") -> list[Task]:
    """Tasks chunk by chunk, every setting of a chunk together (workers reuse cached unaries)."""
    chunks = [tuple(ids[i:i + chunk_size]) for i in range(0, len(ids), chunk_size)]
    return [Task(kind, tuple(setting.items()), chunk) for chunk in chunks for setting in settings_of(grid)]


# The store ---------------------------------------------------------------------------------

class TaskStore:
    """OUT/tasks.jsonl: one JSON line per finished task, appended and flushed as it completes.
    A line cut short by a crash is ignored when read; a task stored twice counts once."""

    def __init__(self, out: pathlib.Path, config: dict):
        self.out = pathlib.Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_config(config)
        self.records: dict[str, dict] = {}
        path = self.out / STORE
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a run killed mid-write
                self.records.setdefault(record["key"], record)

    def _check_config(self, config):
        path = self.out / CONFIG
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != config:
                raise SweepError(f"{self.out} holds another sweep ({path} differs: stored {stored}, now {config}); "
                                 f"use another --out or remove it")
        else:
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def add(self, key: str, result: dict) -> None:
        if key in self.records:
            return
        record = {"key": key, **result}
        with open(self.out / STORE, "a") as store:
            store.write(json.dumps(record) + "\n")
            store.flush()
            os.fsync(store.fileno())
        self.records[key] = record


# The work of one task (runs on a worker) -----------------------------------------------------

@functools.lru_cache(maxsize=16)
def _load(dataset: VocDataset, image_id: str, num_classes: int):
    return dataset.load(image_id, num_classes)


def _threads(cores_by_host: dict[str, int]) -> int:
    """OpenMP threads for this task: the host's cores shared by all the Dask threads on it."""
    try:
        from distributed import get_worker

        host = get_worker().address.rsplit(":", 1)[0]
    except (ImportError, ValueError):
        return 1
    return max(1, len(os.sched_getaffinity(0)) // max(1, cores_by_host.get(host, 1)))


def run_task(dataset: VocDataset, task: Task, num_classes: int, engine: str, skip_bad: bool, out: str | None,
             threads_on_host: dict[str, int]) -> dict:
    """A chunk's confusion matrix (kind "sweep") or its label PNGs written into `out` (kind
    "apply"), with the images skipped as bad when `skip_bad` (BadImage otherwise)."""
    import impls.native
    import impls.numpy

    started = time.perf_counter()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    skipped, done = [], 0
    with impls.native.threads(_threads(threads_on_host)) if impls.native.available() else contextlib.nullcontext():
        for image_id in task.ids:
            try:
                image, labels, unary = _load(dataset, image_id, num_classes)
            except BadImage as bad:
                if not skip_bad:
                    raise
                skipped.append([bad.image_id, str(bad.path), bad.problem])
                continue
            q = impls.numpy.dense_crf(unary[None], image[None], **dict(task.setting), engine=engine)
            prediction = np.argmax(q, axis=-1)
            if task.kind == "apply":
                _write_labels(pathlib.Path(out) / f"{image_id}.png", prediction[0])
            else:
                confusion += impls.numpy.confusion_matrix(prediction, labels[None], num_classes,
                                                          ignore_index=IGNORE_INDEX)
            done += 1
    return {"confusion": confusion.tolist(), "images": done, "skipped": skipped,
            "seconds": time.perf_counter() - started}


def _write_labels(path: pathlib.Path, labels: np.ndarray) -> None:
    from impls.voc import write_label_png

    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    write_label_png(partial, labels.astype(np.uint8))
    os.replace(partial, path)  # a reader never sees half a PNG


# Running on Dask ----------------------------------------------------------------------------

@dataclasses.dataclass
class SweepResult:
    """Per setting (its grid values, in grid order): the summed confusion matrix, images and
    seconds; `computed` tasks ran in this call, `reused` came from the store; `skipped` lists
    (id, file, problem) of bad images left out with skip_bad."""

    grid: dict[str, list]
    confusion: dict[tuple, np.ndarray]
    images: dict[tuple, int]
    seconds: dict[tuple, float]
    computed: int
    reused: int
    skipped: list[tuple[str, str, str]]

    def rows(self) -> list[dict]:
        import impls.numpy

        rows = []
        for values, confusion in self.confusion.items():
            per_class = impls.numpy.per_class_iou(confusion)
            rows.append({**dict(zip(self.grid, values, strict=True)),
                         "mean_iou": float(impls.numpy.mean_iou(confusion)),
                         "pixel_accuracy": float(impls.numpy.pixel_accuracy(confusion)),
                         **{f"iou_{c}": float(v) for c, v in enumerate(per_class)},
                         "images": self.images[values], "seconds": round(self.seconds[values], 3)})
        return rows

    def best(self) -> dict:
        return max(self.rows(), key=lambda row: (np.nan_to_num(row["mean_iou"], nan=-1.0)))


def _client(workers: int | None, scheduler: str | None):
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    count = workers or max(1, len(os.sched_getaffinity(0)))
    cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


def _threads_by_host(client) -> dict[str, int]:
    totals: dict[str, int] = {}
    for address, info in client.scheduler_info()["workers"].items():
        host = address.rsplit(":", 1)[0]
        totals[host] = totals.get(host, 0) + int(info.get("nthreads", 1))
    return totals


def run(dataset: VocDataset, grid: dict[str, list], out: str | pathlib.Path, *, num_classes: int | None = None,
        chunk_size: int = 4, engine: str = "auto", skip_bad: bool = False, apply: bool = False,
        client=None, workers: int | None = None, scheduler: str | None = None, progress: bool = True,
        on_result: Callable[[int, int], None] | None = None) -> SweepResult:
    """Evaluate every setting of `grid` on `dataset` (or, with `apply`, write the labels of its one
    setting into OUT/labels), resuming from OUT's store. `client` is a distributed.Client to use;
    otherwise `scheduler` names a cluster, or a LocalCluster of `workers` processes is started.
    `on_result(done, total)` is called after each stored task."""
    out = pathlib.Path(out)
    ids = dataset.ids()
    if not ids:
        raise SweepError(f"{dataset.split_file}: the split lists no image")
    num_classes = num_classes or _class_count(dataset, ids[0])
    if apply and any(len(values) != 1 for values in grid.values()):
        raise SweepError(f"--apply takes one setting: give one value per argument, got {grid}")
    kind = "apply" if apply else "sweep"
    config = {"root": str(dataset.root.resolve()), "split": dataset.split, "scores": str(dataset.scores.resolve()),
              "logits": dataset.logits, "scores_layout": dataset.scores_layout, "num_classes": num_classes,
              "engine": engine, "chunk_size": chunk_size, "ignore_index": IGNORE_INDEX}
    store = TaskStore(out, config)
    tasks = plan(ids, grid, chunk_size, kind)
    missing = [task for task in tasks if task.key not in store]
    labels_dir = out / "labels"
    if apply:
        labels_dir.mkdir(exist_ok=True)
    computed = 0
    if missing:
        own_client, cluster = (client, None) if client is not None else _client(workers, scheduler)
        try:
            computed = _compute(own_client, dataset, missing, store, num_classes, engine, skip_bad,
                                str(labels_dir) if apply else None, len(tasks), progress, on_result)
        finally:
            if client is None:
                own_client.close()
                if cluster is not None:
                    cluster.close()
    return _collect(grid, tasks, store, num_classes, computed)


def _class_count(dataset: VocDataset, image_id: str) -> int:
    image = dataset.read_image(image_id)
    return int(dataset.read_unary(image_id, image.shape[:2]).shape[-1])


def _compute(client, dataset, missing, store, num_classes, engine, skip_bad, labels_dir, total, progress,
             on_result) -> int:
    from distributed import as_completed

    threads = _threads_by_host(client)
    # Keys unique to this call: the scheduler may still hold an earlier call's result or error.
    run_id = uuid.uuid4().hex[:12]
    futures = {client.submit(run_task, dataset, task, num_classes, engine, skip_bad, labels_dir, threads,
                             key=f"impls-sweep-{run_id}-{hashlib.sha1(task.key.encode()).hexdigest()}"): task
               for task in missing}
    bar = Progress(total, done=total - len(missing), enabled=progress)
    computed = 0
    try:
        for future in as_completed(futures):
            task = futures.pop(future)
            try:
                result = future.result()
            except BadImage as bad:
                raise SweepError(f"{bad}\n(rerun with --skip-bad to leave bad images out and list them)") from None
            store.add(task.key, result)
            computed += 1
            bar.advance(result["images"])
            if on_result is not None:
                on_result(bar.done, total)
    finally:
        for future in futures:
            future.cancel()
        bar.close()
    return computed


def _collect(grid, tasks, store, num_classes, computed) -> SweepResult:
    confusion, images, seconds, skipped = {}, {}, {}, {}
    for task in tasks:
        values = tuple(value for _, value in task.setting)
        record = store.records[task.key]
        confusion[values] = confusion.get(values, np.zeros((num_classes, num_classes), np.int64)) + np.array(
            record["confusion"], np.int64)
        images[values] = images.get(values, 0) + record["images"]
        seconds[values] = seconds.get(values, 0.0) + record["seconds"]
        for image_id, path, problem in record["skipped"]:
            skipped[image_id] = (image_id, path, problem)
    return SweepResult(grid, confusion, images, seconds, computed, len(tasks) - computed, list(skipped.values()))


class Progress:
    """A one-line progress bar with rate and ETA on stderr (a line per tenth when not a terminal)."""

    def __init__(self, total: int, *, done: int = 0, enabled: bool = True, stream=None):
        self.total, self.done, self.enabled = total, done, enabled
        self.stream = stream or sys.stderr
        self.started, self.first, self.images, self._last_tenth = time.monotonic(), done, 0, -1

    def advance(self, images: int) -> None:
        self.done += 1
        self.images += images
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        fresh = self.done - self.first
        eta = elapsed / fresh * (self.total - self.done) if fresh else 0.0
        filled = int(30 * self.done / self.total)
        line = (f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} tasks, "
                f"{self.images / max(elapsed, 1e-9):.2f} images/s, ETA {_clock(eta)}")
        if self.stream.isatty():
            self.stream.write("\r" + line)
        elif self.done * 10 // self.total != self._last_tenth:
            self._last_tenth = self.done * 10 // self.total
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.stream.isatty():
            self.stream.write("\n")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# Outputs ------------------------------------------------------------------------------------

def write_results(result: SweepResult, out: pathlib.Path) -> pathlib.Path:
    rows = result.rows()
    path = pathlib.Path(out) / "results.csv"
    with open(path, "w", newline="") as table:
        writer = csv.DictWriter(table, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if result.skipped:
        with open(pathlib.Path(out) / "skipped.csv", "w", newline="") as table:
            writer = csv.writer(table)
            writer.writerow(["id", "file", "problem"])
            writer.writerows(result.skipped)
    return path


def draw_heatmap(result: SweepResult, axes: tuple[str, str], path: pathlib.Path) -> pathlib.Path:
    """Mean IoU over two grid arguments, the others at the best setting's values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_name, columns_name = axes
    best = result.best()
    fixed = {name: best[name] for name in result.grid if name not in axes}
    rows, columns = result.grid[rows_name], result.grid[columns_name]
    table = np.full((len(rows), len(columns)), np.nan)
    for row in result.rows():
        if all(row[name] == value for name, value in fixed.items()):
            table[rows.index(row[rows_name]), columns.index(row[columns_name])] = row["mean_iou"]
    figure, axis = plt.subplots(figsize=(1.2 * len(columns) + 2.5, 1.0 * len(rows) + 1.8))
    image = axis.imshow(table, cmap="viridis")
    axis.set_xticks(range(len(columns)), [str(v) for v in columns])
    axis.set_yticks(range(len(rows)), [str(v) for v in rows])
    axis.set_xlabel(columns_name)
    axis.set_ylabel(rows_name)
    for (i, j), value in np.ndenumerate(table):
        axis.text(j, i, f"{value:.4f}", ha="center", va="center", color="white" if value < np.nanmean(table) else "k")
    title = "mean IoU" + (f" ({', '.join(f'{k}={v}' for k, v in fixed.items())})" if fixed else "")
    axis.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# Command line -------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    prog = "impls-sweep" if pathlib.Path(sys.argv[0]).name == "impls-sweep" else "python -m impls.sweep"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=pathlib.Path, help="dataset root in the VOC layout")
    parser.add_argument("--split", required=True, help="ImageSets/Segmentation/<split>.txt")
    parser.add_argument("--scores", required=True, type=pathlib.Path, help="folder of <id>.npy / <id>.npz scores")
    parser.add_argument("--grid", required=True, nargs="+", metavar="ARG=V1,V2", help="dense_crf arguments to sweep")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output folder (resumable store, tables)")
    parser.add_argument("--workers", type=int, help="LocalCluster worker processes (default: one per core)")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--logits", action="store_true", help="scores are logits (default: softmax probabilities)")
    parser.add_argument("--scores-layout", choices=SCORE_LAYOUTS, default="HWC")
    parser.add_argument("--num-classes", type=int, help="checked against every score file (default: the first's)")
    parser.add_argument("--chunk-size", type=int, default=4, help="images per task (default 4)")
    parser.add_argument("--engine", choices=("auto", "native", "framework"), default="auto",
                        help="impls.numpy.dense_crf's engine (default auto: native when built)")
    parser.add_argument("--skip-bad", action="store_true", help="leave out images with bad files, and list them")
    parser.add_argument("--heatmap", metavar="ARG,ARG", help="the two arguments of the heatmap (default: the first "
                                                               "two with several values)")
    parser.add_argument("--apply", action="store_true", help="write OUT/labels/<id>.png with the one given setting")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        grid = parse_grid(args.grid)
        dataset = VocDataset(args.root, args.split, args.scores, logits=args.logits, scores_layout=args.scores_layout)
        result = run(dataset, grid, args.out, num_classes=args.num_classes, chunk_size=args.chunk_size,
                     engine=args.engine, skip_bad=args.skip_bad, apply=args.apply, workers=args.workers,
                     scheduler=args.scheduler, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished tasks are stored in {args.out / STORE}; run the same command to resume",
              file=sys.stderr)
        return 130
    except (SweepError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{result.computed} tasks computed, {result.reused} reused from {args.out / STORE}")
    for image_id, path, problem in result.skipped:
        print(f"skipped {image_id}: {path}: {problem}")
    if args.apply:
        print(f"labels of {sum(result.images.values())} images in {args.out / 'labels'}")
        return 0
    print(f"results: {write_results(result, args.out)}")
    best = result.best()
    print("best: " + ", ".join(f"{name}={best[name]}" for name in grid) +
          f"  mean IoU {best['mean_iou']:.4f}, pixel accuracy {best['pixel_accuracy']:.4f}")
    varying = [name for name, values in grid.items() if len(values) > 1]
    axes = tuple(args.heatmap.split(",")) if args.heatmap else tuple(varying[:2])
    if len(axes) == 2 and all(a in grid for a in axes):
        print(f"heatmap: {draw_heatmap(result, axes, args.out / 'heatmap.png')}")
    elif args.heatmap:
        print(f"error: --heatmap {args.heatmap}: expected two grid arguments of {list(grid)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
