"""Dense CRF over a whole dataset, and its parameter search, on Dask distributed.

    python -m impls.sweep ROOT --split val --scores SCORES --grid bilateral_compat=3,4,5 \\
        bilateral_sxy=40,60,80 --out OUT                   # an in-process LocalCluster
    python -m impls.sweep ... --scheduler tcp://host:8786   # a cluster you already run
    python -m impls.sweep ... --grid bilateral_compat=4 bilateral_sxy=60 --apply   # labels of a split

Each task is one chunk of images under one setting of the grid (dense_crf's keyword
arguments); it returns the chunk's confusion matrix (impls.numpy, ignore index 255), so images
never travel through the scheduler: workers read them by (absolute) path from shared storage.
The grid and the options are checked in the client before any cluster starts. Every finished
task is appended to OUT/tasks.jsonl as it completes (one flushed line each), so a run that is
interrupted, or whose machine goes away, resumes where it stopped when the same command is run
again; a worker that dies has its tasks rerun elsewhere by Dask, and a result is counted once.
A task's key covers its setting, its image ids and the size and mtime of each image's score,
label and image file, so a rewritten or repaired file recomputes its tasks. OUT/results.csv has
a row per setting (mean IoU, pixel accuracy, per-class IoU, images, seconds, the native engine's
threads per task), OUT/heatmap.png the mean IoU over two arguments with the others at their best.
--threads (default: the host's cores divided by its Dask threads) is not in a task's key:
results do not depend on it, so a resumed sweep reuses tasks stored with another count.
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
import logging
import os
import pathlib
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence

import numpy as np

from impls import _checks
from impls.datasets import SCORE_LAYOUTS, BadImage, VocDataset

__all__ = ["parse_grid", "check_grid", "run", "SweepResult", "SweepError", "main"]

IGNORE_INDEX = 255
STORE = "tasks.jsonl"
CONFIG = "sweep.json"
SCHEDULER_TIMEOUT = 5  # seconds to reach a --scheduler before giving up
SKIP_BAD_HINT = "rerun with --skip-bad to leave bad images out and list them"


class SweepError(RuntimeError):
    """A sweep cannot go on (a bad file without --skip-bad, an output folder of another sweep)."""


# The grid ---------------------------------------------------------------------------------

def crf_defaults() -> dict[str, object]:
    """{name: default} of the dense_crf keyword arguments a grid can name."""
    import impls.numpy

    parameters = inspect.signature(impls.numpy.dense_crf).parameters
    return {name: p.default for name, p in parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "engine"}


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """{argument: values} of "ARG=V1,V2,..." items; numbers become int or float. The syntax only:
    check_grid checks the values."""
    known = list(crf_defaults())
    grid: dict[str, list] = {}
    for item in items:
        name, separator, values = item.partition("=")
        if not separator or not values:
            raise ValueError(f"--grid: expected ARG=V1,V2,..., got {item!r}")
        if name not in known:
            raise ValueError(f"--grid: {name!r} is not a dense_crf argument (expected one of {known})")
        if name in grid:
            raise ValueError(f"--grid: {name!r} is given twice")
        texts = [value.strip() for value in values.split(",")]
        if not all(texts):
            raise ValueError(f"--grid: {name} has an empty value (expected ARG=V1,V2,..., got {item!r})")
        grid[name] = [_number(text) for text in texts]
        if len(set(grid[name])) != len(grid[name]):
            raise ValueError(f"--grid: {name} has a value twice (expected distinct values, got {item!r})")
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


def check_grid(grid: dict[str, list], num_classes: int) -> None:
    """Every value of `grid` as dense_crf checks it (impls._checks.crf_parameters, the others at
    their defaults, `num_classes` labels); a ValueError naming the argument otherwise."""
    defaults = crf_defaults()
    for name, values in grid.items():
        for value in values:
            arguments = {**defaults, name: value}
            arguments["normalization_name"] = arguments.pop("normalization")
            try:
                _checks.crf_parameters(num_classes, **arguments)
            except (TypeError, ValueError) as error:
                detail = str(error).removeprefix(f"dense_crf: argument '{name}' ")
                raise ValueError(f"--grid: {name}={value} {detail}") from None


def settings_of(grid: dict[str, list]) -> list[dict]:
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def heatmap_axes(grid: dict[str, list], text: str | None) -> tuple[str, str] | None:
    """The heatmap's two grid arguments: `text` ("A,B"), or the first two with several values
    (None when fewer than two vary)."""
    if text is None:
        varying = [name for name, values in grid.items() if len(values) > 1]
        return (varying[0], varying[1]) if len(varying) >= 2 else None
    names = text.split(",")
    if len(names) != 2 or names[0] == names[1] or not all(name in grid for name in names):
        raise ValueError(f"--heatmap: expected two arguments A,B of the grid {list(grid)}, got {text!r}")
    return names[0], names[1]


# Tasks and their keys ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Task:
    """One chunk of image ids under one setting; `kind` "sweep" (a confusion matrix) or "apply"
    (label PNGs). `files` holds each image's files as the client saw them (a JSON string of
    its file_stamps entry); `key`, the store's name of the task, covers all of it."""

    kind: str
    setting: tuple[tuple[str, object], ...]
    ids: tuple[str, ...]
    files: tuple[str, ...] = ()
    key: str = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        chunk = hashlib.sha1(json.dumps([self.ids, self.files]).encode()).hexdigest()[:16]
        object.__setattr__(self, "key", f"{self.kind}:{json.dumps(dict(self.setting), sort_keys=True)}:{chunk}")


