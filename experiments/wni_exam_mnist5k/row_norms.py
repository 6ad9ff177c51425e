#!/usr/bin/env python
"""Where WNI's cap binds: the row norms of trained encoders, per layer, from run directories.

    python -m experiments.wni_exam_mnist5k.row_norms runs/wni-exam/mnist5k/k1 \
        --out experiments/wni_exam_mnist5k

Each argument is a run directory (holding ``best.pt``) or a folder searched for them. Per run,
per encoder Linear: the median, 90th percentile and largest row norm of the effective weight,
and for a capped layer the share of rows held at their cap. Runs of one family and H are
averaged over seeds. Writes ``row_norms.csv`` and ``row_norms.md``.
"""
import argparse
import os
import statistics
import sys

from bench.common import command_line, write_results
from fastair.models import VAE
from fastair.nn import row_norm_stats
from fastair.training import load_checkpoint

COLUMNS = ("model", "H", "H_layers", "layer", "rows", "seeds", "median", "p90", "max",
           "capped_share")


def find_runs(paths):
    """Every directory under ``paths`` (or equal to one) holding a ``best.pt``, sorted."""
    found = []
    for path in paths:
        for here, _, files in os.walk(path):
            if "best.pt" in files:
                found.append(here)
    return sorted(set(found))


def encoder_stats(run):
    """``(hparams, row_norm_stats(encoder))`` of the best model in ``run``."""
    ck = load_checkpoint(os.path.join(run, "best.pt"))
    hp = dict(ck["model_hparams"])
    model = VAE(**{**hp, "hidden": tuple(hp.get("hidden", (200, 200)))})
    model.load_state_dict(ck["best_model"] if "best_model" in ck and "model" not in ck
                          else ck["model"])
    return hp, row_norm_stats(model.encoder)


def table(runs):
    groups = {}
    for run in runs:
        hp, stats = encoder_stats(run)
        key = ("wni" if hp.get("H") else "vae", hp.get("H"), hp.get("H_layers", "all")
               if hp.get("H") else "–")
        for layer in stats:
            groups.setdefault(key + (layer["name"], layer["rows"]), []).append(layer)
    rows = []  # groups by model, H and capped layers; the layers in the encoder's order
    for (model, H, H_layers, name, n), layers in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2])):
        qs = [statistics.fmean(la["quantiles"][i] for la in layers) for i in range(3)]
        shares = [la["capped_share"] for la in layers if la["capped_share"] is not None]
        rows.append({"model": model, "H": H, "H_layers": H_layers, "layer": name, "rows": n,
                     "seeds": len(layers), "median": round(qs[0], 3), "p90": round(qs[1], 3),
                     "max": round(qs[2], 3),
                     "capped_share": round(statistics.fmean(shares), 3) if shares else None})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="run directories or folders holding them")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    runs = find_runs(args.paths)
    if not runs:
        p.error(f"no best.pt under {args.paths}")
    rows = table(runs)
    command = command_line("experiments.wni_exam_mnist5k.row_norms", argv)
    lines = ["# Row norms of trained encoders (where WNI's cap binds)\n", f"Command: `{command}`\n",
             f"{len(runs)} runs; each number is the mean over seeds of a per-run statistic of "
             "the effective weight's row norms ||W_i||. Held at cap: the share of a capped "
             "layer's rows whose direction's norm ||v_i|| exceeds the learnt cap H·sigmoid(u_i) "
             "(so the cap, not the data, sets their length).\n",
             "| model | H | capped layers | layer | rows | seeds | median | p90 | max | "
             "held at cap |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = "–" if r["capped_share"] is None else f"{100 * r['capped_share']:.0f}%"
        H = "–" if r["H"] is None else f"{r['H']:g}"
        lines.append(f"| {r['model']} | {H} | "
                     f"{r['H_layers']} | {r['layer']} | {r['rows']} | {r['seeds']} | "
                     f"{r['median']:.2f} | {r['p90']:.2f} | {r['max']:.2f} | {share} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_results(args.out, "row_norms", rows, COLUMNS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
