"""What produced the README's numbers: one folder per experiment with its scripts, command,
records and README.md (see experiments/README.md). Scripts that import :mod:`bench.common` or
each other run from the repository root as ``python -m experiments.<folder>.<script>``."""
