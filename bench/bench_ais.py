"""The cost of AIS against IW-SVI at equal error, on a model whose ``ln p(x)`` is known.

    python -m bench.bench_ais --out bench/results/ais_cost          # a few minutes
    python -m bench.bench_ais --quick                               # a smoke run

Model: a VAE of 2-d latent (``QuadratureVAE``: decoder 2-64-64-``--dim`` tanh with its output
weights scaled by 4, so that each posterior is narrow and far from the prior; a random encoder),
float32; ``--n`` digits simulated from it; the truth ``ln p(x)`` by
:func:`fastair.evaluation.quadrature_log_likelihood` (float64, a 1201 x 1201 grid). Each
configuration runs once untimed on 4 digits, then once timed on all digits:

- ``iwsvi``: :func:`fastair.evaluation.iwsvi_log_likelihood` in fp32 with its defaults and
  ``k_eval`` in :data:`K_EVALS` (the fit of ``q`` included in the time);
- ``ais-fitted`` / ``ais-prior``: :func:`fastair.evaluation.ais_log_likelihood` in fp32 from
  IW-SVI's fitted ``q`` (fitted inside the call) or from the prior, ``steps`` in :data:`STEPS`,
  16 chains.

Each row: seconds per digit, the mean absolute error against the truth (MAE) and the mean signed
error, both in nats. The summary pairs each IW-SVI row with the cheapest AIS row of no larger MAE.
Writes ``ais_cost.csv`` and ``ais_cost.md`` to ``--out``.
"""
import argparse
import sys
import time

import torch
from torch import nn

from bench.common import device_description, git_commit, version_string, write_results
from fastair.evaluation import ais_log_likelihood, iwsvi_log_likelihood, quadrature_log_likelihood

K_EVALS = (100, 1000, 5000)
STEPS = (10, 30, 100, 300, 1000)
CHAINS = 16
COLUMNS = ("method", "setting", "n", "s_per_digit", "mae", "mean_error", "cpu", "commit",
           "versions")


class QuadratureVAE(nn.Module):
    """A VAE of 2-d latent with a sharp decoder: the benchmark's model of known ``ln p(x)``."""

    def __init__(self, dim=100, hidden=64, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.enc = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 4))
        self.dec = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, dim))
        with torch.no_grad():
            self.dec[-1].weight.mul_(4.0)

    def encode(self, x):
        return self.enc(x).chunk(2, -1)

    def decode_logits(self, z):
        return self.dec(z)


def simulate(model, n, seed):
    """``n`` binary digits ``x ~ p(x|z)``, ``z ~ N(0, I)`` ``[n, dim]`` float32."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        p = torch.sigmoid(model.decode_logits(torch.randn(n, 2, generator=g)))
    return (torch.rand(p.shape, generator=g) < p).float()


def configurations(quick):
    k_evals, steps = ((100, 1000), (10, 100)) if quick else (K_EVALS, STEPS)
    out = [("iwsvi", f"k_eval={k}", lambda m, x, k=k: iwsvi_log_likelihood(
        m, x, k_eval=k, precision="fp32", fit_precision="fp32", progress=False, warn=False))
        for k in k_evals]
    for init in ("fitted", "prior"):
        out += [(f"ais-{init}", f"steps={s}", lambda m, x, s=s, init=init: ais_log_likelihood(
            m, x, steps=s, chains=CHAINS, init=init, precision="fp32", progress=False,
            warn=False)) for s in steps]
    return out


def measure(model, x, truth, quick):
    rows = []
    for method, setting, run in configurations(quick):
        run(model, x[:4])
        start = time.perf_counter()
        r = run(model, x)
        seconds = time.perf_counter() - start
        err = r.log_px.double() - truth
        rows.append({"method": method, "setting": setting, "n": len(x),
                     "s_per_digit": round(seconds / len(x), 5),
                     "mae": round(err.abs().mean().item(), 4),
                     "mean_error": round(err.mean().item(), 4)})
        print(f"  {method} {setting}: {1e3 * seconds / len(x):.1f} ms/digit, MAE "
              f"{rows[-1]['mae']:.4f}", flush=True)
    return rows


def summary(rows, cpu, commit, command):
    lines = [f"# AIS against IW-SVI at equal error ({cpu}, commit {commit})", "",
             f"{version_string()}. Command: `{command}`. Truth: quadrature on a 1201 x 1201 "
             "grid; errors in nats.", "",
             "| method | setting | ms per digit | MAE | mean error |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['setting']} | {1e3 * r['s_per_digit']:.1f} | "
                     f"{r['mae']:.4f} | {r['mean_error']:+.4f} |")
    lines += ["", "## At equal error", "",
              "The cheapest AIS setting whose MAE is no larger than each IW-SVI row's:", "",
              "| IW-SVI | its MAE | its ms/digit | AIS | AIS MAE | AIS ms/digit | "
              "AIS / IW-SVI time |",
              "|---|---|---|---|---|---|---|"]
    ais = [r for r in rows if r["method"].startswith("ais")]
    for r in (r for r in rows if r["method"] == "iwsvi"):
        ok = [a for a in ais if a["mae"] <= r["mae"]]
        if not ok:
            lines.append(f"| {r['setting']} | {r['mae']:.4f} | {1e3 * r['s_per_digit']:.1f} | "
                         "none reaches it | | | |")
            continue
        a = min(ok, key=lambda a: a["s_per_digit"])
        lines.append(f"| {r['setting']} | {r['mae']:.4f} | {1e3 * r['s_per_digit']:.1f} | "
                     f"{a['method']} {a['setting']} | {a['mae']:.4f} | "
                     f"{1e3 * a['s_per_digit']:.1f} | {a['s_per_digit'] / r['s_per_digit']:.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="simulated digits (default 100)")
    p.add_argument("--dim", type=int, default=100, help="pixels per digit (default 100)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", default=None, help="directory for ais_cost.csv and ais_cost.md")
    p.add_argument("--quick", action="store_true", help="10 digits, two settings per method")
    args = p.parse_args(argv)
    if args.quick:
        args.n = 10
    if args.n < 4 or args.dim < 1:
        p.error("--n must be >= 4 and --dim >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    cpu, commit = device_description("cpu"), git_commit()
    model = QuadratureVAE(args.dim)
    for q in model.parameters():
        q.requires_grad_(False)
    x = simulate(model, args.n, seed=1)
    truth, _ = quadrature_log_likelihood(model.double(), x.double())
    model.float()
    rows = measure(model, x, truth, args.quick)
    for r in rows:
        r.update(cpu=cpu, commit=commit, versions=version_string())
    command = "python -m bench.bench_ais " + " ".join(sys.argv[1:] if argv is None else argv)
    text = summary(rows, cpu, commit, command.strip())
    print(text)
    if args.out:
        write_results(args.out, "ais_cost", rows, COLUMNS, text)


if __name__ == "__main__":
    main()
