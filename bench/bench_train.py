#!/usr/bin/env python
"""Training epoch time: fastair's VAE (each precision, eager or with the step compiled) beside a
plain-torch VAE of the same architecture written here (eager, ``torch.compile``, bfloat16
autocast), on the same data in the same process.

    python -m bench.bench_train --out bench/results/train_cpu          # k = 1, 8, 64
    python -m bench.bench_train --ks 64 --epochs 2 --quick              # a smoke run
    python -m bench.bench_train --iwsvi --out bench/results/train_cpu  # IW-SVI per precision
    python -m bench.bench_train --stack --out bench/results/train_cpu  # bench.bench_stack

An epoch is the 40 Adam steps of batch 100 over the 4000 mnist5k training digits (the
trainer's step: the bound under the precision's autocast, the float32 loss, backward, fused
Adam), without the validation pass. Each configuration runs one warm-up epoch (compilation
included) and then ``--epochs`` timed epochs; the median and the spread are reported. Writes
``train_cpu.csv`` (a row per configuration) and ``train_cpu.md`` (the table with the ratios).
"""
import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import fastair
from bench.common import command_line, gemm_rates, report_header, write_markdown, write_results
from fastair.data import load_dataset
from fastair.models import VAE
from fastair.precision import autocast

LOG_2PI = math.log(2 * math.pi)
COLUMNS = ("k", "impl", "precision", "compiled", "epoch_ms_p50", "epoch_ms_min", "epoch_ms_max",
           "epochs", "torch", "fastair", "threads")


class PlainVAE(nn.Module):
    """The IWAE paper's MLP VAE as a user writes it in plain torch: 784-200-200 tanh encoder
    with linear mu/logvar heads (Z = 50), 50-200-200-784 tanh decoder, the k-sample bound by
    ``binary_cross_entropy_with_logits`` and ``logsumexp``."""

    def __init__(self, x_dim=784, z_dim=50, hidden=200):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                   nn.Tanh())
        self.mu, self.logvar = nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(),
                                     nn.Linear(hidden, hidden), nn.Tanh(),
                                     nn.Linear(hidden, x_dim))

    def loss(self, x, k):
        h = self.trunk(x)
        mu, logvar = self.mu(h), self.logvar(h)
        eps = torch.randn((k,) + tuple(mu.shape), dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits).to(logits.dtype),
                                                     reduction="none").sum(-1)
        log_pz = -0.5 * (z * z + LOG_2PI).sum(-1)
        log_qz = -0.5 * (eps * eps + logvar + LOG_2PI).sum(-1)
        log_w = (log_px + log_pz - log_qz).float()
        return -(torch.logsumexp(log_w, 0) - math.log(k)).mean()


def _fastair_loss(model):
    return lambda x, k: -model.bound(x, k).float().mean()


def _epoch_ms(loss_fn, params, train_x, k, precision, batch_size=100, optimizer=None):
    """One epoch of Adam steps (``optimizer``, or a fresh Adam); returns its wall time in ms."""
    opt = optimizer or torch.optim.Adam(params, lr=1e-3, fused=True)
    start = time.perf_counter()
    for i in range(0, len(train_x), batch_size):
        xb = train_x[i:i + batch_size]
        with autocast("cpu", precision):
            loss = loss_fn(xb, k)
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()
    return (time.perf_counter() - start) * 1e3


def make_model(impl, k, train_x):
    """``(model, loss_fn)`` of ``impl`` (``"fastair"`` or ``"torch"``) after
    ``torch.manual_seed(0)``, in train mode; ``loss_fn(x, k)`` is the step's loss."""
    torch.manual_seed(0)
    if impl == "fastair":
        model = VAE(k=k)
        model.init_decoder_bias(train_x)
        loss_fn = _fastair_loss(model)
    else:
        model = PlainVAE()
        loss_fn = model.loss
    return model.train(), loss_fn


def run_config(impl, precision, compiled, k, train_x, epochs):
    torch._dynamo.reset()
    model, loss_fn = make_model(impl, k, train_x)
    if compiled:
        loss_fn = torch.compile(loss_fn, dynamic=False)
    params = list(model.parameters())
    _epoch_ms(loss_fn, params, train_x, k, precision)  # warm-up (and compilation)
    times = [_epoch_ms(loss_fn, params, train_x, k, precision) for _ in range(epochs)]
    return {"k": k, "impl": impl, "precision": precision, "compiled": compiled,
            "epoch_ms_p50": round(statistics.median(times), 1),
            "epoch_ms_min": round(min(times), 1), "epoch_ms_max": round(max(times), 1),
            "epochs": epochs, "torch": torch.__version__, "fastair": fastair.__version__,
            "threads": torch.get_num_threads()}


CONFIGS = [("fastair", "fp32", False), ("fastair", "bf16", False), ("fastair", "fp32", True),
           ("fastair", "bf16", True), ("torch", "fp32", False), ("torch", "fp32", True),
           ("torch", "bf16", False), ("torch", "bf16", True)]


def _label(row):
    return f"{row['impl']} {row['precision']}{' compiled' if row['compiled'] else ''}"


