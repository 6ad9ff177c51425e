"""fastair benchmarks: timed, rerunnable measurements, each run from the repository root as
``python -m bench.<name>`` (see bench/README.md), sharing :mod:`bench.common` (timing, memory,
the machine and commit, writing CSV and markdown)."""
