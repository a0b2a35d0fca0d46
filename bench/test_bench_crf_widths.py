"""The cost of the dense CRF's width gradients relative to its forward pass: torch's dense_crf at
500x375, 21 labels, 5 iterations, float32, on the image and unary of the dense-CRF benchmarks'
headline case (skimage's astronaut, the seeded smooth unary) with pydensecrf's parameters.

Variants, each one call:
- forward: engine "native" with number widths (the native mean field, whole loop in C++);
- backward-values: forward + backward of a scalar loss with the unary requiring grad (the native
  lattice under autograd, one transposed filter per filter of the forward);
- backward-widths: the same with the three widths as tensors requiring grad (besides the
  transposed filter, one filter of d x C columns per kernel and filter, d = 2 and 5);
- backward-widths on the framework engine (torch's own lattice), within --bench-budget only.

Before timing, each variant's labels are checked against the forward's, and the width gradients
for being finite and non-zero. The report sets each median against the forward's of the same run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from bench.conftest import backend_availability
from bench.test_bench_crf import MIN_LABEL_AGREEMENT, PARAMETERS, crf_inputs
from bench.variants import Variant

IMAGE, SIZE, LABELS, ITERATIONS = "astronaut", (375, 500), 21, 5
CASE = f"{IMAGE}-{SIZE[1]}x{SIZE[0]}-{LABELS}labels-{ITERATIONS}it"
WIDTHS = ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb")
OP = "crf_width_gradient"
# (variant, implementation): the native engine for all three, torch's own lattice for the last.
CASES = [("forward", Variant("native")), ("backward-values", Variant("native")),
         ("backward-widths", Variant("native")), ("backward-widths", Variant("torch"))]
# The budget's work unit: columns filtered per iteration by a forward + backward with widths over a
# forward's. A forward filters C per kernel (2C); with the transposed 2C and the widths' (2 + 5)C, 11C.
WIDTH_BACKWARD_WORK = 5.5
# Modest rounds: one backward-widths call takes seconds on two cores.
ROUNDS = {"forward": 5, "backward-values": 5, "backward-widths": 3}


def width_runner(variant: str, engine: str) -> Callable[[], tuple]:
    """A call of `variant` returning (labels (H, W), {width: gradient} of the trained widths)."""
    import torch

    import impls.torch

    image, unary = crf_inputs(IMAGE, SIZE, LABELS)
    unary = torch.from_numpy(unary).permute(2, 0, 1)[None].contiguous()
    image = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    # The loss: NLL of the unary's own labels, a stand-in for ground truth.
    truth = unary.argmin(1)

    def run():
        unary_in = unary.detach().requires_grad_(variant != "forward")
        widths = {name: torch.tensor(float(PARAMETERS[name]), requires_grad=True) for name in WIDTHS} \
            if variant == "backward-widths" else {}
        q = impls.torch.dense_crf(unary_in, image, iterations=ITERATIONS, engine=engine, **{**PARAMETERS, **widths})
        if variant != "forward":
            torch.nn.functional.nll_loss(torch.log(q.clamp_min(1e-30)), truth).backward()
        return q.detach()[0].argmax(0).numpy(), {name: float(width.grad) for name, width in widths.items()}

    return run


def _skip_if_absent(implementation: Variant) -> None:
    for needed in (Variant("torch"), Variant("native")):
        reason = backend_availability().get(needed)
        if reason:
            pytest.skip(f"{implementation} {OP}: {needed}: {reason}")


@pytest.fixture(scope="module")
def forward_labels() -> np.ndarray:
    """The forward's labels (the native whole loop), which every variant's must equal."""
    _skip_if_absent(Variant("native"))
    return width_runner("forward", "native")()[0]


@pytest.mark.parametrize("variant, implementation", CASES, ids=[f"{v}-{i}" for v, i in CASES])
def test_crf_width_gradient_cost(benchmark, budget, forward_labels, variant, implementation):
    _skip_if_absent(implementation)
    work = SIZE[0] * SIZE[1] * LABELS * ITERATIONS * WIDTH_BACKWARD_WORK
    if implementation.backend != "native":
        budget.check(OP, implementation, work)
    run = width_runner(variant, "native" if implementation.backend == "native" else "framework")
    labels, gradients = run()
    agreement = float(np.mean(labels == forward_labels))
    assert agreement >= MIN_LABEL_AGREEMENT, (
        f"{variant} {implementation}: label agreement with the forward {agreement:.4%} < {MIN_LABEL_AGREEMENT:.1%}")
    assert all(np.isfinite(value) and value != 0 for value in gradients.values()), gradients
    benchmark.group = f"{OP} {CASE}"
    benchmark.extra_info.update(op=OP, case=CASE, variant=variant, backend=implementation.name,
                                device=implementation.device, pixels=SIZE[0] * SIZE[1], height=SIZE[0],
                                width=SIZE[1], labels=LABELS, iterations=ITERATIONS, label_agreement=agreement,
                                width_gradients=gradients)
    # The checked call above has warmed everything up.
    benchmark.pedantic(run, rounds=ROUNDS[variant], warmup_rounds=0, iterations=1)
    budget.record(OP, implementation, work, benchmark)
