"""AIS on the chosen models of the ten-seed k = 1 grid: does annealed importance sampling change
a verdict of summary.md?

For each family's strength chosen on validation (:func:`summarize.choose` over the finished
runs) and each of ``--seeds``, ``fastair.evaluation.ais_log_likelihood(init="fitted")`` (AIS from
IW-SVI's fitted q, fp32) on the first ``--digits`` test digits, in blocks of ``--block`` saved
under ``--work`` as they finish (resumable: finished blocks are not redone). Needs the runs'
checkpoints (``train/best.pt``), so it runs on the reproduce tree of command.md, not on the
landed copy. Writes ``ais.csv`` here (one row per model: mean ln p(x) by AIS over the digits);
``summarize.py`` reads it into ``test_log_px_ais`` and the AIS verdicts.

    OMP_NUM_THREADS=1 python -m experiments.seeds_mnist5k_k1.ais --runs runs/seeds-mnist5k-k1 \\
        --work runs/seeds-ais
"""
import argparse
import csv
import math
import os
import time

import torch

from experiments.seeds_mnist5k_k1.summarize import HERE, choose, read_runs

FAMILY = {"vae": "vae", "dvae_a0.5": "dvae-a0.5", "dvae_a1": "dvae-a1", "wni": "wni"}
KNOB_DIR = {"dvae_a0.5": "sigma", "dvae_a1": "sigma", "wni": "H"}


def run_dir(runs, model, strength, seed):
    parts = [runs, "k1", FAMILY[model]]
    if strength:
        parts.append(f"{KNOB_DIR[model]}{float(strength):g}")
    return os.path.join(*parts, f"seed{seed}", "train")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, help="the reproduce tree (with checkpoints)")
    p.add_argument("--work", default="runs/seeds-ais", help="finished blocks go here")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--digits", type=int, default=500)
    p.add_argument("--block", type=int, default=100)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--report-only", action="store_true", help="write ais.csv from the blocks")
    args = p.parse_args(argv)
    from fastair.evaluation import ais_log_likelihood
    from fastair.trained import load_best_model

    chosen = choose(read_runs(args.runs))
    jobs = [(m, chosen[m], s) for s in args.seeds for m in FAMILY if m in chosen]
    rows = []
    for model_name, strength, seed in jobs:
        path = run_dir(args.runs, model_name, strength, seed)
        if not os.path.exists(os.path.join(path, "best.pt")):
            print(f"{path}: no checkpoint yet, skipped", flush=True)
            continue
        model, data, _ = load_best_model(path)
        x = data.test[:args.digits]
        blocks = []
        for b in range(math.ceil(len(x) / args.block)):
            out = os.path.join(args.work, model_name, strength or "-", f"seed{seed}",
                               f"block{b:03d}.pt")
            if not os.path.exists(out):
                if args.report_only:
                    break
                start = time.perf_counter()
                r = ais_log_likelihood(model, x[b * args.block:(b + 1) * args.block],
                                       steps=args.steps, chains=args.chains, init="fitted",
                                       seed=2000 + seed + 100 * b, precision="fp32",
                                       progress=False, warn=False)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                torch.save({"log_px": r.log_px, "se": r.se,
                            "seconds": time.perf_counter() - start, "steps": args.steps,
                            "chains": args.chains}, out + ".tmp")
                os.replace(out + ".tmp", out)
                print(f"{model_name} {strength} seed {seed} block {b}: "
                      f"{time.perf_counter() - start:.0f} s, mean ln p(x) "
                      f"{float(r.log_px.mean()):.3f}", flush=True)
            blocks.append(torch.load(out))
        if not blocks:
            continue
        log_px = torch.cat([blk["log_px"] for blk in blocks])
        rows.append({"model": model_name, "strength": strength, "seed": seed,
                     "n": len(log_px), "test_log_px_ais": f"{float(log_px.mean()):.6f}",
                     "ais_se_mean": f"{float(torch.cat([blk['se'] for blk in blocks]).mean()):.4f}",
                     "steps": args.steps, "chains": args.chains,
                     "seconds_per_digit": f"{sum(b['seconds'] for b in blocks) / len(log_px):.3f}"})
    with open(os.path.join(HERE, "ais.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["model"])
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} model(s) in {os.path.join(HERE, 'ais.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
