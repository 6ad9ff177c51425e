#!/usr/bin/env python
"""Signal-to-noise ratio of the gradient estimators against k (Rainforth et al., 2018; Tucker
et al., 2019): for a VAE trained on mnist5k, the SNR ``|E[g]| / std(g)`` of each parameter's
gradient over ``--repeats`` fresh draws on one fixed minibatch, averaged over the encoder's and
the decoder's parameters, for k in ``--ks`` and each estimator, with the slope of log SNR
against log k beside the expected one (IWAE: encoder -1/2, decoder +1/2; DReG: both +1/2).

    python bench/bench_snr.py --out bench/results/snr        # snr.csv, snr.md, snr.png
    python bench/bench_snr.py --quick                         # a smoke run

The model: ``fastair.models.VAE`` (k = 1, the paper's MLP) trained ``--epochs`` epochs by the
real trainer with seed 0; the minibatch: the first ``--batch`` test digits. Gradients of the
mean bound over the batch, accumulated per parameter in float64 (Welford), so memory does not
grow with the repeats.
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import fastair  # noqa: E402
from fastair.data import load_dataset  # noqa: E402
from fastair.io import atomic_save_figure  # noqa: E402
from fastair.models import VAE  # noqa: E402
from fastair.nn.estimators import get_estimator  # noqa: E402

COLUMNS = ("estimator", "part", "k", "snr", "repeats", "batch", "epochs", "torch", "fastair")
EXPECTED = {("iwae", "encoder"): -0.5, ("iwae", "decoder"): 0.5, ("dreg", "encoder"): 0.5,
            ("dreg", "decoder"): 0.5, ("stl", "decoder"): 0.5}


def trained_model(epochs, seed=0, z_dim=50):
    from fastair.training import Trainer, seed_everything
    data = load_dataset("mnist5k")
    seed_everything(seed)
    model = VAE(k=1, z_dim=z_dim)
    Trainer(model, data.train, data.valid, None, None, seed=seed, epochs=epochs, patience=0,
            progress=False).fit()
    return model, data


def snr(model, x, estimator, k, repeats, seed=0):
    """``{"encoder": mean SNR, "decoder": mean SNR}`` of ``estimator``'s gradient at ``k``."""
    model.train()
    model.estimator, model._estimate = estimator, get_estimator(estimator)
    params = {n: p for n, p in model.named_parameters()}
    mean = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    m2 = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    gen = torch.Generator().manual_seed(seed)
    for r in range(1, repeats + 1):
        model.zero_grad(set_to_none=True)
        model.bound(x, k, generator=gen).mean().backward()
        for n, p in params.items():
            g = p.grad.double()
            delta = g - mean[n]
            mean[n] += delta / r
            m2[n] += delta * (g - mean[n])
    out = {}
    for part in ("encoder", "decoder"):
        ratios = []
        for n in params:
            if n.startswith(part):
                std = (m2[n] / (repeats - 1)).sqrt()
                keep = std > 0
                ratios.append((mean[n][keep].abs() / std[keep]).flatten())
        out[part] = torch.cat(ratios).mean().item()
    return out


@torch.no_grad()
def effective_samples(model, x, k, seed=0):
    """Mean over the batch of the importance weights' effective sample size
    ``1 / sum_k w~_k^2`` of ``k`` draws from the encoder: the asymptotic rates need it near k."""
    model.eval()
    log_w = model.log_weights(x, k, generator=torch.Generator().manual_seed(seed))
    model.train()
    return (1.0 / torch.softmax(log_w, 0).pow(2).sum(0)).mean().item()


def slope(ks, values):
    """Least-squares slope of log value against log k."""
    lx = [math.log(k) for k in ks]
    ly = [math.log(v) for v in values]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return (sum((a - mx) * (b - my) for a, b in zip(lx, ly))
            / sum((a - mx) ** 2 for a in lx))


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, part in zip(axes, ("encoder", "decoder")):
        for est in sorted({r["estimator"] for r in rows if r["part"] != "ESS"}):
            pts = [(r["k"], r["snr"]) for r in rows if r["estimator"] == est and r["part"] == part]
            ax.plot(*zip(*pts), marker="o", label=est)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{part} gradient")
        ax.set_xlabel("k")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("mean SNR |E g| / std g")
    axes[0].legend()
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=120)
    plt.close(fig)


def summary(rows, args, command):
    ks = sorted({r["k"] for r in rows})
    lines = [f"# Gradient SNR against k, mnist5k, CPU, torch {torch.__version__}, fastair "
             f"{fastair.__version__}\n", f"Command: `{command}`\n",
             f"A VAE (k = 1, Z = {args.z_dim}) trained {args.epochs} epochs (seed 0); the first "
             f"{args.batch} test "
             f"digits; {args.repeats} gradient estimates per point (draws from seed 0). SNR: "
             "|mean| / std per parameter over the estimates, averaged over the encoder's "
             "(decoder's) parameters.\n",
             "| estimator | part | " + " | ".join(f"k = {k}" for k in ks)
             + " | slope (log-log) | expected |",
             "|---|---|" + "---|" * len(ks) + "---|---|"]
    for est in ("iwae", "stl", "dreg"):
        for part in ("encoder", "decoder"):
            vals = [r["snr"] for k in ks for r in rows
                    if r["estimator"] == est and r["part"] == part and r["k"] == k]
            if len(vals) != len(ks):
                continue
            exp = EXPECTED.get((est, part))
            lines.append(f"| {est} | {part} | " + " | ".join(f"{v:.4f}" for v in vals)
                         + f" | {slope(ks, vals):+.2f} | "
                         + ("" if exp is None else f"{exp:+.1f}") + " |")
    ess = [r["snr"] for k in ks for r in rows if r["part"] == "ESS" and r["k"] == k]
    if len(ess) == len(ks):
        lines.append("| (effective sample size) | ESS | " + " | ".join(f"{v:.1f}" for v in ess)
                     + f" | {slope(ks, ess):+.2f} | +1.0 |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    p.add_argument("--estimators", nargs="+", default=["iwae", "stl", "dreg"])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--z-dim", type=int, default=50,
                   help="latent size (a small one brings q closer to the posterior)")
    p.add_argument("--name", default="snr", help="file stem of the outputs")
    p.add_argument("--quick", action="store_true", help="k in {1, 4}, 10 repeats, 1 epoch")
    p.add_argument("--out", default=None, help="directory for snr.csv, snr.md and snr.png")
    args = p.parse_args(argv)
    if args.quick:
        args.ks, args.repeats, args.epochs = [1, 4], 10, 1
    model, data = trained_model(args.epochs, z_dim=args.z_dim)
    x = data.test[:args.batch]
    rows = []
    for est in args.estimators:
        for k in args.ks:
            got = snr(model, x, est, k, args.repeats)
            for part, value in got.items():
                rows.append({"estimator": est, "part": part, "k": k, "snr": value,
                             "repeats": args.repeats, "batch": args.batch,
                             "epochs": args.epochs, "torch": torch.__version__,
                             "fastair": fastair.__version__})
            print(est, k, got, flush=True)
    for k in args.ks:
        rows.append({"estimator": "-", "part": "ESS", "k": k,
                     "snr": effective_samples(model, x, k), "repeats": "", "batch": args.batch,
                     "epochs": args.epochs, "torch": torch.__version__,
                     "fastair": fastair.__version__})
    command = "python bench/bench_snr.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = summary(rows, args, command.strip())
    print(text)
    if args.out:
        from bench.bench_train import write_results
        write_results(args.out, args.name, rows, COLUMNS, text)
        plot(rows, os.path.join(args.out, f"{args.name}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