def summary(rows):
    """A markdown table per k with each configuration's epoch time and two ratios: against
    fastair fp32 eager and against plain torch bf16 autocast (eager)."""
    out = []
    for k in sorted({r["k"] for r in rows}):
        group = [r for r in rows if r["k"] == k]
        by = {(r["impl"], r["precision"], r["compiled"]): r["epoch_ms_p50"] for r in group}
        base = by.get(("fastair", "fp32", False))
        torch_bf16 = by.get(("torch", "bf16", False))
        out += [f"\n### k = {k}\n", "| configuration | epoch (ms, median) | min-max | "
                "fastair fp32 / this | torch bf16 autocast / this |", "|---|---|---|---|---|"]
        for r in group:
            t = r["epoch_ms_p50"]
            out.append(f"| {_label(r)} | {t:.0f} | {r['epoch_ms_min']:.0f}-{r['epoch_ms_max']:.0f}"
                       f" | {base / t:.2f}x | {torch_bf16 / t:.2f}x |" if base and torch_bf16
                       else f"| {_label(r)} | {t:.0f} | | | |")
    return "\n".join(out) + "\n"


def iwsvi_precision(epochs=60, max_steps=300, k_eval=1000):
    """IW-SVI on the 500 mnist5k test digits of a VAE trained ``epochs`` epochs, in fp32 and
    bf16: the time of each and the per-example difference of ln p(x) (mean and largest)."""
    from fastair.evaluation import iwsvi_log_likelihood
    from fastair.training import Trainer, seed_everything
    data = load_dataset("mnist5k")
    seed_everything(0)
    model = VAE(k=1)
    Trainer(model, data.train, data.valid, None, None, epochs=epochs, progress=False,
            patience=0).fit()
    out = {}
    for precision in ("fp32", "bf16"):
        start = time.perf_counter()
        result = iwsvi_log_likelihood(model, data.test, max_steps=max_steps, k_eval=k_eval,
                                      progress=False, warn=False, precision=precision)
        out[precision] = (time.perf_counter() - start, result)
    start = time.perf_counter()  # the noise floor: fp32 again, other draws
    other = iwsvi_log_likelihood(model, data.test, max_steps=max_steps, k_eval=k_eval,
                                 progress=False, warn=False, seed=1)
    out["fp32, seed 1"] = (time.perf_counter() - start, other)
    diff = (out["bf16"][1].log_px - out["fp32"][1].log_px).abs()
    floor = (other.log_px - out["fp32"][1].log_px).abs()
    se = out["fp32"][1].se.mean().item()
    return (f"A VAE (k = 1) trained {epochs} epochs; IW-SVI on the "
            f"500 mnist5k test digits with max_steps {max_steps}, k_eval {k_eval}.\n\n"
            "| precision | time (s) | -ln p(x) |\n|---|---|---|\n"
            + "".join(f"| {p} | {t:.1f} | {-r.log_px.mean().item():.3f} |\n"
                      for p, (t, r) in out.items())
            + f"\nbf16 is {out['fp32'][0] / out['bf16'][0]:.2f}x faster; per example |bf16 - fp32| "
            f"is {diff.mean().item():.3f} nat on average and {diff.max().item():.3f} at most (the "
            f"fp32 estimates' own standard error averages {se:.3f} nat). Two fp32 runs with "
            f"other draws (seed 0 and 1) differ by {floor.mean().item():.3f} nat on average and "
            f"{floor.max().item():.3f} at most: the per-example noise floor of the evaluator "
            "at these settings. fp32 stays the default unless the mean difference is under "
            "0.05 nat.\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per configuration")
    p.add_argument("--quick", action="store_true", help="eager configurations only")
    p.add_argument("--out", default=None, help="directory for train_cpu.csv and train_cpu.md")
    p.add_argument("--iwsvi", action="store_true",
                   help="only IW-SVI per precision (writes iwsvi_precision.md)")
    p.add_argument("--stack", action="store_true",
                   help="only the grid stacked against separate runs (bench.bench_stack)")
    given = list(argv if argv is not None else sys.argv[1:])
    if "--stack" in given:  # every other option is bench_stack's (its --ks, --epochs, --out)
        from bench import bench_stack
        return bench_stack.main([a for a in given if a != "--stack"])
    args = p.parse_args(argv)
    command = command_line("bench.bench_train", argv)
    if args.iwsvi:
        text = (report_header("IW-SVI time per precision", command) + "\n"
                + iwsvi_precision())
        print(text)
        if args.out:
            write_markdown(args.out, "iwsvi_precision", text)
        return 0
    train_x = load_dataset("mnist5k").train
    rates = gemm_rates()
    configs = [c for c in CONFIGS if not (args.quick and c[2])]
    rows = []
    for k in args.ks:
        for impl, precision, compiled in configs:
            row = run_config(impl, precision, compiled, k, train_x, args.epochs)
            rows.append(row)
            print(f"k={k:<3} {_label(row):<24} {row['epoch_ms_p50']:8.0f} ms "
                  f"({row['epoch_ms_min']:.0f}-{row['epoch_ms_max']:.0f})", flush=True)
    text = (report_header("Training epoch time, mnist5k (40 steps of batch 100)", command)
            + "\nGEMM floor in this run ([6400, 200] x [200, 784]): "
            f"{rates['fp32']:.0f} GFLOP/s in float32, {rates['bf16']:.0f} GFLOP/s in bfloat16 "
            f"({rates['bf16'] / rates['fp32']:.2f}x)"
            "; at k = 64 the step is mostly these products, so bf16 can be at most about that "
            "much faster than fp32.\n" + summary(rows))
    print(text)
    if args.out:
        write_results(args.out, "train_cpu", rows, COLUMNS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
