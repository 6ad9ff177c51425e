"""Grey-level mnist5k with the continuous Bernoulli likelihood: VAE and DVAE at k = 1 and 8, three
seeds each; test ln p(x) by IW-SVI in nats and bits per dimension; samples as pictures.

Each run is three commands (``fastair train``, ``fastair evaluate``, ``fastair sample``) in its own
directory under ``--out``; a finished step leaves a marker (``.trained``, ``iwsvi/summary.json``,
``samples.png``), so the same command resumes where it stopped (an interrupted training resumes
from its ``last.pt``). ``--summarize-only`` remakes ``results.csv`` and ``summary.md`` here from
the finished runs.

    python -m experiments.grey_mnist5k.run --out runs/grey-mnist5k
"""
import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LIKELIHOOD = "continuous_bernoulli"
MODELS = {"vae": ["--model", "vae"],
          "dvae_a0.5": ["--model", "dvae", "--alpha", "0.5", "--sigma", "0.4"]}
"""The record's model name -> its ``fastair train`` options (DVAE at the strength the binary
mnist5k grid chose, experiments/seeds_mnist5k_k1)."""
KS = (1, 8)
SEEDS = (0, 1, 2)
D = 784
COLUMNS = ("likelihood", "model", "k", "seed", "test_log_px", "test_bits_per_dim", "test_elbo",
           "gap", "unreliable_frac", "best_epoch", "train_seconds")


def _run(cmd, log):
    """Runs ``python -m fastair CMD...``, its output appended to ``log``; raises on failure."""
    with open(log, "a") as f:
        f.write("$ fastair " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run([sys.executable, "-m", "fastair", *cmd], stdout=f, stderr=subprocess.STDOUT,
                       check=True)


def run_one(out, model, k, seed, threads, precision):
    """Trains, evaluates and samples one run (each step skipped where already done)."""
    d = os.path.join(out, LIKELIHOOD, f"{model}-k{k}", f"seed{seed}")
    os.makedirs(d, exist_ok=True)
    log = os.path.join(d, "console.log")
    common = ["--threads", str(threads), "--no-progress"]
    if not os.path.exists(os.path.join(d, ".trained")):
        resume = ["--resume"] if os.path.exists(os.path.join(d, "last.pt")) else []
        _run(["train", *MODELS[model], "--k", str(k), "--likelihood", LIKELIHOOD,
              "--dataset", "mnist5k-grey", "--epochs", "1000", "--patience", "30",
              "--precision", precision, "--seed", str(seed), "--run-dir", d, *common, *resume],
             log)
        open(os.path.join(d, ".trained"), "w").close()
    if not os.path.exists(os.path.join(d, "iwsvi", "summary.json")):
        _run(["evaluate", d, "--precision", precision, *common], log)
    if not os.path.exists(os.path.join(d, "samples.png")):
        _run(["sample", d], log)
    return d


def _row(d, model, k, seed):
    with open(os.path.join(d, "iwsvi", "summary.json")) as f:
        s = json.load(f)
    with open(os.path.join(d, "metrics.json")) as f:
        m = json.load(f)
    log_px, elbo = -s["-ln p(x)"], -s["-elbo_enc"]
    return {"likelihood": LIKELIHOOD, "model": model, "k": k, "seed": seed,
            "test_log_px": log_px, "test_bits_per_dim": -log_px / (D * math.log(2)),
            "test_elbo": elbo, "gap": log_px - elbo, "unreliable_frac": s["n_unreliable"] / s["n"],
            "best_epoch": m[-1]["best_epoch"], "train_seconds": sum(e["time_s"] for e in m)}


def _mean_se(values):
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def summarize(out):
    """``results.csv`` (one row per finished run) and ``summary.md`` (means with their standard
    errors over the seeds) here; the seed-0 samples of each model copied beside them."""
    rows = []
    for model in MODELS:
        for k in KS:
            for seed in SEEDS:
                d = os.path.join(out, LIKELIHOOD, f"{model}-k{k}", f"seed{seed}")
                if os.path.exists(os.path.join(d, "iwsvi", "summary.json")):
                    rows.append(_row(d, model, k, seed))
                if seed == SEEDS[0] and os.path.exists(os.path.join(d, "samples.png")):
                    shutil.copyfile(os.path.join(d, "samples.png"),
                                    os.path.join(HERE, f"samples_{model}_k{k}.png"))
    with open(os.path.join(HERE, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.4f}" if isinstance(r[c], float) else r[c]) for c in COLUMNS})
    lines = ["# Grey-level mnist5k, continuous Bernoulli likelihood", "",
             "Test ln p(x) by IW-SVI (500 test digits, `fastair evaluate` defaults), mean over "
             "the seeds ± its standard error (the seeds' standard deviation over sqrt(n)); "
             "bits per dimension = -ln p(x) / (784 ln 2). These are densities of grey levels in "
             "[0, 1]: ln p(x) is positive and bits/dim negative, and neither compares with the "
             "binary data's nats or with bits/dim of 8-bit images.", "",
             "| model | k | seeds | test ln p(x) (nats) | bits/dim | test ELBO | gap | "
             "unreliable |", "|---|---|---|---|---|---|---|---|"]
    for model in MODELS:
        for k in KS:
            sel = [r for r in rows if r["model"] == model and r["k"] == k]
            if not sel:
                continue
            lp, lp_se = _mean_se([r["test_log_px"] for r in sel])
            bpd, bpd_se = _mean_se([r["test_bits_per_dim"] for r in sel])
            elbo, _ = _mean_se([r["test_elbo"] for r in sel])
            gap, _ = _mean_se([r["gap"] for r in sel])
            unrel = statistics.fmean(r["unreliable_frac"] for r in sel)
            lines.append(f"| {model} | {k} | {len(sel)} | {lp:.2f} ± {lp_se:.2f} | "
                         f"{bpd:.4f} ± {bpd_se:.4f} | {elbo:.2f} | {gap:.2f} | {unrel:.2f} |")
    lines += ["", "DVAE minus VAE, paired by seed (positive: DVAE better):", ""]
    for k in KS:
        pairs = {}
        for r in rows:
            if r["k"] == k:
                pairs.setdefault(r["seed"], {})[r["model"]] = r["test_log_px"]
        diffs = [p["dvae_a0.5"] - p["vae"] for p in pairs.values() if len(p) == 2]
        if len(diffs) > 1:
            m, se = _mean_se(diffs)
            lines.append(f"- k = {k}: {m:+.2f} ± {se:.2f} nats (standard error, {len(diffs)} "
                         f"seeds; t = {m / se:.1f})")
    pictures = [f"`samples_{m}_k{k}.png`" for m in MODELS for k in KS
                if os.path.exists(os.path.join(HERE, f"samples_{m}_k{k}.png"))]
    lines += ["", "Samples (seed 0, the mean of each pixel under p(x|z), z from the prior): "
              + ", ".join(pictures), ""]
    with open(os.path.join(HERE, "summary.md"), "w") as f:
        f.write("\n".join(lines))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/grey-mnist5k", help="where the runs go")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--summarize-only", action="store_true")
    p.add_argument("--ks", type=int, nargs="+", default=list(KS), help="a subset of k")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    a = p.parse_args(argv)
    if not a.summarize_only:  # two invocations on disjoint subsets may run side by side
        for k in a.ks:
            for seed in a.seeds:
                for model in a.models:
                    d = run_one(a.out, model, k, seed, a.threads, a.precision)
                    print("done:", d, flush=True)
                    summarize(a.out)
    summarize(a.out)


if __name__ == "__main__":
    main()
