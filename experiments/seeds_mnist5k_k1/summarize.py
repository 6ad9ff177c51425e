"""Ten seeds on the k = 1 grid: one row per trained model (``results.csv``) and the paper's claims
tested on seed-paired differences (``summary.md``).

Reads the finished runs of a ``fastair reproduce`` tree (``result.json`` of each run; the tree of
``command.md`` or its landed copy ``runs/`` here), chooses each family's strength on the mean
validation ln p(x) over the seeds that finished every strength of the family (as ``fastair
reproduce`` chooses), and, for "the best strength grows with k", the k = 8 and k = 64 records
of experiments/table2_mnist5k and experiments/table3_mnist5k. AIS estimates (``ais.csv`` beside
this file, from ``ais.py``) fill ``test_log_px_ais`` where they exist.

    python -m experiments.seeds_mnist5k_k1.summarize                   # the landed runs
    python -m experiments.seeds_mnist5k_k1.summarize --runs runs/seeds-mnist5k-k1

Each claim: the mean of the per-seed differences, its standard error (the seeds' standard
deviation over sqrt(n)), t, a 95% interval from Student's t with n - 1 degrees of freedom, and a
verdict: **supported** (the interval excludes 0 on the claim's side), **contradicted** (it
excludes 0 on the other side), **unresolved at this power** (it holds 0). "About as good" is
supported when the interval lies inside +-``--margin`` nats, contradicted when it lies wholly
outside, unresolved otherwise.
"""
import argparse
import csv
import json
import math
import os
import random
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODELS = {"vae": "vae", "dvae-a0.5": "dvae_a0.5", "dvae-a1": "dvae_a1", "wni": "wni"}
"""reproduce's family key -> the record's model name."""
LABELS = {"vae": "VAE", "dvae_a0.5": "DVAE (α=0.5)", "dvae_a1": "DVAE (α=1)", "wni": "WNI-VAE"}
KNOB = {"dvae_a0.5": "sigma", "dvae_a1": "sigma", "wni": "H"}
COLUMNS = ("model", "strength", "seed", "chosen", "test_log_px", "test_elbo", "gap",
           "unreliable_frac", "test_log_px_ais", "valid_log_px", "unreliable_frac_ess_se",
           "best_epoch", "train_seconds")
OTHER_K = {8: os.path.join(ROOT, "experiments", "table2_mnist5k", "runs.csv"),
           64: os.path.join(ROOT, "experiments", "table3_mnist5k", "runs.csv")}


def t_quantile(df, p=0.975):
    """Student's t quantile (scipy where installed, else a table for the usual df)."""
    try:
        from scipy.stats import t
        return float(t.ppf(p, df))
    except ImportError:
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365,
                 8: 2.306, 9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 14: 2.145, 19: 2.093}
        return table.get(df, 1.96)


def read_runs(root):
    """One dict per finished run under ``root`` (``k1/<family>/[<knob><v>/]seed<s>``)."""
    rows = []
    for here, dirs, files in os.walk(root):
        dirs.sort()
        if "result.json" not in files:
            continue
        with open(os.path.join(here, "result.json")) as f:
            r = json.load(f)
        if r.get("k") != 1 or "test" not in r or r["family"] not in MODELS:
            continue
        test, valid = r["test"], r["valid"]
        n = test.get("n") or 500
        rows.append({
            "model": MODELS[r["family"]],
            "strength": "" if r["strength"] is None else f"{float(r['strength']):g}",
            "seed": int(r["seed"]), "chosen": 0,
            "test_log_px": -test["-ln p(x)"], "test_elbo": -test["-L(x)"],
            "gap": test["-L(x)"] - test["-ln p(x)"],
            "unreliable_frac": test["n_unreliable"] / n,
            "test_log_px_ais": "",
            "valid_log_px": -valid["-ln p(x)"],
            "unreliable_frac_ess_se": _ess_se_frac(test, n),
            "best_epoch": r.get("best_epoch"), "train_seconds": r.get("train_seconds")})
    return rows


