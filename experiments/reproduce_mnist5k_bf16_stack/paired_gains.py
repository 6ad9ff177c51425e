#!/usr/bin/env python
"""Each grid value's test gain over the plain model of its k, paired by seed, for a finished
``fastair reproduce`` record (new reports carry it in their grid; this adds it to older ones).

    python -m experiments.reproduce_mnist5k_bf16_stack.paired_gains \
        experiments/reproduce_mnist5k_bf16_stack

Writes ``paired_gains.md`` and ``paired_gains.csv`` beside the record's ``results.json``.
"""
import argparse
import json
import math
import os
import sys

from bench.common import command_line, write_results
from fastair.reproduce.gains import seed_gains

COLUMNS = ("k", "label", "family", "strength", "n", "gain", "gain_std", "gain_se")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("record", help="a reproduce output root (holding results.json)")
    args = p.parse_args(argv)
    with open(os.path.join(args.record, "results.json")) as f:
        runs = json.load(f)["runs"]
    rows = seed_gains(runs)
    command = command_line("experiments.reproduce_mnist5k_bf16_stack.paired_gains", argv)
    lines = [f"# Paired gains over the plain model: {args.record}\n", f"Command: `{command}`\n",
             "Gain = the plain model's test -ln p(x) minus the value's, same k and seed (nats; "
             "positive: the regularizer helped); mean ± SE over seeds, then each seed's.\n",
             "| k | model | strength | gain | seeds' gains |", "|---|---|---|---|---|"]
    for g in rows:
        se = "–" if math.isnan(g["gain_se"]) else f"{g['gain_se']:.2f}"
        each = ", ".join(f"{s}: {v:+.2f}" for s, v in g["seed_gains"].items())
        lines.append(f"| {g['k']} | {g['label']} | {g['strength']:g} | {g['gain']:+.2f} ± {se} "
                     f"| {each} |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args.record, "paired_gains", [{c: g[c] for c in COLUMNS} for g in rows],
                  COLUMNS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
