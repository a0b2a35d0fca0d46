"""The one table of impls' backends: what each is called, the layout of its tensors, the framework
it imports and the devices it runs on. The test grid (conftest.py), `impls.testing` and the
benchmarks (bench/variants.py) read it; importing it loads no framework."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """One backend of impls: `impls.<name>`, tensors in `layout`, built on `framework` (the module
    it imports, which may be absent), runnable on `devices`."""

    name: str
    layout: str
    framework: str
    devices: tuple[str, ...] = ("cpu", "cuda")

    @property
    def module(self) -> str:
        """The subpackage to import: "impls.numpy", "impls.torch", "impls.tf"."""
        return f"impls.{self.name}"


BACKEND_INFO: Mapping[str, BackendInfo] = types.MappingProxyType({
    info.name: info for info in (
        BackendInfo("numpy", "NHWC", "numpy", devices=("cpu",)),
        BackendInfo("torch", "NCHW", "torch"),
        BackendInfo("tf", "NHWC", "tensorflow"),
    )
})
BACKENDS: tuple[str, ...] = tuple(BACKEND_INFO)


def backend_info(name: str) -> BackendInfo:
    """The table's entry for `name`; ValueError naming the known backends otherwise."""
    try:
        return BACKEND_INFO[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backend {name!r}; impls has {list(BACKENDS)}") from None
