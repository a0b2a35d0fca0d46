"""matterport's Mask R-CNN whole: `detect()` at 1024 x 1024 (ResNet-101, 81 classes, the seeded
weights of tests/matterport_h5.py, skimage's astronaut) in impls.torch, impls.tf (Keras 3) and
matterport's own code on tf_keras, in one run.

matterport runs in its own environment (`tox -e matterport --notest` makes it; or point
IMPLS_MATTERPORT_PYTHON at an interpreter with mrcnn-colab 2.1, TF 2.21 and tf_keras), as a
subprocess that builds its model once and answers timing requests over a pipe
(reference/matterport_oracle.py --serve); a timed call is one request, so its time includes a
pipe round trip (well under a millisecond). Where that environment is absent its case is skipped
with the reason, and the report says so.

Every case is checked before it is timed: its detections against matterport's (the bar of the
golden tests: same instances, boxes within 1 px, class ids, scores within 1e-4, masks 99.5 %),
or against torch's where matterport is absent. Each case then times the cumulative stages,
`stage_outputs(..., until=key)` on the molded image (matterport: its graph up to that layer),
and stores the differences as the per-stage breakdown in extra_info; "mold + unmold" is
detect() minus the whole network.
"""

from __future__ import annotations

import base64
import os
import pathlib
import time

import numpy as np
import pytest

from bench.matterport import MatterportWorker, matterport_python
from tests.matterport_h5 import assert_detect_equals_matterports, write_coco_h5

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 1024
GROUP = f"maskrcnn detect {SIZE}x{SIZE} resnet101 81 classes"
ROUNDS = 5
STAGE_ROUNDS = 3
# (stage, the key that ends it), in the network's order.
STAGES = (("backbone", "res5c_out"), ("FPN", "fpn_p6"), ("RPN", "rpn_bbox"), ("proposals", "ROI"),
          ("classifier head", "mrcnn_bbox"), ("detections", "mrcnn_detection"), ("mask head", "mrcnn_mask"))
IMPLEMENTATIONS = ("torch", "tf", "matterport", "torch-cuda")


def _photo():
    from skimage import data

    return data.astronaut()


def _config():
    from impls.maskrcnn import Config
    from tests.matterport_h5 import load_layout

    fields = load_layout(ROOT / "reference" / "matterport_layout_B.json")["config"]
    given = {k: v for k, v in fields.items() if k in Config.field_names() and k not in Config.COMPUTED}
    return Config(**given | {"IMAGE_MIN_DIM": SIZE, "IMAGE_MAX_DIM": SIZE})


class Arm:
    """One implementation: detect() on the photo, a stage prefix on the molded photo, its result."""

    def __init__(self, name, detect, stage, result, synchronize=lambda: None):
        self.name, self._detect, self._stage, self._result, self.synchronize = name, detect, stage, result, synchronize

    def detect(self):
        out = self._detect()
        self.synchronize()
        return out

    def stage(self, until):
        out = self._stage(until)
        self.synchronize()
        return out

    def result(self) -> dict:
        return self._result()


def _framework_arm(name, framework, device, weights, config):
    from impls import _maskrcnn
    from impls.examples.maskrcnn_splash import load_model

    model, _ = load_model(weights, config, framework, device)
    image = _photo()
    molded, metas, _ = _maskrcnn.mold_inputs([image], config)
    synchronize = lambda: None  # noqa: E731
    if framework == "torch":
        import torch

        molded = torch.as_tensor(molded, device=device).permute(0, 3, 1, 2)
        if device == "cuda":
            synchronize = torch.cuda.synchronize
    return Arm(name, lambda: model.detect([image]), lambda until: model.stage_outputs(molded, metas, until=until),
               lambda: model.detect([image])[0], synchronize)


def _matterport_arm(worker):
    def result():
        reply = worker.request(op="detect", result=True)
        shape = reply["mask_shape"]
        masks = np.unpackbits(np.frombuffer(base64.b64decode(reply["masks"]), np.uint8))[:int(np.prod(shape))]
        return {"rois": np.asarray(reply["rois"], np.int32).reshape(-1, 4),
                "class_ids": np.asarray(reply["class_ids"], np.int32),
                "scores": np.asarray(reply["scores"], np.float32), "masks": masks.reshape(shape).astype(bool)}

    return Arm("matterport", lambda: worker.request(op="detect"), lambda until: worker.request(op="stage", until=until),
               result)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_coco_h5(tmp_path_factory.mktemp("maskrcnn") / "seeded_coco.h5")


@pytest.fixture(scope="module")
def matterport_worker(tmp_path_factory):
    python, reason = matterport_python()
    if python is None:
        yield None, reason
        return
    worker = MatterportWorker(python, os.cpu_count() or 1, tmp_path_factory.mktemp("matterport") / "stderr.log",
                              size=SIZE)
    try:
        yield worker, None
    finally:
        worker.close()


@pytest.fixture(scope="module")
def reference(matterport_worker, weights):
    """(matterport's detect() result, "matterport"), or torch's where matterport is absent."""
    worker, _ = matterport_worker
    if worker is not None:
        return _matterport_arm(worker).result(), "matterport"
    pytest.importorskip("torch")
    return _framework_arm("torch", "torch", "cpu", weights, _config()).result(), "torch (matterport absent)"


def _arm(implementation, matterport_worker, weights):
    if implementation == "matterport":
        worker, reason = matterport_worker
        if worker is None:
            pytest.skip(f"matterport: {reason}")
        return _matterport_arm(worker)
    framework, _, device = implementation.partition("-")
    pytest.importorskip({"torch": "torch", "tf": "tensorflow"}[framework])
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            pytest.skip("torch-cuda: torch.cuda.is_available() is False")
    return _framework_arm(implementation, framework, device or "cpu", weights, _config())


def stage_breakdown(arm, detect_s: float, rounds: int = STAGE_ROUNDS) -> dict[str, float]:
    """{stage: seconds}: medians of the cumulative stages, differenced, and "mold + unmold"."""
    cumulative = []
    for _, until in STAGES:
        arm.stage(until)  # warm-up: Keras traces each prefix once, matterport builds its callable
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            arm.stage(until)
            times.append(time.perf_counter() - start)
        cumulative.append(float(np.median(times)))
    stages = {name: after - before for (name, _), before, after in zip(STAGES, [0.0, *cumulative[:-1]], cumulative,
                                                                          strict=True)}
    return stages | {"mold + unmold": detect_s - cumulative[-1]}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_detect(benchmark, implementation, matterport_worker, weights, reference):
    arm = _arm(implementation, matterport_worker, weights)
    expected, source = reference
    ours = arm.result()
    assert_detect_equals_matterports(ours["rois"], ours["class_ids"], ours["scores"], ours["masks"], expected,
                                     expected["masks"], "")
    benchmark.group = GROUP
    benchmark.extra_info.update(op="maskrcnn_detect", backend=implementation.split("-")[0],
                                device="cuda" if implementation.endswith("cuda") else "cpu", size=SIZE,
                                detections=len(ours["class_ids"]), checked_against=source)
    benchmark.pedantic(arm.detect, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    if benchmark.stats is not None:
        detect_s = benchmark.stats.stats.median
        benchmark.extra_info["stage_s"] = {k: round(v, 4) for k, v in stage_breakdown(arm, detect_s).items()}
    if implementation == "matterport":
        benchmark.extra_info["versions"] = matterport_worker[0].ready["versions"]

