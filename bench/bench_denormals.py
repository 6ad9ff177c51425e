"""Denormal floats: training epochs one by one, and the fused op on inputs that make denormals.

    python -m bench.bench_denormals --out bench/results/denormals_cpu      # about 3 minutes
    python -m bench.bench_denormals --epochs 3 --quick                     # a smoke run

Intel cores take a microcode assist of about a hundred cycles on every denormal operand or
result (AMD cores do not): a k-sample bound's normalized importance weights ``exp(log_w - lse)``
and their products with the logits' gradient produce them in bulk once a model has trained for
an epoch, and then every matrix product of the decoder's backward pass consumes them. A
benchmark that times one warmed-up epoch of a fresh model never sees it. This one records:

- **epochs**: every epoch of ``--epochs`` (default 6) from a fresh model, each timed on its own
  (the trainer's step: bound, backward, fused Adam over the 4000 mnist5k digits, batch 100,
  k = 64), for fastair and for the plain-torch VAE of ``bench_train.py``, fp32 with and without
  the process-wide flush (``torch.set_flush_denormal``) and bf16; each configuration runs in a
  fresh subprocess, so the flag reaches every thread of the pool (threads inherit the mode of
  the thread that creates them);
- **op**: ``iwae_bernoulli_gaussian`` forward and backward at k = 64, B = 100 on ordinary inputs
  and on inputs whose weights and gradients fall into the denormal range, fastair beside the
  same maths in plain torch, and a matrix product with denormal operands against one without:
  the ratio says whether this CPU family traps (about 1 on AMD) and whether fastair's kernels
  are immune to it (about 1 everywhere).

Writes ``denormals_cpu.csv`` (one row per measurement, with the CPU model and the commit) and
``denormals_cpu.md`` (the tables).
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch

import fastair
from bench.common import (
    command_line,
    device_description,
    git_commit,
    time_ms,
    version_string,
    write_results,
)

K = 64
COLUMNS = ("part", "impl", "precision", "flush", "case", "epoch", "ms", "ratio", "cpu", "commit",
           "versions")
CONFIGS = [  # (impl, precision, process-wide flush)
    ("fastair", "fp32", False), ("fastair", "fp32", True),
    ("torch", "fp32", False), ("torch", "fp32", True),
    ("fastair", "bf16", False), ("torch", "bf16", False),
]
TINY = torch.finfo(torch.float32).tiny


def epoch_times(impl, precision, epochs, quick=False):
    """Wall time (ms) of each of ``epochs`` epochs from a fresh model, in this process."""
    from bench.bench_train import _epoch_ms, make_model
    from fastair.data import load_dataset

    train_x = load_dataset("mnist5k").train
    if quick:
        train_x = train_x[:1000]
    model, loss_fn = make_model(impl, K, train_x)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    return [_epoch_ms(loss_fn, params, train_x, K, precision, optimizer=opt)
            for _ in range(epochs)]


def _denormal_inputs(B=100, D=784, Z=50, seed=0):
    """Inputs of ``iwae_bernoulli_gaussian`` at k = 64: ``"normal"`` (logits ``randn * 3`` per
    example, nearly the same for every sample, so that no weight is far below the largest) and
    ``"denormal"``: every pixel predicted right with ``|l|`` in [88, 100] (so ``x - sigmoid(l)``
    is about 1e-40) except for ``j`` pixels of sample ``j`` predicted wrong, so the log weights
    of one example differ by multiples of about 90 nats and the normalized weights of all
    samples but the best underflow through the denormal range."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, D, generator=g) < 0.3).float()
    z = torch.randn(K, B, Z, generator=g)
    mu, logvar = torch.randn(B, Z, generator=g) * 0.1, torch.randn(B, Z, generator=g) * 0.1
    normal = torch.randn(B, D, generator=g) * 3 + torch.randn(K, B, D, generator=g) * 0.01
    size = 88 + 12 * torch.rand(K, B, D, generator=g)
    sign = (2 * x - 1).expand(K, B, D).clone()
    for j in range(K):
        sign[j, :, :j % 8] *= -1  # sample j gets j % 8 wrong pixels
    return {"normal": (x, normal, z, mu, logvar), "denormal": (x, sign * size, z, mu, logvar)}


def _fwd_bwd(fn, x, logits, z, mu, logvar):
    leaves = [t.clone().requires_grad_(True) for t in (logits, z, mu, logvar)]

    def step():
        out = fn(x, *leaves)
        return torch.autograd.grad(out.sum(), leaves)
    return step


def _denormal_fraction(tensors):
    n = sum(t.numel() for t in tensors)
    return sum(int(((t != 0) & (t.abs() < TINY)).sum()) for t in tensors) / n


