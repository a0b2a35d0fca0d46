"""matterport's Mask R-CNN as the benchmarks' third arm: reference/matterport_oracle.py --serve,
run by the interpreter of matterport's environment (TF 2.21, tf_keras, mrcnn-colab 2.1), builds
its model once and answers one JSON request per line (see `serve` there). A request's reply
carries the time measured inside matterport's process; the caller's clock adds a pipe round trip.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
MATTERPORT_ENV = ROOT / ".tox" / "matterport" / "bin" / "python"


def matterport_python() -> tuple[str | None, str | None]:
    """(the interpreter of matterport's environment, None) or (None, why it is absent)."""
    chosen = os.environ.get("IMPLS_MATTERPORT_PYTHON")
    if chosen:
        return (chosen, None) if pathlib.Path(chosen).exists() else \
            (None, f"IMPLS_MATTERPORT_PYTHON={chosen} does not exist")
    if MATTERPORT_ENV.exists():
        return str(MATTERPORT_ENV), None
    return None, (f"matterport's environment is absent ({MATTERPORT_ENV.relative_to(ROOT)}): make it with "
                  "`python3 -m tox -e matterport --notest`, or set IMPLS_MATTERPORT_PYTHON")


class MatterportWorker:
    """reference/matterport_oracle.py --serve in its environment: one JSON request, one JSON reply."""

    def __init__(self, python: str, threads: int, log: pathlib.Path, *, size: int = 1024):
        self.log = log
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        self._stderr = open(log, "w")  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            [python, str(ROOT / "reference" / "matterport_oracle.py"), "--serve", "--threads", str(threads),
             "--size", str(size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            cwd=ROOT, env=env)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.close()
            tail = self.log.read_text()[-3000:]
            raise RuntimeError(f"matterport's worker exited (code {self.process.returncode}); its stderr ends:\n{tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"matterport's worker: {reply['error']}")
        return reply

    def request(self, **message) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.process.stdin.close()  # the worker's end of input: it returns
        except BrokenPipeError:  # it had exited already
            pass
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self._stderr.close()
