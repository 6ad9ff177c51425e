#!/usr/bin/env python
"""Signal-to-noise ratio of the gradient estimators against k (Rainforth et al., 2018; Tucker
et al., 2019): for a VAE trained on mnist5k, the SNR ``|E[g]| / std(g)`` of each parameter's
gradient over ``--repeats`` fresh draws on one fixed minibatch, averaged over the encoder's and
the decoder's parameters, for k in ``--ks`` and each estimator, with the slope of log SNR
against log k beside the expected one (IWAE: encoder -1/2, decoder +1/2; DReG: both +1/2).

    python -m experiments.snr.snr --out experiments/snr        # snr.csv, snr.md, snr.png
    python -m experiments.snr.snr --quick                       # a smoke run
    python -m experiments.snr.snr --model toy --ks 1 4 16 64 256 1024 --repeats 2000 \
        --name snr_toy --out experiments/snr   # the linear-Gaussian check (snr_toy.py)

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

import fastair
from bench.common import command_line, write_results
from fastair.data import load_dataset
from fastair.io import atomic_save_figure
from fastair.models import VAE
from fastair.nn.estimators import get_estimator

PARTS = ("encoder", "decoder", "encoder-vector", "decoder-vector")
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
    """The SNR of ``estimator``'s gradient at ``k``, two ways, for the encoder and the decoder:

    - ``"encoder"``, ``"decoder"``: ``|mean| / std`` per parameter, averaged over the part's
      parameters (Rainforth et al.'s per-parameter SNR); a parameter whose true mean is 0 still
      reads about :func:`floor` ``(repeats)``.
    - ``"encoder-vector"``, ``"decoder-vector"``: ``|E g| / sqrt(E |g - E g|^2)`` of the part's
      whole gradient vector, with ``|E g|^2`` estimated without bias as ``|mean|^2 - tr S /
      repeats`` (S the sample covariance), so it has no such floor; NaN where that estimate is
      under two of its standard errors (the repeats do not resolve the mean).
    """
    model.train()
    model.estimator = estimator
    if hasattr(model, "_estimate"):  # a fastair VAE keeps the function too
        model._estimate = get_estimator(estimator)
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
        names = [n for n in params if n.startswith(part)]
        ratios, sq_mean, trace, noise = [], 0.0, 0.0, 0.0
        for n in names:
            var = m2[n] / (repeats - 1)
            keep = var > 0
            ratios.append((mean[n][keep].abs() / var[keep].sqrt()).flatten())
            sq_mean += mean[n].pow(2).sum().item()
            trace += var.sum().item()
            # variance of the unbiased |E g|^2, treating the coordinates as independent
            noise += (4 * mean[n].pow(2) * var / repeats
                      + 2 * var.pow(2) / repeats ** 2).sum().item()
        out[part] = torch.cat(ratios).mean().item()
        signal = sq_mean - trace / repeats
        out[f"{part}-vector"] = (math.sqrt(signal / trace) if signal > 2 * math.sqrt(noise)
                                 else math.nan)  # not resolved by this many repeats
    return out


@torch.no_grad()
def effective_samples(model, x, k, seed=0):
    """Mean over the batch of the importance weights' effective sample size
    ``1 / sum_k w~_k^2`` of ``k`` draws from the encoder: the asymptotic rates need it near k."""
    model.eval()
    log_w = model.log_weights(x, k, generator=torch.Generator().manual_seed(seed))
    model.train()
    return (1.0 / torch.softmax(log_w, 0).pow(2).sum(0)).mean().item()


def slope(ks, values, last=None):
    """Least-squares slope of log value against log k over the finite values (the ``last``
    of them where given); NaN with fewer than two."""
    pts = [(k, v) for k, v in zip(ks, values) if math.isfinite(v) and v > 0]
    pts = pts[-last:] if last else pts
    if len(pts) < 2:
        return math.nan
    ks, values = zip(*pts)
    lx = [math.log(k) for k in ks]
    ly = [math.log(v) for v in values]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return (sum((a - mx) * (b - my) for a, b in zip(lx, ly))
            / sum((a - mx) ** 2 for a in lx))


def floor(repeats):
    """The SNR a parameter with zero true mean gradient reads on average: ``E|mean| / std``
    of ``repeats`` standard normals, about ``sqrt(2 / pi) / sqrt(repeats)``."""
    return math.sqrt(2 / math.pi / repeats)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, part in zip(axes, ("encoder", "decoder")):
        for i, est in enumerate(sorted({r["estimator"] for r in rows if r["part"] != "ESS"})):
            for suffix, style in (("", "-"), ("-vector", "--")):
                pts = [(r["k"], r["snr"]) for r in rows
                       if r["estimator"] == est and r["part"] == part + suffix]
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", color=f"C{i}",
                            label=est + (" (whole vector)" if suffix else ""))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{part} gradient")
        ax.set_xlabel("k")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("mean SNR |E g| / std g")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=120)
    plt.close(fig)


def summary(rows, args, command):
    ks = sorted({r["k"] for r in rows})
    if args.model == "toy":
        what = ("Rainforth et al.'s linear-Gaussian model (D = 20, experiments/snr/snr_toy.py) "
                f"a 0.01 step from its optimum; {args.batch} data points from the true model")
    else:
        what = (f"A VAE (k = 1, Z = {args.z_dim}) trained {args.epochs} epochs on mnist5k "
                f"(seed 0); the first {args.batch} test digits")
    lines = [f"# Gradient SNR against k, CPU, torch {torch.__version__}, fastair "
             f"{fastair.__version__}\n", f"Command: `{command}`\n",
             f"{what}; {args.repeats} gradient estimates per point (draws from seed 0). SNR: "
             "|mean| / std per parameter over the estimates, averaged over the encoder's "
             "(decoder's) parameters; *-vector: |E g| / sqrt(E|g - E g|^2) of the part's whole "
             "gradient, |E g|^2 estimated without bias (no floor); n/r: not resolved (that "
             "estimate under two standard errors), left out of the slopes.\n",
             f"Slopes of log SNR against log k: over all (resolved) k, and over the last three "
             f"(the "
             f"asymptotic rates hold for large k only). An SNR near {floor(args.repeats):.3f} "
             f"(= sqrt(2/pi) / sqrt({args.repeats})) is at the floor of the measurement: a "
             "parameter whose true mean gradient is 0 reads about that.\n",
             "| estimator | part | " + " | ".join(f"k = {k}" for k in ks)
             + " | slope | slope, last 3 | expected |",
             "|---|---|" + "---|" * len(ks) + "---|---|---|"]
    for est in ("iwae", "stl", "dreg"):
        for part in PARTS:
            vals = [r["snr"] for k in ks for r in rows
                    if r["estimator"] == est and r["part"] == part and r["k"] == k]
            if len(vals) != len(ks):
                continue
            exp = EXPECTED.get((est, part.split("-")[0]))
            lines.append(f"| {est} | {part} | " + " | ".join(
                f"{v:.4f}" if math.isfinite(v) else "n/r" for v in vals)
                         + f" | {slope(ks, vals):+.2f} | {slope(ks, vals, 3):+.2f} | "
                         + ("" if exp is None else f"{exp:+.1f}") + " |")
    ess = [r["snr"] for k in ks for r in rows if r["part"] == "ESS" and r["k"] == k]
    if len(ess) == len(ks):
        lines.append("| (effective sample size) | ESS | " + " | ".join(f"{v:.1f}" for v in ess)
                     + f" | {slope(ks, ess):+.2f} | {slope(ks, ess, 3):+.2f} | +1.0 |")
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
    p.add_argument("--model", choices=("vae", "toy"), default="vae",
                   help="vae: a VAE trained on mnist5k; toy: the linear-Gaussian check")
    p.add_argument("--name", default="snr", help="file stem of the outputs")
    p.add_argument("--quick", action="store_true", help="k in {1, 4}, 10 repeats, 1 epoch")
    p.add_argument("--out", default=None, help="directory for snr.csv, snr.md and snr.png")
    args = p.parse_args(argv)
    if args.quick:
        args.ks, args.repeats, args.epochs = [1, 4], 10, 1
    if args.model == "toy":
        from experiments.snr.snr_toy import LinearGaussian, toy_data
        mu_star, x = toy_data(args.batch)
        model = LinearGaussian(mu_star)
    else:
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
    text = summary(rows, args, command_line("experiments.snr.snr", argv))
    print(text)
    if args.out:
        write_results(args.out, args.name, rows, COLUMNS, text)
        plot(rows, os.path.join(args.out, f"{args.name}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