def _ess_se_frac(summary, n):
    """Examples flagged by ESS or SE (not k-hat), where the summary counts them apart."""
    if "n_ess_under" not in summary or "n_se_over" not in summary:
        return ""
    return max(summary["n_ess_under"], summary["n_se_over"]) / n  # a lower bound of the union


def choose(rows):
    """Mark each model's chosen strength (best mean validation ln p(x) over the seeds that
    finished every strength of the model); ``{model: strength}``."""
    chosen = {}
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        strengths = sorted({r["strength"] for r in mine})
        seeds = set.intersection(*({r["seed"] for r in mine if r["strength"] == s}
                                   for s in strengths))
        if not seeds:
            continue
        score = {s: statistics.fmean(r["valid_log_px"] for r in mine
                                     if r["strength"] == s and r["seed"] in seeds)
                 for s in strengths}
        chosen[model] = max(strengths, key=lambda s: score[s])
        for r in mine:
            r["chosen"] = int(r["strength"] == chosen[model])
    return chosen


def read_ais(rows, path):
    if not os.path.exists(path):
        return
    with open(path) as f:
        ais = {(a["model"], a["strength"], int(a["seed"])): a for a in csv.DictReader(f)}
    for r in rows:
        a = ais.get((r["model"], r["strength"], r["seed"]))
        if a is not None:
            r["test_log_px_ais"] = float(a["test_log_px_ais"])


def paired(a, b, column):
    """Per-seed differences ``a - b`` of ``column`` over the seeds both have."""
    ma = {r["seed"]: r[column] for r in a if r[column] != ""}
    mb = {r["seed"]: r[column] for r in b if r[column] != ""}
    return [ma[s] - mb[s] for s in sorted(set(ma) & set(mb))]


def test_claim(d, margin=None):
    """``(n, mean, se, t, lo, hi, verdict)`` for differences ``d`` whose claim is ``d > 0``
    (or, with ``margin``, ``|d| <= margin``)."""
    n = len(d)
    if n < 2:
        return n, math.nan, math.nan, math.nan, math.nan, math.nan, "not run"
    mean, se = statistics.fmean(d), statistics.stdev(d) / math.sqrt(n)
    half = t_quantile(n - 1) * se
    lo, hi = mean - half, mean + half
    t = mean / se if se > 0 else math.inf
    if margin is None:
        verdict = ("supported" if lo > 0 else "contradicted" if hi < 0
                   else "unresolved at this power")
    else:
        verdict = ("supported" if -margin <= lo and hi <= margin
                   else "contradicted" if lo > margin or hi < -margin
                   else "unresolved at this power")
    return n, mean, se, t, lo, hi, verdict


def _other_k_rows(path):
    with open(path) as f:
        return [{"model": MODELS[r["family"]],
                 "strength": "" if r["strength"] == "" else f"{float(r['strength']):g}",
                 "seed": int(r["seed"]), "valid_log_px": -float(r["valid_nll"])}
                for r in csv.DictReader(f) if r["family"] in MODELS]


def _strength_key(model, s):
    """Regularization strength, larger = stronger: sigma, or 1/H for WNI's cap."""
    return float(s) if KNOB[model] == "sigma" else 1.0 / float(s)


