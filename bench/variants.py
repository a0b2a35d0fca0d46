"""What the benchmarks time: each implementation on each device, named once.

A `Variant(backend, device, threads)` is the value the benchmark fixtures hand to the tests; its
`id` ("numpy-cpu", "native1-cpu", "torch-cuda", ...) is its pytest id and its name in
benchmark.json and the report, where `name` ("native1") is the JSON's "backend" field and `device`
its "device" field. Code builds variants from their fields and reads their fields; it never takes
an id apart.
"""

from __future__ import annotations

import dataclasses
import os

from impls import BACKEND_INFO, BACKENDS

# Benchmarked implementations that are not impls backends: the native lattice (impls.native and
# impls.densecrf's native engine) and the peer libraries, with the devices they run on.
OTHER_BACKENDS: dict[str, tuple[str, ...]] = {"native": ("cpu", "cuda"), "pydensecrf": ("cpu",), "simplecrf": ("cpu",)}
# Libraries that run on one core whatever the machine has.
SINGLE_THREADED = ("pydensecrf", "simplecrf")


def variant_id(name: str, device: str) -> str:
    """The text naming a benchmarked implementation in pytest ids, benchmark.json and the report:
    "native1-cpu" for `name` "native1" (a Variant's `name`, the JSON's "backend") on "cpu"."""
    return f"{name}-{device}"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One benchmarked implementation: `backend` (an impls backend "numpy", "torch", "tf"; "native",
    the native lattice; or a peer library, "pydensecrf", "simplecrf") on `device`, with `threads`
    OpenMP threads for native (None: every core)."""

    backend: str
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        devices = BACKEND_INFO[self.backend].devices if self.backend in BACKEND_INFO \
            else OTHER_BACKENDS.get(self.backend)
        if devices is None:
            raise ValueError(f"unknown benchmark backend {self.backend!r}; known: {[*BACKENDS, *OTHER_BACKENDS]}")
        if self.device not in devices:
            raise ValueError(f"{self.backend} runs on {list(devices)}, not {self.device!r}")
        if self.threads is not None and not (self.backend == "native" and self.device == "cpu" and self.threads > 0):
            raise ValueError(f"threads={self.threads!r}: only native on the CPU takes a positive thread count")

    @property
    def name(self) -> str:
        """The backend as benchmark.json and the report name it: "native1" for native on one thread."""
        return f"{self.backend}{self.threads}" if self.threads else self.backend

    @property
    def id(self) -> str:
        """"native1-cpu", "torch-cuda", ...: the pytest id and the name in the JSON and the report."""
        return variant_id(self.name, self.device)

    def __str__(self) -> str:
        return self.id

    @property
    def cores(self) -> int:
        """CPU cores it may use: its thread count, one for the single-threaded libraries, else OpenMP's
        default (OMP_NUM_THREADS, or the cores this process may run on)."""
        if self.threads:
            return self.threads
        if self.backend in SINGLE_THREADED:
            return 1
        return int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))


NATIVE1 = Variant("native", "cpu", threads=1)
PYDENSECRF = Variant("pydensecrf")
SIMPLECRF = Variant("simplecrf")
