"""fastair benchmarks: ``bench_ops.py`` (plain script, CSV + table) and ``test_bench_ops.py``
(pytest-benchmark), sharing :mod:`bench.common`."""