def file_stamps(dataset: VocDataset, ids: Sequence[str]) -> dict[str, list]:
    """{id: [name, size, mtime_ns] of its score, label and image files} (None for a missing one),
    taken in the client: a file rewritten or repaired changes the key of its tasks."""
    def stamp(path: pathlib.Path):
        try:
            stat = path.stat()
        except OSError:
            return [path.name, None]
        return [path.name, stat.st_size, stat.st_mtime_ns]

    return {image_id: [stamp(dataset.score_path(image_id)), stamp(dataset.label_path(image_id)),
                       stamp(dataset.image_path(image_id))] for image_id in ids}


def plan(ids: Sequence[str], grid: dict[str, list], chunk_size: int, kind: str = "sweep",
         stamps: dict[str, list] | None = None) -> list[Task]:
    """Tasks chunk by chunk, every setting of a chunk together (workers reuse cached unaries)."""
    stamps = stamps or {}
    chunks = [tuple(ids[i:i + chunk_size]) for i in range(0, len(ids), chunk_size)]
    return [Task(kind, tuple(setting.items()), chunk, tuple(json.dumps(stamps.get(i)) for i in chunk))
            for chunk in chunks for setting in settings_of(grid)]


# The store ---------------------------------------------------------------------------------

class TaskStore:
    """OUT/tasks.jsonl: one JSON line per finished task, appended and flushed as it completes.
    A line cut short by a crash is cut off when the store is opened; a task stored again (an
    --apply task whose labels were lost) counts once, its last record."""

    def __init__(self, out: pathlib.Path, config: dict):
        self.out = pathlib.Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_config(config)
        self.records: dict[str, dict] = {}
        path = self.out / STORE
        if path.exists():
            for line in _cut_partial_line(path).splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # not ours to repair; the task is recomputed
                self.records[record["key"]] = record

    def _check_config(self, config):
        path = self.out / CONFIG
        if not path.exists():
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            return
        stored = json.loads(path.read_text())
        differs = [f"{key}: stored {stored.get(key)!r}, now {config.get(key)!r}"
                   for key in sorted(stored.keys() | config.keys()) if stored.get(key) != config.get(key)]
        if differs:
            raise SweepError(f"--out: {self.out} holds another sweep ({'; '.join(differs)} in {path}); "
                             f"use another --out or remove it")

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def add(self, key: str, result: dict) -> None:
        record = {"key": key, **result}
        with open(self.out / STORE, "a") as store:
            store.write(json.dumps(record) + "\n")
            store.flush()
            os.fsync(store.fileno())
        self.records[key] = record


