"""Table 3 re-examined by annealed importance sampling: the k = 64 models behind the published
table (mnist5k), AIS started from IW-SVI's fitted q on the same 500 test digits, set beside the
IW-SVI estimates of experiments/table3_diagnostics; and BDMC brackets on data simulated from
the models.

The models are the retrained checkpoints of experiments/table3_diagnostics (they reproduce the
published -ln p(x) to 1e-7 nats); its per-example IW-SVI results (estimate, SE, ESS, k-hat) come
from the same directories. AIS: ``fastair.evaluation.ais_log_likelihood(init="fitted")`` in
fp32, the fit of q with IW-SVI's default settings, ``--steps`` temperatures, ``--chains`` chains,
seed 2000 + the run's seed. BDMC: ``fastair.evaluation.bdmc`` on ``--bdmc`` simulated digits
per model (seed 0 of each model), and on one model at several step counts for the bracket's
width against steps.

Resumable: each block of ``--block`` digits of each model is saved under ``--work`` once done,
and finished blocks are not redone.

    nohup nice -n 19 python experiments/table3_ais/run.py --work runs/table3-ais \\
        --models runs/table3-diag &
    python experiments/table3_ais/run.py --work runs/table3-ais --models runs/table3-diag \\
        --report-only                      # report.md, per_digit.csv, runs.csv here

Writes ``runs.csv`` (one row per model), ``bdmc.csv`` and ``report.md`` next to this file.
"""
import argparse
import csv
import importlib.util
import math
import os
import statistics
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def _diagnostics():
    """experiments/table3_diagnostics/run.py: the chosen models and the flags' thresholds."""
    spec = importlib.util.spec_from_file_location(
        "table3_diagnostics", os.path.join(HERE, "..", "table3_diagnostics", "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_D = _diagnostics()
CHOSEN, KHAT_WARN, SE_WARN, ESS_WARN = _D.CHOSEN, _D.KHAT_WARN, _D.SE_WARN, _D.ESS_WARN

SEEDS = (0, 1, 2)
BDMC_STEPS = (100, 300, 1000, 3000, 10000)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _model(models, family, seed):
    from fastair.trained import load_best_model
    model, data, _ = load_best_model(os.path.join(models, family, f"seed{seed}", "train"))
    for p in model.parameters():
        p.requires_grad_(False)
    return model, data


def _block_path(work, family, seed, b):
    return os.path.join(work, family, f"seed{seed}", f"ais_block{b:03d}.pt")


def run_ais(args):
    from fastair.evaluation import ais_log_likelihood
    order = [(family, seed) for seed in SEEDS for _, family, _, _ in CHOSEN if family != "wni"]
    order += [("wni", seed) for seed in SEEDS]  # IWAE and DIWAE first, each model's seeds in turn
    for family, seed in order:
        model, data = _model(args.models, family, seed)
        x = data.test[:args.digits]
        for b in range(math.ceil(len(x) / args.block)):
            path = _block_path(args.work, family, seed, b)
            if os.path.exists(path):
                continue
            xb = x[b * args.block:(b + 1) * args.block]
            start = time.perf_counter()
            r = ais_log_likelihood(model, xb, steps=args.steps, chains=args.chains,
                                   init="fitted", seed=2000 + seed + 100 * b,
                                   precision="fp32", progress=False, warn=False)
            seconds = time.perf_counter() - start
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".tmp"
            torch.save({"log_px": r.log_px, "se": r.se, "ess": r.ess,
                        "acceptance": r.acceptance, "seconds": seconds,
                        "steps": args.steps, "chains": args.chains}, tmp)
            os.replace(tmp, path)
            print(f"{family} seed {seed} block {b}: {seconds:.0f} s, mean ln p(x) "
                  f"{r.log_px.mean():.3f}", flush=True)


def run_bdmc(args, series):
    """BDMC at ``--steps`` on each model (``series`` False), or on the IWAE model at each of
    :data:`BDMC_STEPS` (True)."""
    from fastair.evaluation import bdmc
    if series:
        jobs = [("vae", 0, s) for s in BDMC_STEPS if s != args.steps]
    else:
        jobs = [(family, 0, args.steps) for _, family, _, _ in CHOSEN]
    for family, seed, steps in jobs:
        path = os.path.join(args.work, family, f"seed{seed}", f"bdmc_{steps}.pt")
        if os.path.exists(path):
            continue
        model, _ = _model(args.models, family, seed)
        start = time.perf_counter()
        r = bdmc(model, args.bdmc, steps=steps, chains=args.chains, seed=3000 + seed,
                 progress=False)
        seconds = time.perf_counter() - start
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        torch.save({"lower": r.lower, "upper": r.upper, "seconds": seconds}, tmp)
        os.replace(tmp, path)
        print(f"BDMC {family} seed {seed} steps {steps}: width "
              f"{(r.upper - r.lower).mean():.3f} nat, {seconds:.0f} s", flush=True)


def _mean_se(v):
    v = [float(t) for t in v]
    if len(v) < 2:
        return (v[0] if v else float("nan")), float("nan")
    return statistics.fmean(v), statistics.stdev(v) / math.sqrt(len(v))


def _fmt(m, se):
    if math.isnan(m):
        return "n/a"
    return f"{m:+.3f}" if math.isnan(se) else f"{m:+.3f} ± {se:.3f}"


def report(args):
    runs, digits = [], []
    for label, family, _, _ in CHOSEN:
        for seed in SEEDS:
            ev = os.path.join(args.models, family, f"seed{seed}", "train", "iwsvi",
                              "per_example.csv")
            blocks = []
            b = 0
            while os.path.exists(_block_path(args.work, family, seed, b)):
                blocks.append(torch.load(_block_path(args.work, family, seed, b)))
                b += 1
            if not blocks or not os.path.exists(ev):
                continue
            iw = _rows(ev)
            ais = {k: torch.cat([blk[k] for blk in blocks])[:args.digits] for k in
                   ("log_px", "se", "ess", "acceptance")}
            n = len(ais["log_px"])
            blocks = blocks[:math.ceil(n / args.block)]
            iw = iw[:n]
            d = [float(a) - float(r["log_px"]) for a, r in zip(ais["log_px"], iw)]
            by_ess = [float(r["se"]) > SE_WARN or float(r["ess"]) < ESS_WARN for r in iw]
            by_khat = [not float(r["khat"]) <= KHAT_WARN for r in iw]
            row = {"model": label, "family": family, "seed": seed, "n": n,
                   "iwsvi_nll": -statistics.fmean(float(r["log_px"]) for r in iw),
                   "ais_nll": -float(ais["log_px"].mean()),
                   "ais_se_mean": float(ais["se"].mean()),
                   "ais_accept": float(ais["acceptance"].mean()),
                   "seconds_per_digit": sum(blk["seconds"] for blk in blocks) / n}
            for name, mask in (("all", [True] * n), ("ess_flagged", by_ess),
                               ("ess_rest", [not f for f in by_ess]),
                               ("khat_flagged", by_khat), ("khat_rest", [not f for f in by_khat])):
                m, se = _mean_se([v for v, f in zip(d, mask) if f])
                row[f"diff_{name}"], row[f"diff_{name}_se"], row[f"n_{name}"] = m, se, sum(mask)
            runs.append(row)
            for i, (a, r) in enumerate(zip(ais["log_px"], iw)):
                digits.append({"family": family, "seed": seed, "index": i,
                               "iwsvi_log_px": r["log_px"], "iwsvi_se": r["se"],
                               "iwsvi_ess": r["ess"], "iwsvi_khat": r["khat"],
                               "ais_log_px": f"{float(a):.6f}",
                               "ais_se": f"{float(ais['se'][i]):.6f}"})
    bd = []
    for _, family, _, _ in CHOSEN:
        for steps in sorted(set(BDMC_STEPS) | {args.steps}):
            path = os.path.join(args.work, family, "seed0", f"bdmc_{steps}.pt")
            if os.path.exists(path):
                r = torch.load(path)
                w = r["upper"] - r["lower"]
                bd.append({"family": family, "seed": 0, "steps": steps, "n": len(w),
                           "lower": float(r["lower"].mean()), "upper": float(r["upper"].mean()),
                           "width": float(w.mean()), "width_max": float(w.max()),
                           "seconds_per_digit": r["seconds"] / len(w)})
    _write_csv(os.path.join(HERE, "runs.csv"), runs)
    _write_csv(os.path.join(HERE, "bdmc.csv"), bd)
    _write_csv(os.path.join(HERE, "per_digit.csv"), digits)
    text = _report_text(runs, bd, args)
    with open(os.path.join(HERE, "report.md"), "w") as f:
        f.write(text)
    print(text)


def _write_csv(path, rows):
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})


