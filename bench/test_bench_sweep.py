"""impls.sweep on a LocalCluster of 1 and 2 worker processes: images per second of a dense CRF
sweep over a synthetic VOC-layout set (16 images of 240x320, 2 settings, 2 images per task).

The cluster starts before the timed calls; each call sweeps from scratch into a fresh output
folder, so nothing is reused. The report turns the medians into images per second.
"""

import itertools

import pytest

distributed = pytest.importorskip("distributed", reason="impls.sweep runs on dask.distributed (extra 'sweep')")

from impls import sweep  # noqa: E402
from impls.datasets import VocDataset  # noqa: E402
from impls.examples.sweep_synthetic import write_voc_dataset  # noqa: E402

IMAGES, SIZE = 16, (240, 320)
GRID = {"bilateral_compat": [4, 8]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = write_voc_dataset(tmp_path_factory.mktemp("sweep-voc"), IMAGES, SIZE)
    return VocDataset(root, "val", root / "scores")


@pytest.mark.parametrize("workers", [1, 2])
def test_sweep_images_per_second(benchmark, dataset, tmp_path, workers):
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    rounds = itertools.count()
    with distributed.Client(cluster) as client:
        sweep.run(dataset, GRID, tmp_path / "warm-up", chunk_size=2, client=client, progress=False)

        def fresh_output():
            return (dataset, GRID, tmp_path / f"round-{next(rounds)}"), {"chunk_size": 2, "client": client,
                                                                          "progress": False}

        benchmark.group = f"sweep {IMAGES} images of {SIZE[0]}x{SIZE[1]} x {len(GRID['bilateral_compat'])} settings"
        benchmark.extra_info.update(op="sweep", backend=f"dask-{workers}w", device="cpu", workers=workers,
                                    images=IMAGES * len(GRID["bilateral_compat"]))
        result = benchmark.pedantic(sweep.run, setup=fresh_output, rounds=3, warmup_rounds=0)
    cluster.close()
    assert result.computed == IMAGES // 2 * 2 and sum(result.images.values()) == IMAGES * 2
