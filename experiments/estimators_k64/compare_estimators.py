#!/usr/bin/env python
"""Runs trained with each gradient estimator, tabulated per estimator over seeds.

Runs of ``fastair train --estimator E --seed S`` (each directory with its ``bounds.json`` and the
``iwsvi/summary.json`` of ``fastair evaluate``), as mean ± std over seeds per estimator, with the
paired difference per seed.

    python -m experiments.estimators_k64.compare_estimators runs/estimators-k64 \
        --out experiments/estimators_k64

Directory names ``<estimator>-seed<s>``. Writes ``estimators.csv`` and ``estimators.md``.
"""
import argparse
import json
import math
import os
import re
import statistics
import sys

from bench.common import command_line, write_results

COLUMNS = ("estimator", "seed", "test_nll", "test_gap", "test_nbound", "best_epoch", "epochs",
           "stop_reason", "k")


def read_runs(root):
    rows = []
    for name in sorted(os.listdir(root)):
        m = re.fullmatch(r"(\w+)-seed(\d+)", name)
        if not m:
            continue
        run = os.path.join(root, name)
        try:
            with open(os.path.join(run, "bounds.json")) as f:
                bounds = json.load(f)
            with open(os.path.join(run, "iwsvi", "summary.json")) as f:
                iwsvi = json.load(f)
        except FileNotFoundError:
            continue  # not finished or not evaluated yet
        rows.append({"estimator": m.group(1), "seed": int(m.group(2)),
                     "test_nll": iwsvi["-ln p(x)"], "test_gap": iwsvi["gap"],
                     "test_nbound": iwsvi["-L(x)"], "best_epoch": bounds["best_epoch"],
                     "epochs": bounds["epochs"], "stop_reason": bounds["stop_reason"],
                     "k": bounds["k"]})
    return rows


def _pm(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return f"{mean:.2f} ± {std:.2f}"


def summary(rows, command):
    ests = sorted({r["estimator"] for r in rows}, key=lambda e: (e != "iwae", e))
    lines = [f"# Training with each gradient estimator, mnist5k, k = {rows[0]['k']}\n",
             f"Command: `{command}`\n",
             "Each run: `fastair train --k K --estimator E --seed S` with the trainer's defaults "
             "(the paper's MLP, Adam 1e-3, batch 100, at most 100 epochs, patience 30), then "
             "`fastair evaluate` (IW-SVI, k_svi 16, k_eval 5000) on the 500 test digits. Mean ± "
             "std over seeds (nats, lower is better).\n",
             "| estimator | seeds | test -ln p(x) | Δinf | -L_k(x) | best epoch |",
             "|---|---|---|---|---|---|"]
    for e in ests:
        rs = [r for r in rows if r["estimator"] == e]
        lines.append(f"| {e} | {len(rs)} | {_pm([r['test_nll'] for r in rs])} | "
                     f"{_pm([r['test_gap'] for r in rs])} | {_pm([r['test_nbound'] for r in rs])}"
                     f" | {', '.join(str(r['best_epoch']) for r in rs)} |")
    if "iwae" in ests:
        for e in ests:
            if e == "iwae":
                continue
            base = {r["seed"]: r["test_nll"] for r in rows if r["estimator"] == "iwae"}
            diffs = [base[r["seed"]] - r["test_nll"] for r in rows
                     if r["estimator"] == e and r["seed"] in base]
            if len(diffs) < 2:
                continue
            mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
            t = mean / (sd / math.sqrt(len(diffs))) if sd > 0 else math.inf
            lines.append(f"\n{e} against iwae, paired by seed (iwae - {e}, positive: {e} better): "
                         + ", ".join(f"{d:+.2f}" for d in diffs)
                         + f"; mean {mean:+.2f} ± {sd:.2f} (t = {t:.2f} on {len(diffs) - 1} "
                         "degrees of freedom).")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = read_runs(args.root)
    if not rows:
        print(f"{args.root}: no finished and evaluated runs", file=sys.stderr)
        return 1
    command = command_line("experiments.estimators_k64.compare_estimators", argv)
    text = summary(rows, command)
    print(text)
    if args.out:
        write_results(args.out, "estimators", rows, COLUMNS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
