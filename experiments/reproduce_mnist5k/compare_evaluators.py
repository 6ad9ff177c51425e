#!/usr/bin/env python
"""What the new IW-SVI evaluator changed: two ``fastair reproduce`` outputs of the same trained
runs (same seeds, so bit-identical models), evaluated by the old fixed-step evaluator and by the
converging one, side by side.

    python -m experiments.reproduce_mnist5k.compare_evaluators OLD_DIR NEW_DIR [--out FILE.md]

Reads each directory's ``runs.csv`` and ``table.csv`` (what ``fastair reproduce`` writes) and
prints Markdown: the chosen table of each, and per model family and grid value the mean over
seeds of new - old in test ``-ln p(x)`` and ``Delta_inf`` with its spread over seeds.
"""
import argparse
import csv
import os
import statistics

from fastair.training.checkpoint import atomic_write_text


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _f(row, key):
    return float(row[key])


def _pm(values):
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{mean:+.2f} ± {spread:.2f}"


def compare(old_dir, new_dir):
    old = {r["name"]: r for r in read(os.path.join(old_dir, "runs.csv"))}
    new = {r["name"]: r for r in read(os.path.join(new_dir, "runs.csv"))}
    same = [n for n in new if n in old]
    for n in same:  # the evaluator changed, the models must not have
        if any(old[n][key] != new[n][key] for key in ("best_epoch", "valid_bound")):
            raise SystemExit(f"{n}: trained differently in the two directories")
    out = ["| model | strength | runs | new - old: test -ln p(x) | new - old: test Δinf | "
           "new - old: test -L(x) |", "|---|---|---|---|---|---|"]
    groups = {}
    for n in same:
        groups.setdefault((new[n]["label"], new[n]["strength"]), []).append(n)
    for (label, strength), names in groups.items():
        cols = [_pm([_f(new[n], key) - _f(old[n], key) for n in names])
                for key in ("test_nll", "test_gap", "test_nelbo")]
        out.append(f"| {label} | {strength or '–'} | {len(names)} | " + " | ".join(cols) + " |")
    tables = []
    for title, d in (("old evaluator", old_dir), ("new evaluator", new_dir)):
        tables += [f"\n{title} ({d}/table.csv):\n",
                   "| model | strength | -ln p(x) | Δinf | -L(x) |", "|---|---|---|---|---|"]
        for r in read(os.path.join(d, "table.csv")):
            tables.append(f"| {r['label']} | {r['strength'] or '–'} | "
                          f"{_f(r, 'test_nll'):.2f} ± {_f(r, 'test_nll_std'):.2f} | "
                          f"{_f(r, 'test_gap'):.2f} ± {_f(r, 'test_gap_std'):.2f} | "
                          f"{_f(r, 'test_nelbo'):.2f} ± {_f(r, 'test_nelbo_std'):.2f} |")
    return "\n".join(out + tables) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old_dir")
    p.add_argument("new_dir")
    p.add_argument("--out", default=None, help="also write the Markdown here")
    args = p.parse_args(argv)
    text = compare(args.old_dir, args.new_dir)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
