#!/usr/bin/env python
"""A grid trained as one stacked model against the same runs trained one at a time: the
reproduce grid's 13 runs of one k and seed (VAE; DVAE α = 0.5 and 1 at σ ∈ {0.1, 0.2, 0.4,
0.8}; WNI at H ∈ {0.5, 1, 2, 4}) and a single VAE, on mnist5k, with the real trainer (the
validation pass included), in the same process.

    python -m bench.bench_stack --out bench/results/train_cpu      # k = 1, 8, 64; fp32, bf16
    python -m bench.bench_stack --ks 1 --precisions bf16 --epochs 2  # a smoke run

Each run trains ``--epochs`` epochs; the first is not counted (kernels built, oneDNN primitives
cached), the others are timed by the trainer's own per-epoch ``time_s`` (steps and validation;
a stacked run's share of its stack's time). The separate runs and the stack alternate,
``--repeats`` times, and the fastest of each is kept. Reported: seconds per member-epoch and
the ratio, with the bmm rates of this run (the floor of a stacked step). Writes
``stack_cpu.csv`` and ``stack_cpu.md``.
"""
import argparse
import sys

import torch

import fastair
from bench.common import command_line, gemm_rates, report_header, write_results
from fastair.data import load_dataset
from fastair.models import VAE
from fastair.training import Trainer, seed_everything
from fastair.training.stack import StackTrainer

GRID = ([dict()] + [dict(sigma=s, alpha=0.5) for s in (0.1, 0.2, 0.4, 0.8)]
        + [dict(sigma=s, alpha=1.0) for s in (0.1, 0.2, 0.4, 0.8)]
        + [dict(H=h) for h in (0.5, 1.0, 2.0, 4.0)])
COLUMNS = ("k", "precision", "members", "separate_s_per_member_epoch",
           "stack_s_per_member_epoch", "speedup", "epochs", "repeats", "torch", "fastair",
           "threads")


def _trainers(grid, k, data, precision, epochs):
    out = []
    for i, kw in enumerate(grid):
        seed_everything(i)
        out.append(Trainer(VAE(k=k, **kw), data.train, data.valid, None, None, seed=i,
                           epochs=epochs, patience=0, progress=False, precision=precision))
    return out


def _steady_s(results):
    """Seconds of every epoch after each run's first (its ``time_s``: the steps and the
    validation pass; a stacked run's share of its stack's time), summed over the runs."""
    return sum(row["time_s"] for r in results for row in r.metrics[1:])


def _separate_s(grid, k, data, precision, epochs):
    return _steady_s([t.fit() for t in _trainers(grid, k, data, precision, epochs)])


def _stack_s(grid, k, data, precision, epochs):
    trainers = _trainers(grid, k, data, precision, epochs)
    return _steady_s(StackTrainer(trainers, progress=False).fit())


def measure(k, precision, grid, data, epochs, repeats):
    if epochs < 2:
        raise ValueError("epochs: at least 2 (the first is not timed)")
    separate, stack = [], []
    for _ in range(repeats):
        separate.append(_separate_s(grid, k, data, precision, epochs))
        stack.append(_stack_s(grid, k, data, precision, epochs))
    n = len(grid) * (epochs - 1)
    row = {"k": k, "precision": precision, "members": len(grid),
           "separate_s_per_member_epoch": round(min(separate) / n, 4),
           "stack_s_per_member_epoch": round(min(stack) / n, 4),
           "epochs": epochs, "repeats": repeats, "torch": torch.__version__,
           "fastair": fastair.__version__, "threads": torch.get_num_threads()}
    row["speedup"] = round(min(separate) / min(stack), 2)
    return row


def summary(rows, rates, command):
    lines = [report_header("A grid as one stacked model, mnist5k", command),
             "Seconds per member-epoch (40 steps of batch 100 and the validation pass, the "
             "real trainer, each run's first epoch not counted), the 13 runs of one k and seed "
             "of `fastair reproduce` (the 4 runs with two encoder terms, DVAE α = 0.5, form "
             "their own stack) or one VAE. "
             f"Stacked bmm rate in this run ([13, 100, 784] x [13, 784, 200]): "
             f"{rates['fp32']:.0f} GFLOP/s float32, {rates['bf16']:.0f} GFLOP/s bfloat16.\n",
             "| k | precision | members | separate (s / member-epoch) | stacked | speedup |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['k']} | {r['precision']} | {r['members']} | "
                     f"{r['separate_s_per_member_epoch']:.3f} | "
                     f"{r['stack_s_per_member_epoch']:.3f} | {r['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp32"])
    p.add_argument("--members", type=int, nargs="+", default=[13, 1],
                   help="stack sizes (the first n runs of the grid)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first untimed)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None, help="directory for stack_cpu.csv and stack_cpu.md")
    args = p.parse_args(argv)
    data = load_dataset("mnist5k")
    rates = gemm_rates(a_shape=(13, 100, 784), b_shape=(13, 784, 200))  # the stacked layer 1
    rows = []
    for k in args.ks:
        for precision in args.precisions:
            for members in args.members:
                row = measure(k, precision, GRID[:members], data, args.epochs, args.repeats)
                rows.append(row)
                print(row, flush=True)
    text = summary(rows, rates, command_line("bench.bench_stack", argv))
    print(text)
    if args.out:
        write_results(args.out, "stack_cpu", rows, COLUMNS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