def strength_vs_k(rows, boot=2000, seed=0):
    """Per regularized model: the chosen strength at k = 1, 8, 64 and the bootstrap share (over
    resampled seeds, each k apart) of draws where the strength at 64 is stronger than at 1."""
    by_k = {1: rows}
    for k, path in OTHER_K.items():
        if os.path.exists(path):
            by_k[k] = _other_k_rows(path)
    rng = random.Random(seed)
    out = []
    for model in ("dvae_a0.5", "dvae_a1", "wni"):
        picks, grids = {}, {}
        for k, rs in by_k.items():
            mine = [r for r in rs if r["model"] == model]
            if not mine:
                continue
            grid = {}
            for r in mine:
                grid.setdefault(r["seed"], {})[r["strength"]] = r["valid_log_px"]
            full = {s: g for s, g in grid.items() if len(g) == len({r["strength"] for r in mine})}
            grids[k] = full
            picks[k] = _pick(list(full.values()))
        if 1 not in picks or 64 not in picks:
            continue
        up = down = 0
        for _ in range(boot):
            s1 = _pick([grids[1][rng.choice(list(grids[1]))] for _ in grids[1]])
            s64 = _pick([grids[64][rng.choice(list(grids[64]))] for _ in grids[64]])
            a, b = _strength_key(model, s1), _strength_key(model, s64)
            up += b > a
            down += b < a
        grows = _strength_key(model, picks[64]) > _strength_key(model, picks[1])
        shrinks = _strength_key(model, picks[64]) < _strength_key(model, picks[1])
        verdict = ("supported" if grows and up / boot >= 0.95 else
                   "contradicted" if shrinks and down / boot >= 0.95 else
                   "unresolved at this power")
        out.append((model, picks, {k: len(g) for k, g in grids.items()}, up / boot,
                    down / boot, verdict))
    return out


def _pick(grids):
    strengths = grids[0].keys()
    return max(strengths, key=lambda s: statistics.fmean(g[s] for g in grids))


