"""IW-SVI speed at equal accuracy: seconds per digit and the error per digit against a long
reference run, for fastair's VAE and for a user's own VAE class of the same size.

    python -m bench.bench_iwsvi_accuracy --out bench/results/iwsvi_accuracy     # ~10 minutes
    python -m bench.bench_iwsvi_accuracy --quick                                # a smoke run

Models: ``fastair.models.preset("vae")`` and ``UserVAE`` below (a plain ``nn.Module`` with
``encode`` and ``decode_logits`` only, evaluated through the generic path of the evaluation
protocol), both 784-200-200-50 tanh, trained ``--epochs`` on mnist5k with Adam (seed 0).
Digits: the first ``--n`` mnist5k test digits. For each model:

- **reference**: ``iwsvi_log_likelihood`` in fp32 with the fit run to a tight tolerance
  (``tol=0.001, patience=5, max_steps=5000``) and ``k_eval = 100 000``, another seed; cached in
  ``--out`` (``reference_<model>.pt``) with the settings that made it;
- **configurations**, each timed ``--repeats`` times alternately (the median is reported):
  ``before``: the defaults before this benchmark existed, named explicitly (``elbo_samples =
  5000``, the fit and the estimates in fp32, no adaptive stop); ``defaults``:
  ``iwsvi_log_likelihood(model, x)`` with today's defaults. Each row gives seconds per digit,
  the mean absolute difference per digit to the reference (MAD), the mean signed difference, the
  mean standard error, steps, and for
  ``defaults`` the paired difference of the absolute errors to ``before`` with its standard
  error over digits (negative: ``defaults`` is closer to the reference).

Writes ``iwsvi_accuracy.csv`` and ``iwsvi_accuracy.md`` (with the CPU, the commit and the command).
"""
import argparse
import os
import statistics
import time

import torch
from torch import nn

from bench.common import device_description, git_commit, version_string, write_results
from fastair.data import load_dataset
from fastair.evaluation import iwsvi_log_likelihood

REFERENCE = dict(tol=0.001, patience=5, max_steps=5000, k_eval=100_000, elbo_samples=1,
                 seed=12345, fit_precision="fp32", precision="fp32")
CONFIGS = {
    "before": dict(elbo_samples=5000, fit_precision="fp32", precision="fp32", se_target=None),
    "defaults": dict(),
}
COLUMNS = ("model", "config", "n", "s_per_digit", "mad", "mean_diff", "paired_vs_before",
           "paired_se", "mean_se", "mean_steps", "ratio_time", "cpu", "commit", "versions")


class UserVAE(nn.Module):
    """A VAE as a user writes it: its own class, ``encode`` and ``decode_logits`` only."""

    def __init__(self, x_dim=784, hidden=200, z_dim=50):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(),
                                 nn.Linear(hidden, hidden), nn.Tanh())
        self.mu, self.logvar = nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, x_dim))

    def encode(self, x):
        h = self.enc(x)
        return self.mu(h), self.logvar(h)

    def decode_logits(self, z):
        return self.dec(z)


def train_models(epochs, train_x):
    """``{"fastair": VAE, "user": UserVAE}``, each trained ``epochs`` on ``train_x`` (ELBO)."""
    from fastair.models import preset
    from fastair.nn import IWAELoss

    torch.manual_seed(0)
    fa = preset("vae")
    fa.init_decoder_bias(train_x)
    user = UserVAE()
    loss = IWAELoss(k=1)
    for model, objective in ((fa, lambda m, xb: -m.bound(xb).mean()),
                             (user, lambda m, xb: loss(xb, *m.encode(xb), m.decode_logits))):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for _ in range(epochs):
            for xb in train_x[torch.randperm(len(train_x))].split(100):
                opt.zero_grad(set_to_none=True)
                objective(model, xb).backward()
                opt.step()
        model.eval()
    return {"fastair": fa, "user": user}


def reference(name, model, x, out):
    """The long reference run's ``log_px`` ``[n]`` (cached in ``out``)."""
    path = os.path.join(out, f"reference_{name}.pt") if out else None
    key = {"n": len(x), **REFERENCE,
           "weights": float(sum(p.detach().double().sum() for p in model.parameters()))}
    if path and os.path.exists(path):
        saved = torch.load(path)
        if saved["key"] == key:
            return saved["log_px"]
    start = time.perf_counter()
    r = iwsvi_log_likelihood(model, x, progress=False, warn=False, **REFERENCE)
    print(f"  reference for {name}: {time.perf_counter() - start:.0f} s, mean SE "
          f"{r.se.mean():.3f}", flush=True)
    if path:
        os.makedirs(out, exist_ok=True)
        torch.save({"key": key, "log_px": r.log_px}, path)
    return r.log_px