def _cut_partial_line(path: pathlib.Path) -> str:
    """The store's complete lines, the file truncated to them: a line a crash cut short (no final
    newline) would otherwise have the next record glued onto it."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        os.truncate(path, end)
    return data[:end].decode(errors="replace")


# The work of one task (runs on a worker) -----------------------------------------------------

@functools.lru_cache(maxsize=16)
def _load(dataset: VocDataset, image_id: str, num_classes: int, files: str):
    """An image, cached for the chunk's other settings; `files` (its stamp) keys out a rewritten one."""
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
             threads_on_host: dict[str, int], threads: int | None = None) -> dict:
    """A chunk's confusion matrix (kind "sweep") or its label PNGs written into `out` (kind
    "apply", with {id: sha1} of each PNG), with the images skipped as bad when `skip_bad`
    (BadImage otherwise). The native engine runs on `threads` OpenMP threads (None: _threads's
    share of the host); the result's "threads" is that count, None when the native engine is not
    used (not built, or engine "framework")."""
    import impls.native
    import impls.numpy

    started = time.perf_counter()
    confusion = np.zeros((num_classes, num_classes), np.int64)
    skipped, labels, done = [], {}, 0
    native = impls.native.available() and engine != "framework"
    used = (threads if threads is not None else _threads(threads_on_host)) if native else None
    with impls.native.threads(used) if native else contextlib.nullcontext():
        for image_id, files in zip(task.ids, task.files or ("",) * len(task.ids), strict=True):
            try:
                image, truth, unary = _load(dataset, image_id, num_classes, files)
            except BadImage as bad:
                if not skip_bad:
                    raise
                skipped.append([bad.image_id, str(bad.path), bad.problem])
                if task.kind == "apply":  # no label of another setting left behind for it
                    (pathlib.Path(out) / f"{image_id}.png").unlink(missing_ok=True)
                continue
            q = impls.numpy.dense_crf(unary[None], image[None], **dict(task.setting), engine=engine)
            prediction = np.argmax(q, axis=-1)
            if task.kind == "apply":
                labels[image_id] = _write_labels(pathlib.Path(out) / f"{image_id}.png", prediction[0])
            else:
                confusion += impls.numpy.confusion_matrix(prediction, truth[None], num_classes,
                                                          ignore_index=IGNORE_INDEX)
            done += 1
    return {"confusion": confusion.tolist(), "images": done, "skipped": skipped, "labels": labels,
            "seconds": time.perf_counter() - started, "threads": used}


def _write_labels(path: pathlib.Path, labels: np.ndarray) -> str:
    """Write a label PNG atomically; its sha1."""
    from impls.voc import write_label_png

    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    write_label_png(partial, labels.astype(np.uint8))
    digest = _sha1(partial)
    os.replace(partial, path)  # a reader never sees half a PNG
    return digest


def _sha1(path: pathlib.Path) -> str | None:
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _labels_present(record: dict, labels_dir: pathlib.Path) -> int:
    """How many of the label PNGs an --apply task wrote are in `labels_dir` as it wrote them."""
    return sum(_sha1(labels_dir / f"{image_id}.png") == digest for image_id, digest in record["labels"].items())


# Running on Dask ----------------------------------------------------------------------------

