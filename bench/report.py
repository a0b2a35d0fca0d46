"""Render a pytest-benchmark JSON file as a Markdown report.

    python bench/report.py bench/results/benchmark.json --output bench/results/report.md

One table per benchmark group: median and interquartile range per backend, and the
speedups against the NumPy reference and against pydensecrf, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections import defaultdict

BASELINES = ("numpy", "pydensecrf")


def load(path) -> dict:
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
            "backend": info.get("backend", bench["name"]),
            "device": info.get("device", "cpu"),
            "median_ms": stats["median"] * 1e3,
            "iqr_ms": stats["iqr"] * 1e3,
            "rounds": stats["rounds"],
        })
    return dict(groups)


def _speedups(rows, baseline):
    reference = next((r["median_ms"] for r in rows if r["backend"] == baseline and r["device"] == "cpu"), None)
    return [reference / r["median_ms"] if reference else None for r in rows]


def _ratio(speedup):
    return "n/a" if speedup is None else f"{speedup:.2f}x"


def render(results: dict) -> str:
    machine = results.get("machine_info", {})
    extra = machine.get("impls", {})
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor") or "unknown CPU"
    libraries = ", ".join(f"{k} {v}" for k, v in extra.get("libraries", {}).items() if v)
    lines = [
        "# Benchmark report",
        "",
        f"- Date: {results.get('datetime', 'unknown')}",
        f"- Machine: {machine.get('node', 'unknown')}, {cpu}, {machine.get('cpu', {}).get('count', '?')} cores; "
        f"GPU: {extra.get('gpu') or 'none'}",
        f"- Python {machine.get('python_version', '?')}; {libraries}",
        "",
        "Times are per call, in milliseconds: median and interquartile range (IQR) over the rounds. "
        "A speedup is the baseline's median over the row's median, both from this run; n/a where the "
        "baseline did not run in that case.",
    ]
    for group, rows in rows_by_group(results).items():
        lines += ["", f"## {group}", "",
                  "| backend | device | median (ms) | IQR (ms) | rounds | speedup vs numpy | speedup vs pydensecrf |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        speedups = zip(*(_speedups(rows, baseline) for baseline in BASELINES), strict=True)
        for row, (vs_numpy, vs_pydensecrf) in zip(rows, speedups, strict=True):
            lines.append(f"| {row['backend']} | {row['device']} | {row['median_ms']:.3f} | {row['iqr_ms']:.3f} | "
                         f"{row['rounds']} | {_ratio(vs_numpy)} | {_ratio(vs_pydensecrf)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=pathlib.Path, help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--output", type=pathlib.Path, help="Markdown file to write (default: print)")
    args = parser.parse_args(argv)
    report = render(load(args.json))
    if args.output is None:
        sys.stdout.write(report)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
        print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