def write(rows, chosen, args):
    rows.sort(key=lambda r: (list(LABELS).index(r["model"]), r["strength"], r["seed"]))
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.6f}" if isinstance(r[c], float) else r[c])
                        for c in COLUMNS})
    best = {m: [r for r in rows if r["model"] == m and r["chosen"]] for m in LABELS}
    lines = ["# Ten seeds on the k = 1 grid (mnist5k): the paper's claims, seed-paired", "",
             f"Made by `python -m experiments.seeds_mnist5k_k1.summarize` from {args.runs_label}"
             f" ({len(rows)} finished runs; the training and evaluation command is in "
             "command.md). Nats; ln p(x) by IW-SVI (bf16), higher is better; ± is a standard "
             "error over seeds (the seeds' standard deviation / sqrt(n)), never a standard "
             "deviation.", "",
             "## Chosen models (strength chosen on validation, mean over seeds)", "",
             "| model | strength | seeds | test -ln p(x) | test -L(x) | gap Δinf | "
             "unreliable digits (any flag) |", "|---|---|---|---|---|---|---|"]
    for m, rs in best.items():
        if not rs:
            continue
        lines.append(f"| {LABELS[m]} | {_strength(m, chosen.get(m, ''))} | {len(rs)} | "
                     f"{_mse([-r['test_log_px'] for r in rs])} | "
                     f"{_mse([-r['test_elbo'] for r in rs])} | {_mse([r['gap'] for r in rs])} | "
                     f"{100 * statistics.fmean(r['unreliable_frac'] for r in rs):.0f}% |")
    lines += ["", "## Claims", "",
              "| claim | difference (per seed) | n | mean | SE | t | 95% interval | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    claims = [("DVAE(α=0.5) beats the VAE", "ln p: DVAE(0.5) - VAE", "dvae_a0.5", "vae",
               "test_log_px", None),
              ("DVAE(α=1) beats the VAE", "ln p: DVAE(1) - VAE", "dvae_a1", "vae",
               "test_log_px", None),
              ("WNI beats the VAE", "ln p: WNI - VAE", "wni", "vae", "test_log_px", None),
              (f"WNI is about as good as DVAE(α=0.5) (within ±{args.margin:g} nat)",
               "ln p: WNI - DVAE(0.5)", "wni", "dvae_a0.5", "test_log_px", args.margin),
              ("WNI is about as good as DVAE(α=1) (within ±{:g} nat)".format(args.margin),
               "ln p: WNI - DVAE(1)", "wni", "dvae_a1", "test_log_px", args.margin)]
    for m in ("dvae_a0.5", "dvae_a1", "wni"):
        claims.append((f"regularization shrinks the gap: {LABELS[m]}",
                       f"gap: VAE - {LABELS[m]}", "vae", m, "gap", None))
    ais_rows = []
    for name, what, a, b, col, margin in claims:
        n, mean, se, t, lo, hi, verdict = test_claim(paired(best[a], best[b], col), margin)
        lines.append(f"| {name} | {what} | {n} | {mean:+.2f} | {se:.2f} | {t:+.1f} | "
                     f"[{lo:+.2f}, {hi:+.2f}] | **{verdict}** |")
        if col == "test_log_px":  # IW-SVI again on the seeds AIS ran on, then AIS
            with_ais = [[r for r in best[m] if r["test_log_px_ais"] != ""] for m in (a, b)]
            same = test_claim(paired(*with_ais, "test_log_px"), margin)
            ais_rows.append((name, same, test_claim(
                paired(best[a], best[b], "test_log_px_ais"), margin)))
    lines += ["", "### The best strength grows with k (chosen on validation at each k)", "",
              "| model | chosen at k = 1 | k = 8 | k = 64 | seeds (1 / 8 / 64) | bootstrap: "
              "stronger at 64 / weaker | verdict |", "|---|---|---|---|---|---|---|"]
    for model, picks, seeds, up, down, verdict in strength_vs_k(rows, seed=args.seed):
        lines.append(f"| {LABELS[model]} | {_strength(model, picks.get(1))} | "
                     f"{_strength(model, picks.get(8))} | {_strength(model, picks.get(64))} | "
                     f"{seeds.get(1, 0)} / {seeds.get(8, 0)} / {seeds.get(64, 0)} | "
                     f"{up:.2f} / {down:.2f} | **{verdict}** |")
    lines += ["", "Strength: sigma for the DVAEs, 1/H for WNI (a smaller cap regularizes more). "
              "Bootstrap: the seeds of each k resampled with replacement "
              f"(2000 draws, seed {args.seed}), the strength chosen again; a verdict needs the "
              "chosen strengths to move the claimed way and 95% of the draws to agree.", "",
              "### Does AIS change a verdict?", ""]
    if any(res[0] >= 2 for _, _, res in ais_rows):
        lines += ["The same seeds for both (those AIS ran on): IW-SVI's difference and verdict "
                  "on them, then AIS's.", "",
                  "| claim | n | IW-SVI: mean ± SE | IW-SVI verdict | AIS: mean ± SE | "
                  "AIS 95% interval | AIS verdict |", "|---|---|---|---|---|---|---|"]
        for name, same, (n, mean, se, _t, lo, hi, v) in ais_rows:
            lines.append(f"| {name} | {n} | {same[1]:+.2f} ± {same[2]:.2f} | {same[6]} | "
                         f"{mean:+.2f} ± {se:.2f} | [{lo:+.2f}, {hi:+.2f}] | **{v}** |")
    else:
        lines.append("AIS has not been run on these models yet (ais.py).")
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def _strength(model, s):
    if s is None or s == "" or model not in KNOB:
        return "–"
    return f"{'σ' if KNOB[model] == 'sigma' else 'H'} = {s}"


def _mse(v):
    if len(v) < 2:
        return f"{v[0]:.2f}" if v else "n/a"
    return f"{statistics.fmean(v):.2f} ± {statistics.stdev(v) / math.sqrt(len(v)):.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=os.path.join(HERE, "runs"),
                   help="a reproduce tree or its landed copy (default: runs/ here)")
    p.add_argument("--out", default=HERE, help="where results.csv and summary.md go")
    p.add_argument("--margin", type=float, default=0.5,
                   help="nats within which two models count as about as good (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = p.parse_args(argv)
    args.runs_label = os.path.relpath(args.runs, ROOT)
    rows = read_runs(args.runs)
    if not rows:
        raise SystemExit(f"no finished k = 1 runs under {args.runs}")
    chosen = choose(rows)
    os.makedirs(args.out, exist_ok=True)
    read_ais(rows, os.path.join(args.out, "ais.csv"))
    write(rows, chosen, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
