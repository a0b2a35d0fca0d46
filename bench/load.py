"""A reproducible load: K processes that keep the CPU busy while a case runs, started and stopped
by the harness itself, so that "on a shared machine" is a measurement and not an anecdote.

    with busy_processes(os.cpu_count()):
        ...  # timed here, beside K spinning processes

Each process is a plain Python loop (no I/O, no memory traffic to speak of): the competition a
Dask worker, a CI job or a training loop on the same cores gives the scheduler. The processes
stop when the block ends, when the benchmark process dies (Linux), and by themselves after
`limit_s` in any case, so that a killed benchmark leaves nothing spinning.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

_SPIN = """
import sys, time
deadline = time.monotonic() + float(sys.argv[1])
print("spinning", flush=True)
while time.monotonic() < deadline:
    pass
"""


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL when the benchmark that started it dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


@contextlib.contextmanager
def busy_processes(count: int, *, limit_s: float = 600.0) -> Iterator[list[subprocess.Popen]]:
    """`count` processes spinning on the CPU inside the block (none for 0); each is running when
    the block starts and gone when it ends, and none outlives `limit_s` seconds."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"busy_processes: argument 'count' must be an integer >= 0, got {count!r}")
    if not limit_s > 0:
        raise ValueError(f"busy_processes: argument 'limit_s' must be positive, got {limit_s!r}")
    processes: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            processes.append(subprocess.Popen(
                [sys.executable, "-c", _SPIN, str(limit_s)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, text=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None))
        for process in processes:  # each has printed once it spins
            if process.stdout.readline().strip() != "spinning":
                raise RuntimeError(f"busy_processes: a spinning process did not start (exit {process.poll()})")
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()
            process.stdout.close()
