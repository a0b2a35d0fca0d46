"""The native dense CRF on a shared machine: on every core and on one thread beside pydensecrf,
quiet and with K busy processes on the same cores (bench/load.py; K = 0, the cores, twice the
cores), at 500x375 and 160x120 (21 labels, 10 iterations, pydensecrf's parameters).

The three are timed alternately under one load, round after round, so that they share what the
machine does meanwhile; the medians go to the report as a table (with the two ratios the
native engine promises: more threads never slower than one, and several times pydensecrf) and a
plot of time against load. pytest-benchmark's own entry of each test is the native call on every
core, timed once more after the alternating rounds.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from bench.load import busy_processes, cores
from bench.test_bench_crf import crf_inputs, pydensecrf_labels, pydensecrf_q, runner
from bench.variants import Variant

CASES = {"500x375": ((375, 500), 7), "160x120": ((120, 160), 21)}  # (height, width), alternating rounds
LABELS, ITERATIONS = 21, 10
LOADS = {"quiet": 0, "cores": cores(), "2x cores": 2 * cores()}
MIN_LABEL_AGREEMENT = 0.999


def _alternating_medians(calls: dict, rounds: int) -> dict[str, float]:
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


@pytest.mark.parametrize("load", LOADS)
@pytest.mark.parametrize("case", CASES)
def test_dense_crf_under_load(benchmark, case, load):
    pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (pydensecrf2) is the peer timed beside native")
    from impls import native

    if not native.available():
        pytest.skip("impls._native is not built")
    size, rounds = CASES[case]
    image, unary = crf_inputs("astronaut", size, LABELS)
    all_cores, one = Variant("native"), Variant("native", threads=1)
    calls = {"native": runner(all_cores, image, unary, ITERATIONS), "native1": runner(one, image, unary, ITERATIONS),
             "pydensecrf": lambda: pydensecrf_q(image, unary, ITERATIONS)}
    expected = pydensecrf_labels("astronaut", size, LABELS, ITERATIONS)
    for name in ("native", "native1"):
        agreement = float(np.mean(calls[name]().argmax(-1) == expected))
        assert agreement >= MIN_LABEL_AGREEMENT, f"{name}: {agreement:.4%} of labels agree with pydensecrf"
    with busy_processes(LOADS[load]):
        medians = _alternating_medians(calls, rounds)
        benchmark.group = f"dense_crf under load {case} {LABELS}labels {ITERATIONS}it"
        benchmark.extra_info.update(op="load", backend="native", device="cpu", case=case, load=load,
                                    busy_processes=LOADS[load], cores=cores(), threads=native.thread_count(),
                                    rounds=rounds, medians=medians)
        benchmark.pedantic(calls["native"], rounds=1, iterations=1, warmup_rounds=0)

