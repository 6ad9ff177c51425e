"""Copy the finished runs of a ``fastair reproduce`` tree, without their checkpoints, into
another directory: a tracked one, so that a grid longer than a session survives a machine that
keeps only what is committed, and back into a fresh tree, where ``reproduce`` reads them as done.

A run is finished when its ``result.json`` exists. Copied: every file of the run but the
checkpoints (``*.pt``), the locks and ``test_per_example.csv`` (10000 rows a run, which the
report does not read); the rest is a few kB a run. Runs already in DST with the same
``result.json`` are left alone; unfinished runs are never copied (without ``last.pt`` they could
not resume).

    python experiments/land_runs.py runs/table3 experiments/table3_mnist5k/runs   # land
    python experiments/land_runs.py experiments/table3_mnist5k/runs runs/table3   # restore
"""
import argparse
import filecmp
import os
import shutil
import sys

SKIPPED_NAMES = (".lock", "test_per_example.csv")
SKIPPED_SUFFIXES = (".pt", ".tmp")


def finished_runs(root):
    """The directories under ``root`` (relative to it) that hold a ``result.json``, sorted."""
    found = []
    for here, dirs, files in os.walk(root):
        dirs.sort()
        if "result.json" in files:
            found.append(os.path.relpath(here, root))
            dirs[:] = []  # a run holds no runs
    return found


def _kept(name):
    return name not in SKIPPED_NAMES and not name.endswith(SKIPPED_SUFFIXES)


def land(src, dst):
    """Copy the finished runs of ``src`` to ``dst``; returns the runs copied (relative paths)."""
    copied = []
    for run in finished_runs(src):
        there = os.path.join(dst, run, "result.json")
        if os.path.exists(there) and filecmp.cmp(os.path.join(src, run, "result.json"), there,
                                                 shallow=False):
            continue
        for here, _, files in os.walk(os.path.join(src, run)):
            target = os.path.join(dst, os.path.relpath(here, src))
            os.makedirs(target, exist_ok=True)
            for name in filter(_kept, files):
                shutil.copy2(os.path.join(here, name), os.path.join(target, name))
        copied.append(run)
    return copied


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="a reproduce tree (or a landed copy of one)")
    p.add_argument("dst", help="where the finished runs go")
    args = p.parse_args(argv)
    if not os.path.isdir(args.src):
        sys.exit(f"{args.src}: no such directory")
    copied = land(args.src, args.dst)
    print(f"{len(copied)} finished run(s) copied to {args.dst}, "
          f"{len(finished_runs(args.dst))} there in all")
    return copied


if __name__ == "__main__":
    main()
