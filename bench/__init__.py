"""The benchmarks (pytest-benchmark), their report and the ratio gate; importable as `bench.report` and
`bench.gate`, and run as scripts by tox."""
