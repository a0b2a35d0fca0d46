#!/usr/bin/env bash
# Build and run the GPU tests and benchmarks on a CUDA machine with no network, using the
# packages already installed there (torch, nanobind, scikit-build-core, cmake, ninja,
# pytest, pytest-benchmark, matplotlib; pydensecrf if present). From the repository root:
#
#     bash bench/gpu.sh [extra pytest arguments for the benchmarks]
set -euo pipefail
python3 -m pip install --no-build-isolation --no-deps -e . -Cbuild-dir=build/gpu
python3 -c "from impls import native; assert native.has_cuda(), 'impls._native has no CUDA device: ' \
    f'built_with_cuda={native.built_with_cuda()}'"
python3 -m pytest -p no:cacheprovider -q --device all --backend numpy,torch \
    tests/test_native_device.py tests/test_torch_device_discipline.py tests/test_native_lattice.py \
    tests/test_dense_crf.py tests/test_crfrnn.py tests/test_caffe_net.py tests/test_caffe_models.py
python3 -m pytest -p no:cacheprovider -v --device all --backend numpy,torch bench \
    --benchmark-json=bench/results/benchmark.json "$@"
python3 bench/report.py bench/results/benchmark.json --output bench/results/report.md
