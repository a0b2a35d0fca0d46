"""Render a pytest-benchmark JSON file as a Markdown report with figures.

    python bench/report.py bench/results/benchmark.json --output bench/results/report.md

The report holds, all from the one run in the JSON: the machine; the fastest dense CRF of
each case; native against pydensecrf on every core and per core (native on one thread);
native's time per pixel-label across sizes (linear scaling); native on every core and on one
beside pydensecrf with busy processes on the same cores (a table and a plot of time against
load); Mask R-CNN's detect() per implementation against matterport's, with its per-stage
breakdown (a table and stacked bars); the authors' FCN-8s from its Caffe files through
impls.caffe.Net, OpenCV's dnn, torch and Keras, with the layers where each spends its time; the
cost of the dense CRF's width gradients against its forward pass; which backends were absent
and why, and which cases were skipped and why; one table per benchmark group (median and
interquartile range per backend, speedups against the NumPy oracle and pydensecrf); a log-log
plot of dense-CRF time against pixels per backend; a bar chart of speedups against
pydensecrf; and one image with its unary argmax and the CRF result side by side (the example
runs a CRF, so it needs impls installed). Figures are PNG files written next to the report
(matplotlib, headless).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections import defaultdict
from collections.abc import Sequence

if not __package__:  # run as a script: the checkout (bench.variants, tests.inputs) goes behind the installed packages
    sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))

from bench.variants import variant_id  # noqa: E402

BASELINES = ("numpy", "pydensecrf")
FIGURE_TIME = "dense_crf_time_vs_pixels.png"
FIGURE_SPEEDUP = "dense_crf_speedup.png"
FIGURE_EXAMPLE = "dense_crf_example.png"
FIGURE_LOAD = "dense_crf_under_load.png"
FIGURE_MASKRCNN = "maskrcnn_detect_stages.png"
# The native engine's promises on a shared machine (issue: more threads never slower, no collapse).
MAX_THREADS_RATIO = 1.1
MIN_LOADED_SPEEDUP = 3.0
WIDTH_GRADIENT_OP = "crf_width_gradient"
CAFFE_OP = "caffe_fcn"
CAFFE_LAYERS_SHOWN = 8


def load(path: str | pathlib.Path) -> dict:
    with open(path) as handle:
        results = json.load(handle)
    if "benchmarks" not in results:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' key)")
    return results


def rows_by_group(results: dict) -> dict[str, list[dict]]:
    """{group: [row, ...]} with times in milliseconds, in the order of the file."""
    groups = defaultdict(list)
    for bench in results["benchmarks"]:
        stats, info = bench["stats"], bench.get("extra_info", {})
        groups[bench.get("group") or bench["name"]].append({
            **info,
            "backend": info.get("backend", bench["name"]),
            "device": info.get("device", "cpu"),
            "median_ms": stats["median"] * 1e3,
            "iqr_ms": stats["iqr"] * 1e3,
            "rounds": stats["rounds"],
        })
    return dict(groups)


def speedup(rows: list[dict], row: dict, baseline: str) -> float | None:
    """The CPU `baseline`'s median over `row`'s, or None where the baseline did not run in these rows."""
    baseline_ms = next((r["median_ms"] for r in rows if r["backend"] == baseline and r["device"] == "cpu"), None)
    return baseline_ms / row["median_ms"] if baseline_ms else None


def _variant(row: dict) -> str:
    """The row's implementation as the benchmarks name it ("native1-cpu")."""
    return variant_id(row["backend"], row["device"])


def _ratio(value):
    return "n/a" if value is None else f"{value:.2f}x"


def _header(results):
    machine = results.get("machine_info", {})
    extra = machine.get("impls", {})
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor") or "unknown CPU"
    libraries = ", ".join(f"{k} {v}" for k, v in extra.get("libraries", {}).items() if v)
    return [
        "# Benchmark report",
        "",
        f"- Date: {results.get('datetime', 'unknown')}",
        f"- Machine: {machine.get('node', 'unknown')}, {cpu}, {machine.get('cpu', {}).get('count', '?')} cores; "
        f"GPU: {extra.get('gpu') or 'none'}",
        f"- Python {machine.get('python_version', '?')}; {libraries}",
    ]