@dataclasses.dataclass
class SweepResult:
    """Per setting (its grid values, in grid order): the summed confusion matrix, images and
    seconds; `computed` tasks ran in this call, `reused` came from the store; `skipped` lists
    (id, file, problem) of bad images left out with skip_bad; `labels` counts the label PNGs
    of an --apply run in OUT/labels; `threads` holds the native threads each setting's tasks
    recorded (a task stored before they were recorded, or run without the native engine, adds
    none)."""

    grid: dict[str, list]
    confusion: dict[tuple, np.ndarray]
    images: dict[tuple, int]
    seconds: dict[tuple, float]
    computed: int
    reused: int
    skipped: list[tuple[str, str, str]]
    labels: int = 0
    threads: dict[tuple, set[int]] = dataclasses.field(default_factory=dict)

    def rows(self) -> list[dict]:
        import impls.numpy

        rows = []
        for values, confusion in self.confusion.items():
            per_class = impls.numpy.per_class_iou(confusion)
            rows.append({**dict(zip(self.grid, values, strict=True)),
                         "mean_iou": float(impls.numpy.mean_iou(confusion)),
                         "pixel_accuracy": float(impls.numpy.pixel_accuracy(confusion)),
                         **{f"iou_{c}": float(v) for c, v in enumerate(per_class)},
                         "images": self.images[values], "seconds": round(self.seconds[values], 3),
                         "threads": _threads_text(self.threads.get(values, set()))})
        return rows

    def best(self) -> dict:
        return max(self.rows(), key=lambda row: (np.nan_to_num(row["mean_iou"], nan=-1.0)))


def _threads_text(counts: set[int]) -> str:
    """results.csv's threads of a setting: "2" when its tasks agree, "1-4" (min-max) when they
    differ, "" when none recorded a count."""
    if not counts:
        return ""
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high}"