def op_rows():
    """fastair and eager torch on normal and denormal inputs, and the trap test of a GEMM."""
    from bench.common import eager_iwae_bernoulli_gaussian

    inputs = _denormal_inputs()
    rows = []
    for impl, fn in (("fastair", fastair.iwae_bernoulli_gaussian),
                     ("torch", eager_iwae_bernoulli_gaussian)):
        ms = {}
        for case, args in inputs.items():
            step = _fwd_bwd(fn, *args)
            ms[case] = time_ms(step, "cpu", target_s=1.0)[0]
            frac = _denormal_fraction(step())
            rows.append({"part": "op", "impl": impl, "precision": "fp32", "flush": False,
                         "case": f"{case} (denormal grads {frac:.2%})", "ms": round(ms[case], 3)})
        rows[-1]["ratio"] = round(ms["denormal"] / ms["normal"], 2)
    a = torch.randn(6400, 784)
    w = torch.randn(784, 200) * 0.05
    ms = {}
    for case, lhs in (("normal", a), ("denormal", a * 1e-39)):
        ms[case] = time_ms(lambda lhs=lhs: lhs @ w, "cpu", target_s=1.0)[0]
        rows.append({"part": "gemm", "impl": "torch", "precision": "fp32", "flush": False,
                     "case": f"[6400, 784] x [784, 200], {case} operand", "ms": round(ms[case], 3)})
    rows[-1]["ratio"] = round(ms["denormal"] / ms["normal"], 2)
    return rows


def _one(args):
    """A child process: one configuration's epochs as JSON on stdout."""
    impl, precision, flush = args.one.split(",")
    if flush == "1":
        torch.set_flush_denormal(True)  # before any parallel region: the pool inherits it
    times = epoch_times(impl, precision, args.epochs, args.quick)
    print(json.dumps(times))


def epoch_rows(epochs, quick):
    rows = []
    for impl, precision, flush in CONFIGS:
        cmd = [sys.executable, "-m", "bench.bench_denormals", "--one",
               f"{impl},{precision},{int(flush)}", "--epochs", str(epochs)] + (
                   ["--quick"] if quick else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        times = json.loads(out.stdout.strip().splitlines()[-1])
        for e, ms in enumerate(times, 1):
            rows.append({"part": "epoch", "impl": impl, "precision": precision, "flush": flush,
                         "case": f"k={K}", "epoch": e, "ms": round(ms, 1),
                         "ratio": round(ms / times[0], 2)})
        print(f"  {impl} {precision} flush={flush}: " + ", ".join(f"{t / 1e3:.2f}" for t in times)
              + " s", flush=True)
    return rows


def summary(rows, cpu, commit, command):
    lines = [f"# Denormal floats: epochs and op ({cpu}, commit {commit})", "",
             f"{version_string()}. Command: `{command}`.", "",
             "## Epochs (k = 64, mnist5k, batch 100, each epoch timed from a fresh model)", "",
             "| impl | precision | process flush | epochs (s) | later / first | median after "
             "the first (s) |", "|---|---|---|---|---|---|"]
    epochs = [r for r in rows if r["part"] == "epoch"]
    for impl, precision, flush in CONFIGS:
        ts = [r["ms"] / 1e3 for r in epochs
              if (r["impl"], r["precision"], r["flush"]) == (impl, precision, flush)]
        if not ts:
            continue
        later = ts[1:] or ts
        lines.append(f"| {impl} | {precision} | {'on' if flush else 'off'} | "
                     f"{', '.join(f'{t:.2f}' for t in ts)} | {max(later) / ts[0]:.2f}x (worst) | "
                     f"{statistics.median(later):.2f} |")
    lines += ["", "## The op and a matrix product on denormal inputs (no process flush)", "",
              "| part | impl | case | ms (median) | denormal / normal |", "|---|---|---|---|---|"]
    for r in rows:
        if r["part"] in ("op", "gemm"):
            ratio = r.get("ratio")
            lines.append(f"| {r['part']} | {r['impl']} | {r['case']} | {r['ms']:.3f} | "
                         f"{'' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=6, help="epochs per configuration (default 6)")
    p.add_argument("--quick", action="store_true", help="1000 digits per epoch (smoke run)")
    p.add_argument("--out", default=None, help="directory for denormals_cpu.csv and .md")
    p.add_argument("--skip-epochs", action="store_true", help="only the op benchmark")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs: expected an int >= 1, got {args.epochs}")
    if args.one:
        return _one(args)
    cpu, commit = device_description("cpu"), git_commit()
    print(f"bench_denormals: {cpu}, commit {commit}", flush=True)
    start = time.perf_counter()
    rows = [] if args.skip_epochs else epoch_rows(args.epochs, args.quick)
    rows += op_rows()
    for r in rows:
        r.update(cpu=cpu, commit=commit, versions=version_string())
    text = summary(rows, cpu, commit, command_line("bench.bench_denormals", argv))
    print(text)
    print(f"({math.ceil(time.perf_counter() - start)} s)")
    if args.out:
        write_results(args.out, "denormals_cpu", rows, COLUMNS, text)


if __name__ == "__main__":
    main()