def _report_text(runs, bd, args):
    out = ["# Table 3 re-examined by AIS (mnist5k, k = 64 models)", "",
           f"AIS from IW-SVI's fitted q, fp32, {args.steps} temperatures, {args.chains} chains; "
           "`diff` = AIS ln p(x) - IW-SVI ln p(x) per digit, mean ± SE over digits (positive: "
           "IW-SVI underestimated ln p(x), i.e. its -ln p(x) is too high). Flags: `ESS` is "
           f"the published rule (SE > {SE_WARN} nat or ESS < {ESS_WARN:g}), `k-hat` is PSIS "
           f"k-hat > {KHAT_WARN}.", "",
           "| model | seed | digits | -ln p(x) IW-SVI | -ln p(x) AIS | diff all | diff ESS-flagged"
           " (n) | diff rest (n) | diff k-hat-flagged (n) | diff rest (n) | AIS SE | accept |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        out.append(
            f"| {r['model']} | {r['seed']} | {r['n']} | {r['iwsvi_nll']:.3f} | {r['ais_nll']:.3f} "
            f"| {_fmt(r['diff_all'], r['diff_all_se'])} "
            f"| {_fmt(r['diff_ess_flagged'], r['diff_ess_flagged_se'])} ({r['n_ess_flagged']}) "
            f"| {_fmt(r['diff_ess_rest'], r['diff_ess_rest_se'])} ({r['n_ess_rest']}) "
            f"| {_fmt(r['diff_khat_flagged'], r['diff_khat_flagged_se'])} ({r['n_khat_flagged']}) "
            f"| {_fmt(r['diff_khat_rest'], r['diff_khat_rest_se'])} ({r['n_khat_rest']}) "
            f"| {r['ais_se_mean']:.3f} | {r['ais_accept']:.2f} |")
    out += ["", "## Per model over seeds (mean ± SE over seeds; gain over IWAE paired by seed)",
            "", "| model | seeds | -ln p(x) IW-SVI | -ln p(x) AIS | gain IW-SVI | gain AIS |",
            "|---|---|---|---|---|---|"]
    base = {r["seed"]: r for r in runs if r["family"] == "vae"}
    for label, family, _, _ in CHOSEN:
        rs = [r for r in runs if r["family"] == family]
        if not rs:
            continue
        iw, ai = _mean_se([r["iwsvi_nll"] for r in rs]), _mean_se([r["ais_nll"] for r in rs])
        paired = [r for r in rs if r["seed"] in base and base[r["seed"]]["n"] == r["n"]]
        g_iw = _mean_se([base[r["seed"]]["iwsvi_nll"] - r["iwsvi_nll"] for r in paired])
        g_ai = _mean_se([base[r["seed"]]["ais_nll"] - r["ais_nll"] for r in paired])
        out.append(f"| {label} | {len(rs)} | {iw[0]:.3f} ± {iw[1]:.3f} | {ai[0]:.3f} ± "
                   f"{ai[1]:.3f} | {_fmt(*g_iw) if family != 'vae' else '-'} | "
                   f"{_fmt(*g_ai) if family != 'vae' else '-'} |")
    if bd:
        out += ["", "## BDMC brackets on simulated digits (seed-0 models)", "",
                "| model | steps | digits | lower | upper | width (mean) | width (max) | s/digit |",
                "|---|---|---|---|---|---|---|---|"]
        for r in bd:
            out.append(f"| {r['family']} | {r['steps']} | {r['n']} | {r['lower']:.3f} | "
                       f"{r['upper']:.3f} | {r['width']:.3f} | {r['width_max']:.3f} | "
                       f"{r['seconds_per_digit']:.2f} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="directory of the resumable AIS blocks")
    p.add_argument("--models", required=True,
                   help="the work directory of experiments/table3_diagnostics")
    p.add_argument("--steps", type=int, default=1000, help="AIS temperatures (default 1000)")
    p.add_argument("--chains", type=int, default=16, help="AIS chains (default 16)")
    p.add_argument("--block", type=int, default=50, help="digits per saved block (default 50)")
    p.add_argument("--digits", type=int, default=None, help="the first N test digits only "
                   "(default: all 500)")
    p.add_argument("--bdmc", type=int, default=10, help="simulated digits per BDMC run")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    if not args.report_only:
        run_bdmc(args, series=False)
        run_ais(args)
        run_bdmc(args, series=True)
    report(args)


if __name__ == "__main__":
    main()