@contextlib.contextmanager
def _children_ignore_sigint():
    """SIGINT ignored while the LocalCluster spawns its worker processes, which inherit that: a
    terminal's Ctrl-C (sent to the whole process group) then interrupts this process only, which
    closes the cluster, instead of printing a KeyboardInterrupt traceback from every worker."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _client(workers: int | None, scheduler: str | None):
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=SCHEDULER_TIMEOUT), None
        except (OSError, TimeoutError, ValueError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise SweepError(f"--scheduler: cannot reach {scheduler} (expected a running Dask scheduler; "
                             f"{message})") from None
    count = workers or max(1, len(os.sched_getaffinity(0)))
    # The workers' own logs are silenced below CRITICAL: a task's error reaches this process as the
    # exception the client raises, and what remains is shutdown chatter (on a loaded machine a
    # Ctrl-C let a worker's heartbeat meet the closed scheduler: an ERROR with a traceback printed
    # beside the resume message, seen once in CI).
    with _children_ignore_sigint():
        cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL)
    return Client(cluster), cluster


def _threads_by_host(client) -> dict[str, int]:
    totals: dict[str, int] = {}
    for address, info in client.scheduler_info()["workers"].items():
        host = address.rsplit(":", 1)[0]
        totals[host] = totals.get(host, 0) + int(info.get("nthreads", 1))
    return totals


def run(dataset: VocDataset, grid: dict[str, list], out: str | pathlib.Path, *, num_classes: int | None = None,
        chunk_size: int = 4, engine: str = "auto", skip_bad: bool = False, apply: bool = False,
        client=None, workers: int | None = None, scheduler: str | None = None, threads: int | None = None,
        progress: bool = True, on_result: Callable[[int, int], None] | None = None) -> SweepResult:
    """Evaluate every setting of `grid` on `dataset` (or, with `apply`, write the labels of its one
    setting into OUT/labels), resuming from OUT's store. `client` is a distributed.Client to use;
    otherwise `scheduler` names a cluster, or a LocalCluster of `workers` processes is started.
    Each task runs the native engine on `threads` OpenMP threads (None: the host's cores divided
    by the Dask threads on it); results do not depend on it, so it is not in a task's key.
    `on_result(done, total)` is called after each stored task. Everything is checked here, in
    the client, before any cluster starts."""
    out = pathlib.Path(out).absolute()
    _checks.positive_int(chunk_size, op="sweep.run", name="chunk_size")
    if workers is not None:
        _checks.positive_int(workers, op="sweep.run", name="workers")
    if threads is not None:
        threads = _checks.positive_int(threads, op="sweep.run", name="threads")
    if apply and any(len(values) != 1 for values in grid.values()):
        raise SweepError(f"--apply takes one setting: give one value per argument, got {grid}")
    ids = dataset.ids()
    if not ids:
        raise SweepError(f"{dataset.split_file}: the split lists no image")
    num_classes = num_classes or _class_count(dataset, ids, skip_bad)
    check_grid(grid, num_classes)
    kind = "apply" if apply else "sweep"
    config = {"root": str(dataset.root.resolve()), "split": dataset.split, "scores": str(dataset.scores.resolve()),
              "logits": dataset.logits, "scores_layout": dataset.scores_layout, "num_classes": num_classes,
              "engine": engine, "chunk_size": chunk_size, "ignore_index": IGNORE_INDEX}
    store = TaskStore(out, config)
    tasks = plan(ids, grid, chunk_size, kind, file_stamps(dataset, ids))
    labels_dir = out / "labels"
    if apply:
        labels_dir.mkdir(exist_ok=True)
    missing = [task for task in tasks if not _reusable(task, store, labels_dir)]
    computed = 0
    if missing:
        own_client, cluster = (client, None) if client is not None else _client(workers, scheduler)
        try:
            computed = _compute(own_client, dataset, missing, store, num_classes, engine, skip_bad,
                                str(labels_dir) if apply else None, len(tasks), progress, on_result, threads)
        finally:
            if client is None:
                own_client.close()
                if cluster is not None:
                    cluster.close()
    result = _collect(grid, tasks, store, num_classes, computed, labels_dir if apply else None)
    _check_outcome(result, len(ids), labels_dir if apply else None)
    return result


def _class_count(dataset: VocDataset, ids: Sequence[str], skip_bad: bool) -> int:
    """The class count of the scores of the first image that reads (the first image, unless
    skip_bad)."""
    first_bad = None
    for image_id in ids:
        try:
            return int(dataset.load(image_id)[2].shape[-1])
        except BadImage as bad:
            if not skip_bad:
                raise SweepError(f"{bad}; {SKIP_BAD_HINT}") from None
            first_bad = first_bad or bad
    raise SweepError(f"every image of {dataset.split_file} is bad, nothing to evaluate "
                     f"({len(ids)} images; the first: {first_bad})")


def _reusable(task: Task, store: TaskStore, labels_dir: pathlib.Path) -> bool:
    """Stored, and for an --apply task, its label PNGs still in OUT/labels as it wrote them."""
    if task.key not in store:
        return False
    record = store.records[task.key]
    return task.kind != "apply" or ("labels" in record and _labels_present(record, labels_dir) == len(record["labels"]))


def _compute(client, dataset, missing, store, num_classes, engine, skip_bad, labels_dir, total, progress,
             on_result, threads=None) -> int:
    from distributed import as_completed

    threads_on_host = _threads_by_host(client)
    # Keys unique to this call: the scheduler may still hold an earlier call's result or error.
    run_id = uuid.uuid4().hex[:12]
    futures = {client.submit(run_task, dataset, task, num_classes, engine, skip_bad, labels_dir, threads_on_host,
                             threads, key=f"impls-sweep-{run_id}-{hashlib.sha1(task.key.encode()).hexdigest()}"): task
               for task in missing}
    bar = Progress(total, done=total - len(missing), enabled=progress)
    computed = 0
    try:
        for future in as_completed(futures):
            task = futures.pop(future)
            try:
                result = future.result()
            except BadImage as bad:
                raise SweepError(f"{bad}; {SKIP_BAD_HINT}") from None
            store.add(task.key, result)
            computed += 1
            bar.advance(result["images"])
            if on_result is not None:
                on_result(bar.done, total)
    finally:
        if futures:
            client.cancel(list(futures))
        bar.close()
    return computed


def _collect(grid, tasks, store, num_classes, computed, labels_dir) -> SweepResult:
    confusion, images, seconds, skipped, labels, threads = {}, {}, {}, {}, 0, {}
    for task in tasks:
        values = tuple(value for _, value in task.setting)
        record = store.records[task.key]
        confusion[values] = confusion.get(values, np.zeros((num_classes, num_classes), np.int64)) + np.array(
            record["confusion"], np.int64)
        images[values] = images.get(values, 0) + record["images"]
        seconds[values] = seconds.get(values, 0.0) + record["seconds"]
        used = threads.setdefault(values, set())
        if record.get("threads") is not None:  # absent from stores written before it was recorded
            used.add(record["threads"])
        for image_id, path, problem in record["skipped"]:
            skipped[image_id] = (image_id, path, problem)
        if labels_dir is not None:
            labels += _labels_present(record, labels_dir)
    return SweepResult(grid, confusion, images, seconds, computed, len(tasks) - computed, list(skipped.values()),
                       labels, threads)


def _check_outcome(result: SweepResult, count: int, labels_dir: pathlib.Path | None) -> None:
    """Every image skipped, or labels the workers wrote where this machine cannot see them: errors."""
    if result.skipped and not any(result.images.values()):
        image_id, path, problem = result.skipped[0]
        raise SweepError(f"every image of the split is bad, nothing to evaluate ({count} images skipped; "
                         f"the first: {path}: {problem})")
    written = sum(result.images.values())
    if labels_dir is not None and result.labels != written:
        raise SweepError(f"--apply: {labels_dir} holds {result.labels} of the {written} label files the workers "
                         f"wrote (expected all; do the workers share this folder with this machine?)")


class Progress:
    """A one-line progress bar with rate and ETA on stderr (a line per tenth when not a terminal).
    The rate and ETA count from the first task finished here, leaving cluster start-up out."""

    def __init__(self, total: int, *, done: int = 0, enabled: bool = True, stream=None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.done, self.enabled, self.clock = total, done, enabled, clock
        self.stream = stream or sys.stderr
        self.images, self._last_tenth = 0, -1
        self._first: tuple[float, int, int] | None = None  # (time, tasks, images) at the first result

    def advance(self, images: int) -> None:
        self.done += 1
        self.images += images
        now = self.clock()
        if self._first is None:
            self._first = (now, self.done, self.images)
        if not self.enabled:
            return
        started, first_done, first_images = self._first
        elapsed, fresh = now - started, self.done - first_done
        remaining = self.total - self.done
        rate = f"{(self.images - first_images) / elapsed:.2f}" if fresh and elapsed > 0 else "-"
        eta = _clock(elapsed / fresh * remaining) if fresh or not remaining else "-:--:--"
        filled = int(30 * self.done / self.total)
        line = (f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} tasks, "
                f"{rate} image-settings/s, ETA {eta}")
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
    """OUT/results.csv, and OUT/skipped.csv when images were skipped (an earlier run's removed)."""
    rows = result.rows()
    path = pathlib.Path(out) / "results.csv"
    with open(path, "w", newline="") as table:
        writer = csv.DictWriter(table, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    skipped = pathlib.Path(out) / "skipped.csv"
    if result.skipped:
        with open(skipped, "w", newline="") as table:
            writer = csv.writer(table)
            writer.writerow(["id", "file", "problem"])
            writer.writerows(result.skipped)
    else:
        skipped.unlink(missing_ok=True)
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

USAGE = "%(prog)s ROOT --split SPLIT --scores SCORES --grid ARG=V1,V2 [ARG=V1,V2 ...] --out OUT [options]"


def _grid_help() -> str:
    return "dense_crf arguments a grid can name (and their defaults):\n" + "\n".join(
        f"  {name} (default {default})" for name, default in crf_defaults().items())


def _parser() -> argparse.ArgumentParser:
    prog = "impls-sweep" if pathlib.Path(sys.argv[0]).name == "impls-sweep" else "python -m impls.sweep"
    parser = argparse.ArgumentParser(prog=prog, usage=USAGE, description=__doc__.split("\n\n")[0],
                                     epilog=_grid_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=pathlib.Path, help="dataset root in the VOC layout")
    parser.add_argument("--split", required=True, help="ImageSets/Segmentation/<split>.txt")
    parser.add_argument("--scores", required=True, type=pathlib.Path, help="folder of <id>.npy / <id>.npz scores")
    parser.add_argument("--grid", required=True, nargs="+", metavar="ARG=V1,V2",
                        help="dense_crf arguments to sweep (listed below)")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output folder (resumable store, tables)")
    parser.add_argument("--workers", type=_checks.positive_int_option,
                        help="LocalCluster worker processes (default: one per core)")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--logits", action="store_true", help="scores are logits (default: softmax probabilities)")
    parser.add_argument("--scores-layout", choices=SCORE_LAYOUTS, default="HWC")
    parser.add_argument("--num-classes", type=_checks.positive_int_option,
                        help="checked against every score file (default: the first readable one's)")
    parser.add_argument("--chunk-size", type=_checks.positive_int_option, default=4, help="images per task (default 4)")
    parser.add_argument("--threads", type=_checks.positive_int_option, metavar="N",
                        help="native engine threads per task (default: the host's cores divided by the Dask "
                             "threads on it); results do not depend on it, results.csv records it")
    parser.add_argument("--engine", choices=("auto", "native", "framework"), default="auto",
                        help="impls.numpy.dense_crf's engine (default auto: native when built)")
    parser.add_argument("--skip-bad", action="store_true", help="leave out images with bad files, and list them")
    parser.add_argument("--heatmap", metavar="ARG,ARG", help="the two arguments of the heatmap (default: the first "
                                                               "two with several values)")
    parser.add_argument("--apply", action="store_true", help="write OUT/labels/<id>.png with the one given setting")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


class _CancelRaceFilter(logging.Filter):
    """Drops one log record: on Ctrl-C, distributed's sync() (2026.8) schedules a `cancel` that
    reads a future its coroutine may not have set yet, and tornado logs the NameError with a
    traceback. The interrupt itself is handled (the resume message), so that record is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, NameError) and "'future'" in str(error))


_CANCEL_RACE_FILTER = _CancelRaceFilter()  # one instance: addFilter ignores it once added


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.getLogger("tornado.application").addFilter(_CANCEL_RACE_FILTER)
    try:
        grid = parse_grid(args.grid)
        axes = heatmap_axes(grid, args.heatmap)
        dataset = VocDataset(args.root, args.split, args.scores, logits=args.logits, scores_layout=args.scores_layout)
        result = run(dataset, grid, args.out, num_classes=args.num_classes, chunk_size=args.chunk_size,
                     engine=args.engine, skip_bad=args.skip_bad, apply=args.apply, workers=args.workers,
                     scheduler=args.scheduler, threads=args.threads, progress=not args.quiet)
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
        print(f"labels of {result.labels} images in {args.out / 'labels'}")
        return 0
    print(f"results: {write_results(result, args.out)}")
    best = result.best()
    print("best: " + ", ".join(f"{name}={best[name]}" for name in grid) +
          f"  mean IoU {best['mean_iou']:.4f}, pixel accuracy {best['pixel_accuracy']:.4f}")
    heatmap = args.out / "heatmap.png"
    if axes:
        print(f"heatmap: {draw_heatmap(result, axes, heatmap)}")
    else:
        heatmap.unlink(missing_ok=True)  # an earlier run's, of another grid
    return 0


if __name__ == "__main__":
    # Run the real module, not this copy of it named __main__: cloudpickle ships __main__'s
    # classes (Task) by value, and the module's own by reference, as the workers import them.
    from impls.sweep import main as _main

    raise SystemExit(_main())
