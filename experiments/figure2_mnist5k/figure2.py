#!/usr/bin/env python
"""The paper's Figure 2 from several ``fastair reproduce`` records: the gain over IWAE-k against
the regularization strength for every k the records hold (k = 1 from one, k = 8 and 64 from
another), one PNG per regularizer, and the test of the paper's two claims.

    python -m experiments.figure2_mnist5k.figure2 experiments/reproduce_mnist5k_bf16_stack \
        experiments/table2_mnist5k experiments/table3_mnist5k --out experiments/figure2_mnist5k

Each argument is a record's directory (or its ``results.json``). The records must be of one data
set; a k found in two records is an error. Writes ``figure2.md``, ``gains.csv`` and
``fig2_<family>.png`` under ``--out``.
"""
import argparse
import json
import os

from bench.common import command_line
from fastair.io import atomic_write_text
from fastair.reproduce.report import across_k, summarize


def load(paths):
    """``(dataset, [(path, config)], runs)`` merged from the records; ValueError on mixed data
    sets or a k present in two records."""
    sources, runs, owner = [], [], {}
    for path in paths:
        if os.path.isdir(path):
            path = os.path.join(path, "results.json")
        with open(path) as f:
            record = json.load(f)
        sources.append((path, record["config"]))
        for r in record["runs"]:
            if owner.setdefault(r["k"], path) != path:
                raise ValueError(f"k = {r['k']} is in both {owner[r['k']]} and {path}")
            runs.append(r)
    datasets = {c["dataset"] for _, c in sources}
    if len(datasets) != 1:
        raise ValueError(f"records of several data sets: {sorted(datasets)}")
    return datasets.pop(), sources, runs


def _budget(config):
    steps = config.get("max_steps", config.get("svi_steps", "?"))  # older records: svi_steps
    return (f"k {config['ks']}, {config['seeds']} seeds, at most {config['epochs']} epochs "
            f"(patience {config['patience']}), {config.get('precision', 'fp32')} training, "
            f"IW-SVI k_svi {config['k_svi']}, ≤ {steps} steps, "
            f"k_eval {config['k_eval']}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("records", nargs="+", help="reproduce output roots or results.json files")
    p.add_argument("--out", required=True, help="directory for figure2.md, gains.csv, PNGs")
    args = p.parse_args(argv)
    dataset, sources, runs = load(args.records)
    os.makedirs(args.out, exist_ok=True)
    text, paths = across_k(args.out, runs, summarize(runs))
    if not text:
        p.error("the records hold one k; Figure 2 needs two or more")
    command = command_line("experiments.figure2_mnist5k.figure2", argv)
    head = [f"# Figure 2 on {dataset}: the gain over IWAE-k against the strength\n",
            f"Command: `{command}`\n", "Records:\n"]
    head += [f"- `{path}`: {_budget(config)}" for path, config in sources]
    atomic_write_text(os.path.join(args.out, "figure2.md"), "\n".join(head) + "\n\n" + text)
    print(text)
    print("wrote", ", ".join([os.path.join(args.out, "figure2.md")] + paths))


if __name__ == "__main__":
    main()
