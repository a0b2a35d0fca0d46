"""Fail when the native dense CRF is not fast enough against pydensecrf, measured in one run.

    python bench/gate.py benchmark.json [--case CASE] [--backend native1|native] [--min-speedup X]

Ratios of medians from the same run cancel most of a shared machine's noise, so CI gates on
them rather than on absolute times. The default is the native-lattice issue's per-core target:
native on one thread ("native1") at least 2x pydensecrf (single-threaded) on the 500x375,
21-label, 10-iteration case; `--backend native --min-speedup 4` is its target on two cores.
Exit status: 0 when met, 1 when missed, 2 when the JSON lacks one of the two measurements (a
gate that cannot measure must not pass).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

if not __package__:  # run as a script: the checkout (bench.variants) goes behind the installed packages
    sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))

from bench.variants import NATIVE1, Variant  # noqa: E402

PER_CORE_TARGET_SPEEDUP = 2.0
# Names of the JSON's "backend" field: native on one thread ("native1") and on every core ("native").
TARGET_BACKEND = NATIVE1.name
BACKEND_CHOICES = (NATIVE1.name, Variant("native").name)
TARGET_CASE = "astronaut-500x375-21labels-10it"
REPRODUCE = "tox -e ratio-gate"


def measurement(results: dict, case: str, backend: str, device: str = "cpu") -> tuple[float, int | str] | None:
    """(median ms, cores) of one dense_crf benchmark, or None."""
    for bench in results.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if (info.get("op"), info.get("case"), info.get("backend"), info.get("device")) == ("dense_crf", case,
                                                                                          backend, device):
            return bench["stats"]["median"] * 1e3, info.get("cores", "?")
    return None


def check(results: dict, *, case: str = TARGET_CASE, backend: str = TARGET_BACKEND,
          min_speedup: float = PER_CORE_TARGET_SPEEDUP) -> tuple[int, str]:
    """(exit status, message) of the gate on a pytest-benchmark JSON document."""
    native, pydensecrf = measurement(results, case, backend), measurement(results, case, "pydensecrf")
    missing = [name for name, value in ((backend, native), ("pydensecrf", pydensecrf)) if value is None]
    if missing:
        return 2, (f"ratio gate: no dense_crf measurement of {' and '.join(missing)} for case {case!r} "
                   f"in the JSON; cannot check (reproduce: {REPRODUCE})")
    (native, cores), (pydensecrf, _) = native, pydensecrf
    speedup = pydensecrf / native
    verdict = "met" if speedup >= min_speedup else "MISSED"
    message = (f"ratio gate {verdict}: {backend} vs pydensecrf on {case}: {speedup:.2f}x, threshold "
               f"{min_speedup:g}x (medians from one run: {backend} {native:.1f} ms on {cores} core(s), pydensecrf "
               f"{pydensecrf:.1f} ms; reproduce: {REPRODUCE})")
    return (0 if speedup >= min_speedup else 1), message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="pytest-benchmark JSON with native and pydensecrf dense_crf results")
    parser.add_argument("--case", default=TARGET_CASE, help=f"benchmark case (default {TARGET_CASE})")
    parser.add_argument("--backend", default=TARGET_BACKEND, choices=BACKEND_CHOICES,
                        help="native1: native on one thread (per core, the default); native: on every core")
    parser.add_argument("--min-speedup", type=float, default=PER_CORE_TARGET_SPEEDUP,
                        help=f"required pydensecrf/native median ratio (default {PER_CORE_TARGET_SPEEDUP:g})")
    args = parser.parse_args(argv)
    with open(args.json) as handle:
        status, message = check(json.load(handle), case=args.case, backend=args.backend,
                                min_speedup=args.min_speedup)
    print(message, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
