"""bench/load.py: the busy processes the shared-machine benchmarks run beside."""

import os
import resource
import time

import pytest

from bench.load import busy_processes, cores


def _children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_feature_busy_processes_spin_inside_the_block_and_are_gone_after():
    before = _children_cpu_seconds()
    with busy_processes(2) as processes:
        assert len(processes) == 2 and all(process.poll() is None for process in processes)
        time.sleep(0.5)
    assert all(process.returncode is not None for process in processes)
    for process in processes:
        with pytest.raises(ProcessLookupError):
            os.kill(process.pid, 0)
    # Reaped children's CPU: two spinning processes for half a second on however many cores.
    assert _children_cpu_seconds() - before > 0.3


def test_feature_busy_processes_stop_by_themselves_after_their_limit():
    with busy_processes(1, limit_s=0.3) as (process,):
        assert process.wait(timeout=10) == 0


def test_smoke_no_busy_process_is_a_quiet_machine():
    with busy_processes(0) as processes:
        assert processes == []
    assert cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("count, limit", [(-1, 1.0), (1.5, 1.0), (True, 1.0), (1, 0.0)])
def test_exception_busy_processes_name_the_bad_argument(count, limit):
    with pytest.raises(ValueError, match="busy_processes: argument '(count|limit_s)'"):
        with busy_processes(count, limit_s=limit):
            pass