def _absent_and_skipped(results):
    extra = results.get("impls", {})
    lines = ["", "## Absent backends and skipped cases", ""]
    absent = extra.get("absent_backends", {})
    lines += [f"- backend **{name}** absent: {why}" for name, why in absent.items()] or ["- every backend was present"]
    skipped = extra.get("skipped", [])
    if skipped:
        lines += ["", f"{len(skipped)} case(s) skipped (the budget per call was {extra.get('budget_s', '?')} s):", ""]
        lines += [f"- `{entry['test'].rsplit('::', 1)[-1]}`: {entry['reason']}" for entry in skipped]
    return lines


def _tables(groups):
    # These ops have their own sections, with the columns that tell their rows apart.
    groups = {group: rows for group, rows in groups.items()
              if not any(r.get("op") in ("load", WIDTH_GRADIENT_OP) for r in rows)}
    lines = ["", "Times are per call, in milliseconds: median and interquartile range (IQR) over the rounds. "
             "A speedup is the baseline's median over the row's median, both from this run; n/a where the "
             "baseline did not run in that case."]
    for group, rows in groups.items():
        lines += ["", f"## {group}", "",
                  "| backend | device | median (ms) | IQR (ms) | rounds | speedup vs numpy | speedup vs pydensecrf |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for row in rows:
            vs_numpy, vs_pydensecrf = (speedup(rows, row, baseline) for baseline in BASELINES)
            lines.append(f"| {row['backend']} | {row['device']} | {row['median_ms']:.3f} | {row['iqr_ms']:.3f} | "
                         f"{row['rounds']} | {_ratio(vs_numpy)} | {_ratio(vs_pydensecrf)} |")
    return lines


def _fastest(groups):
    """Which dense CRF to use: the fastest backend of each dense-CRF case."""
    lines = ["", "## Fastest dense CRF per case", "",
             "| case | fastest | median (ms) | speedup vs pydensecrf | runner-up |",
             "| --- | --- | ---: | ---: | --- |"]
    for group, rows in groups.items():
        if not any(r.get("op") == "dense_crf" for r in rows):
            continue
        ranked = sorted(rows, key=lambda r: r["median_ms"])
        best = ranked[0]
        runner_up = f"{_variant(ranked[1])} ({ranked[1]['median_ms']:.1f} ms)" if len(ranked) > 1 else "none"
        lines.append(f"| {group.removeprefix('dense_crf ')} | {_variant(best)} | "
                     f"{best['median_ms']:.1f} | {_ratio(speedup(rows, best, 'pydensecrf'))} | {runner_up} |")
    return lines if len(lines) > 5 else []


def _per_core(groups):
    """Native against pydensecrf on every core and on one (pydensecrf runs on one), per case."""
    lines = ["", "## Native against pydensecrf, on every core and per core", "",
             "| case | native (all cores) | native (1 thread) | speedup, all cores | speedup per core |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for group, rows in groups.items():
        native = next((r for r in rows if r["backend"] == "native" and r["device"] == "cpu"), None)
        single = next((r for r in rows if r["backend"] == "native1"), None)
        if not any(r.get("op") == "dense_crf" for r in rows) or not (native or single):
            continue
        cells = [f"{r['median_ms']:.1f} ms on {r.get('cores', '?')} core{'' if r.get('cores') == 1 else 's'}"
                 if r else "n/a" for r in (native, single)]
        ratios = [_ratio(speedup(rows, r, "pydensecrf")) if r else "n/a" for r in (native, single)]
        lines.append(f"| {group.removeprefix('dense_crf ')} | {cells[0]} | {cells[1]} | {ratios[0]} | {ratios[1]} |")
    return lines if len(lines) > 5 else []


def scaling(groups: dict[str, list[dict]], backend: str) -> dict[int, dict[int, float]]:
    """{labels: {pixels: ns per pixel x label x iteration}} of `backend` over the size sweep."""
    table = defaultdict(dict)
    for row in _crf_rows(groups):
        if row["backend"] == backend and row["device"] == "cpu" and row.get("image") == "astronaut" \
                and row.get("iterations") == 5:
            table[row["labels"]][row["pixels"]] = row["median_ms"] * 1e6 / (row["pixels"] * row["labels"] * 5)
    return dict(table)


def _scaling(groups):
    """Time per pixel-label of native across the sweep: linear scaling keeps it flat."""
    heading = ["", "## Native: time per pixel x label x iteration across sizes", "",
               "Flat means linear in the number of pixels; the last column is the largest image's figure over "
               "500x375's.", ""]
    lines = []
    for backend in ("native", "native1"):
        table = scaling(groups, backend)
        if not table:
            continue
        sizes = sorted({pixels for per_size in table.values() for pixels in per_size})
        lines += [f"**{backend}** (ns):", "", "| labels | " + " | ".join(f"{p:,} px" for p in sizes) +
                  " | largest / 500x375 |", "| --- | " + " | ".join("---:" for _ in sizes) + " | ---: |"]
        for labels, per_size in sorted(table.items()):
            cells = [f"{per_size[p]:.2f}" if p in per_size else "n/a" for p in sizes]
            middle, largest = per_size.get(500 * 375), per_size.get(max(per_size))
            ratio = _ratio(largest / middle) if middle and largest else "n/a"
            lines.append(f"| {labels} | " + " | ".join(cells) + f" | {ratio} |")
        lines.append("")
    return heading + lines if lines else []


def _sweep(groups):
    """impls.sweep's throughput: images (image x setting CRFs) per second by worker count."""
    rows = [row for rows in groups.values() for row in rows if row.get("op") == "sweep"]
    if not rows:
        return []
    lines = ["", "## Dense CRF sweep on Dask: images per second", "",
             "| workers | images per call | median (s) | images / s |", "| ---: | ---: | ---: | ---: |"]
    for row in sorted(rows, key=lambda r: r["workers"]):
        seconds = row["median_ms"] / 1e3
        lines.append(f"| {row['workers']} | {row['images']} | {seconds:.2f} | {row['images'] / seconds:.1f} |")
    return lines


def load_rows(groups: dict[str, list[dict]]) -> list[dict]:
    """The dense CRF under load (bench/test_bench_load.py): one row per case and load, medians in ms."""
    rows = [row for rows in groups.values() for row in rows if row.get("op") == "load"]
    return [{**row, **{f"{name}_ms": seconds * 1e3 for name, seconds in row["medians"].items()}} for row in rows]


def _load(groups):
    """Native on every core and on one beside pydensecrf, quiet and with busy processes."""
    rows = load_rows(groups)
    if not rows:
        return []
    lines = ["", "## The native dense CRF on a shared machine", "",
             "Medians of alternating rounds under the same load (K busy processes on the same cores). "
             f"Promised: every core at most {MAX_THREADS_RATIO}x the one-thread time, and at least "
             f"{MIN_LOADED_SPEEDUP:.0f}x pydensecrf under the same load.", "",
             "| case | load | busy processes | native (ms) | native1 (ms) | pydensecrf (ms) | native / native1 | "
             "pydensecrf / native | holds |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        threads_ratio = row["native_ms"] / row["native1_ms"]
        versus = row["pydensecrf_ms"] / row["native_ms"]
        holds = "yes" if threads_ratio <= MAX_THREADS_RATIO and versus >= MIN_LOADED_SPEEDUP else "**no**"
        lines.append(f"| {row['case']} | {row['load']} | {row['busy_processes']} | {row['native_ms']:.1f} | "
                     f"{row['native1_ms']:.1f} | {row['pydensecrf_ms']:.1f} | {threads_ratio:.2f} | {versus:.2f}x | "
                     f"{holds} |")
    return lines


def maskrcnn_rows(groups: dict[str, list[dict]]) -> list[dict]:
    """The rows of Mask R-CNN's detect() (bench/test_bench_maskrcnn.py), in the file's order."""
    return [row for rows in groups.values() for row in rows if row.get("op") == "maskrcnn_detect"]


def _maskrcnn(groups):
    """detect() of each implementation against matterport's, and where each spends its time."""
    rows = maskrcnn_rows(groups)
    if not rows:
        return []
    stages = list(dict.fromkeys(stage for row in rows for stage in row.get("stage_s", {})))
    lines = ["", "## Mask R-CNN detect() against matterport", "",
             "One photograph (skimage's astronaut) at "
             f"{rows[0].get('size', '?')} px, ResNet-101, 81 classes, seeded weights. The speedup is matterport's "
             "median over the row's, both from this run; the stages are medians of cumulative "
             "`stage_outputs(until=...)` calls, differenced (a small stage may come out slightly negative: noise).",
             "", "| implementation | device | detections | median (s) | speedup vs matterport | " +
             " | ".join(f"{stage} (s)" for stage in stages) + " |",
             "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in stages) + " |"]
    for row in rows:
        cells = [f"{row['stage_s'][stage]:.3f}" if stage in row.get("stage_s", {}) else "n/a" for stage in stages]
        lines.append(f"| {row['backend']} | {row['device']} | {row.get('detections', '?')} | "
                     f"{row['median_ms'] / 1e3:.2f} | {_ratio(speedup(rows, row, 'matterport'))} | " +
                     " | ".join(cells) + " |")
    return lines


def caffe_rows(groups: dict[str, list[dict]]) -> list[dict]:
    """The rows of the authors' FCN-8s from its Caffe files (bench/test_bench_caffe.py), in order."""
    return [row for rows in groups.values() for row in rows if row.get("op") == CAFFE_OP]


def _caffe(groups):
    """Each way of running the authors' Caffe FCN-8s against OpenCV's dnn, and where the time goes."""
    rows = caffe_rows(groups)
    if not rows:
        return []
    lines = ["", "## The authors' FCN-8s from its Caffe files, against OpenCV's dnn", "",
             f"voc-fcn8s/deploy.prototxt with seeded weights in the layout of fcn8s-heavy-pascal.caffemodel, one "
             f"{rows[0].get('case', '?')} image, {rows[0].get('threads', '?')} thread(s). impls.caffe is "
             "impls.caffe.Net (pycaffe's interface on torch); torch and tf are the file loaded into impls.torch.FCN "
             "and impls.tf.FCN. Each was checked against the row named before it was timed; the speedup is "
             "OpenCV's median over the row's, from this run.", "",
             "| implementation | median (s) | IQR (s) | rounds | speedup vs OpenCV | checked against | max error |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for row in rows:
        lines.append(f"| {row['backend']} | {row['median_ms'] / 1e3:.2f} | {row['iqr_ms'] / 1e3:.2f} | "
                     f"{row['rounds']} | {_ratio(speedup(rows, row, 'opencv'))} | {row.get('checked_against', '?')} | "
                     f"{row.get('max_error', float('nan')):.1e} |")
    breakdowns = [row for row in rows if row.get("stage_s")]
    if breakdowns:
        top = sorted({layer for row in breakdowns for layer in row["stage_s"]},
                     key=lambda layer: -max(row["stage_s"].get(layer, 0) for row in breakdowns))[:CAFFE_LAYERS_SHOWN]
        lines += ["", "Where the time goes, one call each (seconds per layer; the slowest layers of either, then the "
                  "rest):", "", "| layer | " + " | ".join(row["backend"] for row in breakdowns) + " |",
                  "| --- | " + " | ".join("---:" for _ in breakdowns) + " |"]
        for layer in top:
            cells = [f"{row['stage_s'][layer]:.3f}" if layer in row["stage_s"] else "n/a" for row in breakdowns]
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        rest = [sum(v for k, v in row["stage_s"].items() if k not in top) for row in breakdowns]
        lines.append("| the other layers | " + " | ".join(f"{value:.3f}" for value in rest) + " |")
    return lines


def width_gradient_rows(groups: dict[str, list[dict]]) -> list[dict]:
    """The rows of bench/test_bench_crf_widths.py, each with "ratio": its median over the forward's
    of the same case and run (None where the forward did not run)."""
    rows = [row for rows in groups.values() for row in rows if row.get("op") == WIDTH_GRADIENT_OP]
    forward_ms = {row["case"]: row["median_ms"] for row in rows if row["variant"] == "forward"}
    return [{**row, "ratio": row["median_ms"] / forward_ms[row["case"]] if row["case"] in forward_ms else None}
            for row in rows]


def _width_gradients(groups):
    """What learning the kernel widths costs: forward + backward with and without them, against the forward."""
    rows = width_gradient_rows(groups)
    if not rows:
        return []
    lines = ["", "## Dense CRF width gradients: cost relative to the forward pass", "",
             "torch's dense_crf in float32. forward: the native mean field with number widths; backward-values: "
             "forward + backward of a scalar loss, the unary requiring grad (the native lattice under autograd); "
             "backward-widths: the same with the three widths as tensors requiring grad. The ratio is the row's "
             "median over the forward's, both from this run.", "",
             "| case | variant | implementation | median (ms) | IQR (ms) | rounds | ratio to forward |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row['case']} | {row['variant']} | {_variant(row)} | {row['median_ms']:.1f} | "
                     f"{row['iqr_ms']:.1f} | {row['rounds']} | {_ratio(row['ratio'])} |")
    return lines


def render(results: dict, figures: Sequence[str] = ()) -> str:
    """The Markdown report; `figures` are the file names of figures already written next to it."""
    groups = rows_by_group(results)
    lines = _header(results) + _fastest(groups) + _per_core(groups) + _scaling(groups) + _load(groups) + \
        _sweep(groups) + _maskrcnn(groups) + _caffe(groups) + _width_gradients(groups) + _absent_and_skipped(results)
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name.removesuffix('.png')}]({name})" for name in figures]
    return "\n".join(lines + _tables(groups)) + "\n"


# Figures -------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: pathlib.Path) -> bool:
    """Lay out, write and close a figure; True (the figure was made)."""
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _crf_rows(groups):
    return [row for rows in groups.values() for row in rows if row.get("op") == "dense_crf" and "pixels" in row]


def plot_time_vs_pixels(groups: dict[str, list[dict]], path: pathlib.Path) -> bool:
    """Log-log time against pixels per backend, one panel per label count, for the size sweep."""
    rows = [r for r in _crf_rows(groups) if r.get("iterations") == 5 and r.get("image") == "astronaut"]
    if not rows:
        return False
    plt = _pyplot()
    label_counts = sorted({r["labels"] for r in rows})
    figure, axes = plt.subplots(1, len(label_counts), figsize=(5 * len(label_counts), 4), squeeze=False)
    for axis, labels in zip(axes[0], label_counts, strict=True):
        series = defaultdict(list)
        for r in rows:
            if r["labels"] == labels:
                series[_variant(r)].append((r["pixels"], r["median_ms"]))
        for name, points in sorted(series.items()):
            pixels, times = zip(*sorted(points), strict=True)
            axis.loglog(pixels, times, marker="o", label=name)
        axis.set(title=f"dense CRF, {labels} labels, 5 iterations", xlabel="pixels", ylabel="median time (ms)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    return _save(plt, figure, path)


def plot_speedups(groups: dict[str, list[dict]], path: pathlib.Path) -> bool:
    """Bars of each backend's speedup against pydensecrf, per dense-CRF case where pydensecrf ran."""
    cases = {group: rows for group, rows in groups.items()
             if any(r.get("op") == "dense_crf" for r in rows) and any(r["backend"] == "pydensecrf" for r in rows)}
    if not cases:
        return False
    plt = _pyplot()
    backends = sorted({_variant(r) for rows in cases.values() for r in rows
                       if r["backend"] != "pydensecrf"})
    figure, axis = plt.subplots(figsize=(max(8, 0.6 * len(cases) * len(backends) / 2), 4.5))
    width = 0.8 / max(len(backends), 1)
    for index, name in enumerate(backends):
        heights = []
        for rows in cases.values():
            row = next((r for r in rows if _variant(r) == name), None)
            heights.append(speedup(rows, row, "pydensecrf") if row else 0.0)
        axis.bar([i + index * width for i in range(len(cases))], heights, width, label=name)
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_yscale("log")
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
    axis.set_xticklabels([group.removeprefix("dense_crf ") for group in cases], rotation=60, ha="right",
                         fontsize="small")
    axis.set(ylabel="speedup vs pydensecrf (log)", title="dense CRF: speedup against pydensecrf, same run")
    axis.legend(fontsize="small")
    return _save(plt, figure, path)


def plot_time_vs_load(groups: dict[str, list[dict]], path: pathlib.Path) -> bool:
    """Time against busy processes per implementation, one panel per case."""
    rows = load_rows(groups)
    if not rows:
        return False
    plt = _pyplot()
    cases = list(dict.fromkeys(row["case"] for row in rows))
    figure, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 4), squeeze=False)
    for axis, case in zip(axes[0], cases, strict=True):
        points = sorted((row for row in rows if row["case"] == case), key=lambda row: row["busy_processes"])
        busy = [row["busy_processes"] for row in points]
        for name, label in (("native", f"native ({points[0]['threads']} threads)"), ("native1", "native, 1 thread"),
                            ("pydensecrf", "pydensecrf")):
            axis.plot(busy, [row[f"{name}_ms"] for row in points], marker="o", label=label)
        axis.set_yscale("log")
        axis.set_xticks(busy)
        axis.set(title=f"dense CRF {case}, on {points[0]['cores']} cores", xlabel="busy processes on the same cores",
                 ylabel="median time (ms, log)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    return _save(plt, figure, path)


def plot_maskrcnn_stages(groups: dict[str, list[dict]], path: pathlib.Path) -> bool:
    """detect()'s time per implementation as stacked bars, one segment per stage."""
    rows = [row for row in maskrcnn_rows(groups) if row.get("stage_s")]
    if not rows:
        return False
    plt = _pyplot()
    stages = list(dict.fromkeys(stage for row in rows for stage in row["stage_s"]))
    figure, axis = plt.subplots(figsize=(9, 1.2 + 0.6 * len(rows)))
    labels = [_variant(row) for row in rows]
    left = [0.0] * len(rows)
    for stage in stages:
        widths = [max(row["stage_s"].get(stage, 0.0), 0.0) for row in rows]
        axis.barh(labels, widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    axis.invert_yaxis()
    axis.set(xlabel="seconds per detect() (stages: cumulative medians, differenced)",
             title=f"Mask R-CNN detect() at {rows[0].get('size', '?')} px, ResNet-101, 81 classes")
    axis.legend(fontsize="small", ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    axis.grid(True, axis="x", alpha=0.3)
    return _save(plt, figure, path)


def plot_example(path: pathlib.Path, *, size: tuple[int, int] = (375, 500), labels: int = 21,
                 iterations: int = 10) -> bool:
    """The benchmark's headline image, its unary argmax and the CRF result, side by side."""
    import numpy as np

    import impls.numpy
    from tests.inputs import crf_image, smooth_unary

    image = np.ascontiguousarray(crf_image("astronaut")[: size[0], : size[1]])
    unary = smooth_unary(*image.shape[:2], labels, seed=1)
    q = impls.numpy.dense_crf(unary[None], image[None], iterations=iterations, engine="auto")[0]  # an illustration
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [(image, "image"), (unary.argmin(-1), "unary argmax (before the CRF)"),
              (q.argmax(-1), f"dense CRF, {iterations} iterations")]
    for axis, (picture, title) in zip(axes, panels, strict=True):
        axis.imshow(picture, cmap=None if picture.ndim == 3 else "tab20", interpolation="nearest",
                    vmin=None if picture.ndim == 3 else 0, vmax=None if picture.ndim == 3 else labels - 1)
        axis.set_title(title)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def write_report(results: dict, output: pathlib.Path, *, example: bool = True) -> list[str]:
    """Writes the figures and the report to `output`'s folder; returns the figure names."""
    output.parent.mkdir(parents=True, exist_ok=True)
    groups = rows_by_group(results)
    figures = [name for name, made in [(FIGURE_TIME, plot_time_vs_pixels(groups, output.parent / FIGURE_TIME)),
                                       (FIGURE_SPEEDUP, plot_speedups(groups, output.parent / FIGURE_SPEEDUP)),
                                       (FIGURE_LOAD, plot_time_vs_load(groups, output.parent / FIGURE_LOAD)),
                                       (FIGURE_MASKRCNN, plot_maskrcnn_stages(groups, output.parent / FIGURE_MASKRCNN))]
               if made]
    if example and plot_example(output.parent / FIGURE_EXAMPLE):
        figures.append(FIGURE_EXAMPLE)
    output.write_text(render(results, figures))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=pathlib.Path, help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--output", type=pathlib.Path,
                        help="Markdown file to write, figures beside it (default: print the tables only)")
    parser.add_argument("--no-example", action="store_true", help="leave out the example picture (runs a CRF)")
    args = parser.parse_args(argv)
    results = load(args.json)
    if args.output is None:
        sys.stdout.write(render(results))
        return 0
    figures = write_report(results, args.output, example=not args.no_example)
    print(f"report written to {args.output} with {len(figures)} figure(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