def measure(models, x, repeats, out):
    rows = []
    for name, model in models.items():
        ref = reference(name, model, x, out)
        times, results = {c: [] for c in CONFIGS}, {}
        for _ in range(repeats):
            for config, settings in CONFIGS.items():
                start = time.perf_counter()
                results[config] = iwsvi_log_likelihood(model, x, progress=False, warn=False,
                                                       **settings)
                times[config].append(time.perf_counter() - start)
        base = (results["before"].log_px - ref).abs()
        for config, r in results.items():
            err = r.log_px - ref
            paired = err.abs() - base
            s = statistics.median(times[config]) / len(x)
            rows.append({"model": name, "config": config, "n": len(x),
                         "s_per_digit": round(s, 5), "mad": round(err.abs().mean().item(), 4),
                         "mean_diff": round(err.mean().item(), 4),
                         "paired_vs_before": round(paired.mean().item(), 4),
                         "paired_se": round((paired.std() / len(x) ** 0.5).item(), 4),
                         "mean_se": round(r.se.mean().item(), 4),
                         "mean_steps": round(r.steps.double().mean().item(), 1)})
        t0 = rows[-len(results)]["s_per_digit"]
        for r in rows[-len(results):]:
            r["ratio_time"] = round(t0 / r["s_per_digit"], 2)
            print(f"  {name} {r['config']}: {1e3 * r['s_per_digit']:.1f} ms/digit "
                  f"({r['ratio_time']:.2f}x), MAD {r['mad']:.4f}, paired "
                  f"{r['paired_vs_before']:+.4f} +- {r['paired_se']:.4f}", flush=True)
    return rows


def summary(rows, cpu, commit, args):
    lines = [f"# IW-SVI: seconds per digit at equal accuracy ({cpu}, commit {commit})", "",
             f"{version_string()}. Command: `python -m bench.bench_iwsvi_accuracy --n {args.n} "
             f"--epochs {args.epochs} --repeats {args.repeats}"
             f"{f' --threads {args.threads}' if args.threads else ''}`.", "",
             f"Reference: fp32, {REFERENCE}. `paired`: mean over digits of |error of the row| - "
             "|error of before|, with its standard error (SE, over digits); negative means "
             "closer to the reference.", "",
             "| model | config | ms per digit | speed-up | MAD (nats) | mean diff | paired vs "
             "before (SE) | mean SE of the estimate | mean steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['config']} | {1e3 * r['s_per_digit']:.1f} | "
                     f"{r['ratio_time']:.2f}x | {r['mad']:.4f} | {r['mean_diff']:+.4f} | "
                     f"{r['paired_vs_before']:+.4f} ({r['paired_se']:.4f}) | {r['mean_se']:.4f} | "
                     f"{r['mean_steps']:.0f} |")
    lines += ["", "Settings of each configuration: " + "; ".join(
        f"`{c}`: {s or 'the defaults of iwsvi_log_likelihood'}" for c, s in CONFIGS.items())]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500, help="test digits (default 500)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per config (default 2)")
    p.add_argument("--out", default=None, help="directory for the CSV, the table and the "
                   "cached references")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--quick", action="store_true", help="50 digits, 5 epochs, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.epochs, args.repeats = 50, 5, 1
    if min(args.n, args.epochs, args.repeats) < 1:
        p.error("--n, --epochs and --repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu, commit = device_description("cpu"), git_commit()
    print(f"bench_iwsvi_accuracy: {cpu}, commit {commit}", flush=True)
    data = load_dataset("mnist5k")
    models = train_models(args.epochs, data.train)
    rows = measure(models, data.test[:args.n], args.repeats, args.out)
    for r in rows:
        r.update(cpu=cpu, commit=commit, versions=version_string())
    text = summary(rows, cpu, commit, args)
    print(text)
    if args.out:
        write_results(args.out, "iwsvi_accuracy", rows, COLUMNS, text)


if __name__ == "__main__":
    main()
