#!/usr/bin/env python
"""Scaling of ``fastair evaluate`` and ``fastair reproduce`` from 1 to N processes under
``torchrun`` (gloo on CPU, NCCL on CUDA), on mnist5k, against one process with every core.

    python -m bench.bench_distributed --out bench/results/distributed   # 1 and 2 processes
    python -m bench.bench_distributed --quick                            # a smoke run

One process gets ``--threads`` torch threads (default: all cores); ``N`` processes get
``threads / N`` each, so both use the same cores. Evaluation: IW-SVI on the 500 test digits of a
VAE trained ``--epochs`` epochs, in blocks of ``--batch-size``, with the largest per-example
difference between the process counts reported. Reproduce: a small grid (VAE and DVAE α = 1
at two σ, two seeds, short training, a light evaluator; one run per rank at a time,
``--no-stack``). Each
command runs ``--repeats`` times, alternating, and the fastest is kept. Writes
``distributed.csv`` and ``distributed.md``.
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

import torch

import fastair
from bench.common import command_line, report_header, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COLUMNS = ("job", "processes", "threads_each", "seconds", "speedup", "repeats", "torch",
           "fastair")


def _command(args, procs):
    base = [sys.executable]
    if procs > 1:
        base += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    return base + ["-m", "fastair", *map(str, args)]


def _timed(args, procs, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=os.path.abspath(ROOT))
    start = time.perf_counter()
    done = subprocess.run(_command(args, procs), capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:2]))} on {procs} process(es) failed:\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def _per_example(run):
    with open(os.path.join(run, "iwsvi", "per_example.csv")) as f:
        return list(csv.DictReader(f))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=125, help="IW-SVI block size")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a tiny model and grid, one repeat")
    p.add_argument("--jobs", nargs="+", choices=("evaluate", "reproduce"),
                   default=["evaluate", "reproduce"], help="which commands to time")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    tiny = ["--hidden", "16", "--z-dim", "4"] if args.quick else []
    if args.quick:
        args.epochs, args.repeats = 1, 1
    rows, work = [], tempfile.mkdtemp(prefix="fastair-dist-")
    run = os.path.join(work, "vae")
    _timed(["train", "--epochs", args.epochs, "--run-dir", run, "--no-progress", *tiny], 1,
           args.threads)
    evaluate = ["evaluate", run, "--batch-size", args.batch_size, "--no-progress"] + (
        ["--max-steps", "5", "--k-eval", "20"] if args.quick else [])
    if args.quick:  # 2 runs, 1 epoch, a token evaluator
        grid = ["reproduce", "--models", "vae", "dvae-a1", "--sigmas", "0.2", "--seeds", "1",
                "--epochs", "1", "--k-eval", "20", "--max-steps", "5"]
    else:  # 6 runs
        grid = ["reproduce", "--models", "vae", "dvae-a1", "--sigmas", "0.2", "0.4", "--seeds",
                "2", "--epochs", "10", "--k-eval", "500", "--max-steps", "300"]
    grid += ["--no-stack", "--no-progress"]
    runs = 2 if args.quick else 6
    jobs = {"evaluate (IW-SVI, 500 digits)": lambda i, n: evaluate,
            f"reproduce ({runs} runs)": lambda i, n: grid + ["--out",
                                                             os.path.join(work, f"g{i}-{n}")]}
    jobs = {name: make for name, make in jobs.items() if name.split()[0] in args.jobs}
    reference, worst = None, 0.0
    for job, make in jobs.items():
        best = {}
        for i in range(args.repeats):
            for n in args.procs:
                seconds = _timed(make(i, n), n, max(1, args.threads // n))
                best[n] = min(best.get(n, float("inf")), seconds)
                if job.startswith("evaluate"):
                    values = [float(r["log_px"]) for r in _per_example(run)]
                    if reference is None:
                        reference = values
                    worst = max(worst, max(abs(a - b) for a, b in zip(values, reference)))
        for n in args.procs:
            rows.append({"job": job, "processes": n, "threads_each": max(1, args.threads // n),
                         "seconds": round(best[n], 2),
                         "speedup": round(best[args.procs[0]] / best[n], 3),
                         "repeats": args.repeats, "torch": torch.__version__,
                         "fastair": fastair.__version__})
    command = command_line("bench.bench_distributed", argv)
    lines = [report_header(f"torchrun scaling on this machine ({os.cpu_count()} cores)", command),
             f"Wall time of each command (start-up included; fastest of {args.repeats}), one "
             f"process with {args.threads} threads against N processes sharing them. "
             + ("The evaluation's per-example ln p(x) are the same bit for bit on every "
                "process count.\n" if worst == 0 else
                "The evaluation's per-example ln p(x) differ across the process counts by at "
                f"most {worst:.2e} nat (the threads per process change the matmuls' rounding; "
                "with the same threads they are equal bit for bit, "
                "tests/training/test_distributed.py).\n"),
             "| job | processes | threads each | seconds | speedup |", "|---|---|---|---|---|"]
    lines += [f"| {r['job']} | {r['processes']} | {r['threads_each']} | {r['seconds']:.1f} | "
              f"{r['speedup']:.2f}x |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_results(args.out, "distributed", rows, COLUMNS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
