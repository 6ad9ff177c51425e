"""The paper's Figures 1-2 for our runs: test ``-ln p(x)`` against the regularization strength
(``sigma`` of the denoising models, ``H`` of WNI), one PNG per knob and k, and the gain over
IWAE-k against the strength, one PNG per regularizer with a curve per k; written with
matplotlib's non-interactive Agg backend. Without matplotlib (extra ``plot``) no figure is
drawn and the report says so."""
import math
import os
import warnings

from fastair.io import atomic_save_figure
from fastair.reproduce.protocol import family_label, get_family

__all__ = ["plot_strength_curves", "plot_gain_curves"]

_TITLES = {"sigma": ("σ (std of the encoder's input noise)", "denoising"),
           "H": ("H (cap on the encoder's row norms; smaller = stronger)", "weight-normalized")}


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("fastair reproduce: matplotlib is not installed, no figures drawn "
                      "(pip install 'fastair[plot]')", stacklevel=3)
        return None
    return plt


def _std(v):
    return 0.0 if math.isnan(v) else v


def _log_strength_axis(ax, ticks):
    """A log x axis labelled at the grid's strengths only."""
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()


def _save(plt, fig, ax, path):
    """Legend, tight layout and an atomic write of ``path``; the figure is closed either way."""
    ax.legend()
    fig.tight_layout()
    try:
        atomic_save_figure(fig, path)
    finally:
        plt.close(fig)
    return path


def plot_strength_curves(root, summary):
    """Draw ``fig_<knob>_k<k>.png`` under ``root`` for every knob and k with a grid; returns
    the paths written."""
    grid = summary["grid"]
    wanted = sorted({(row["k"], get_family(row["family"]).knob) for row in grid
                     if get_family(row["family"]).knob is not None})
    if not wanted:
        return []
    plt = _pyplot()
    if plt is None:
        return []
    paths = []
    for k, knob in wanted:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for fam in sorted({r["family"] for r in grid if r["k"] == k}):
            family = get_family(fam)
            rows = sorted((r for r in grid if r["k"] == k and r["family"] == fam),
                          key=lambda r: r["strength"] or 0.0)
            if family.knob is None:  # the plain model: a band at its mean +- std
                r = rows[0]
                ax.axhline(r["test_nll"], color="k", lw=1, label=r["label"])
                ax.axhspan(r["test_nll"] - _std(r["test_nll_std"]),
                           r["test_nll"] + _std(r["test_nll_std"]), color="k", alpha=0.1)
            elif family.knob == knob:
                ax.errorbar([r["strength"] for r in rows], [r["test_nll"] for r in rows],
                            yerr=[_std(r["test_nll_std"]) for r in rows], marker="o",
                            capsize=3, label=rows[0]["label"])
                chosen = [r for r in rows if r["chosen"]]
                ax.plot([r["strength"] for r in chosen], [r["test_nll"] for r in chosen],
                        "*", ms=12, color="gold", mec="k", zorder=5)
        _log_strength_axis(ax, sorted({r["strength"] for r in grid if r["k"] == k
                                       and r["strength"] is not None
                                       and get_family(r["family"]).knob == knob}))
        ax.set_xlabel(_TITLES[knob][0])
        ax.set_ylabel("test -ln p(x) (nats, IW-SVI)")
        ax.set_title(f"{_TITLES[knob][1]} inference, k = {k} (★ chosen on validation)",
                     fontsize=10)
        paths.append(_save(plt, fig, ax, os.path.join(root, f"fig_{knob}_k{k}.png")))
    return paths


def plot_gain_curves(root, gains, prefix="fig2"):
    """The paper's Figure 2: per regularizer family, the gain over IWAE-k (rows of
    :func:`fastair.reproduce.gains.seed_gains`, mean ± SE over seeds) against the strength,
    one curve per k; ``<prefix>_<family>.png`` under ``root``. Returns the paths written."""
    families = sorted({g["family"] for g in gains})
    if not families or len({g["k"] for g in gains}) < 2:
        return []
    plt = _pyplot()
    if plt is None:
        return []
    paths = []
    for fam in families:
        family = get_family(fam)
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        ax.axhline(0.0, color="k", lw=1)
        for k in sorted({g["k"] for g in gains if g["family"] == fam}):
            rows = sorted((g for g in gains if g["family"] == fam and g["k"] == k),
                          key=lambda g: g["strength"])
            ax.errorbar([g["strength"] for g in rows], [g["gain"] for g in rows],
                        yerr=[_std(g["gain_se"]) for g in rows], marker="o", capsize=3,
                        label=f"k = {k}")
        _log_strength_axis(ax, sorted({g["strength"] for g in gains if g["family"] == fam}))
        if family.knob == "H":
            ax.invert_xaxis()  # stronger to the right, as for sigma
        ax.set_xlabel(_TITLES[family.knob][0])
        ax.set_ylabel("gain over IWAE-k: Δ ln p(x) (nats)")
        ax.set_title(f"{family_label(fam, 1)} / {family_label(fam, 2)}: gain against "
                     "strength (stronger →)", fontsize=10)
        paths.append(_save(plt, fig, ax, os.path.join(root, f"{prefix}_{fam}.png")))
    return paths
