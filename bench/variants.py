"""What the benchmarks time: each implementation on each device, named once.

A variant's `id` ("numpy-cpu", "native1-cpu", "torch-cuda", ...) is its pytest id, its key in
the cost model and its name in benchmark.json and the report; code looks variants up by id in
`VARIANTS` rather than taking ids apart.
"""

from __future__ import annotations

import dataclasses

from impls import BACKENDS


@dataclasses.dataclass(frozen=True)
class Variant:
    """One benchmarked implementation: `backend` as reported ("numpy", "torch", "tf" (impls'
    backends), "native", "native1" (native on one thread), "pydensecrf", "simplecrf") on `device`."""

    backend: str
    device: str = "cpu"

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.device}"

    @property
    def threads(self) -> int | None:
        """OpenMP threads it runs on: 1 for native1, None (every core) otherwise."""
        return 1 if self.backend == "native1" else None


_ALL = ([Variant(name, device) for name in BACKENDS for device in ("cpu", "cuda")]
        + [Variant("native", "cpu"), Variant("native", "cuda"), Variant("native1", "cpu"),
           Variant("pydensecrf", "cpu"), Variant("simplecrf", "cpu")])
VARIANTS = {variant.id: variant for variant in _ALL}
