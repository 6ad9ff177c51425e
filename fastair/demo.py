"""``python -m fastair.demo``: train a VAE and a DVAE on mnist5k (CPU, a few minutes) and print
their train / validation / test bounds side by side.

Both models use the paper's architecture and protocol (Adam 1e-3, batch 100, early stopping on
the validation bound); the DVAE only adds Gaussian noise to the encoder's input (and, with
alpha = 0.5, also keeps the clean term). Expect the DVAE's test bound to be the better one.
Options: ``--help``.
"""
import argparse
import os
import sys
import tempfile
import time

from fastair.data import load_dataset
from fastair.models import preset
from fastair.training import Trainer, TrainConfig, bounds_table, seed_everything, split_bounds

DEFAULTS = dict(epochs=500, patience=30, sigma=0.4, alpha=0.5, seed=0, device="cpu")


def train_and_bound(name, data, config, run_dir=None, **model_kwargs):
    """Train preset ``name`` on ``data`` (``.train``, ``.valid``, ``.test``); return a row with
    the best model's bounds (eval mode, its own k), the best epoch and the training time."""
    seed_everything(config.seed)
    model = preset(name, x_dim=data.x_dim, **model_kwargs)
    start = time.perf_counter()
    result = Trainer(model, data.train, data.valid, config, run_dir,
                     meta={"model": name, "dataset": data.name}).fit()
    seconds = time.perf_counter() - start
    bounds = split_bounds(model, data)
    return {**bounds, "gap": bounds["train"] - bounds["test"], "best epoch": result.best_epoch,
            "epochs": result.epochs, "time (s)": seconds, "stop": result.stop_reason}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastair.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                   help="largest number of epochs per model (default: %(default)s)")
    p.add_argument("--patience", type=int, default=DEFAULTS["patience"],
                   help="early-stopping patience in epochs (default: %(default)s)")
    p.add_argument("--sigma", type=float, default=DEFAULTS["sigma"],
                   help="the DVAE's input-noise std (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=DEFAULTS["alpha"],
                   help="the DVAE's weight of the noisy term (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed (default: %(default)s)")
    p.add_argument("--device", default=DEFAULTS["device"], help="device (default: %(default)s)")
    p.add_argument("--run-root", default=None,
                   help="keep the two runs under this directory (default: a temporary one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: off)")
    args = p.parse_args(argv)
    data = load_dataset("mnist5k")
    config = TrainConfig(epochs=args.epochs, patience=args.patience, seed=args.seed,
                         device=args.device, progress=not args.no_progress)
    with tempfile.TemporaryDirectory(prefix="fastair-demo-") as tmp:
        root = args.run_root or tmp
        models = {"VAE": ("vae", {}),
                  f"DVAE (sigma={args.sigma:g}, alpha={args.alpha:g})":
                      ("dvae", dict(sigma=args.sigma, alpha=args.alpha))}
        rows = {}
        for label, (name, kwargs) in models.items():
            print(f"training {label} on mnist5k {data.sizes} ...", flush=True)
            rows[label] = train_and_bound(name, data, config, os.path.join(root, name), **kwargs)
    print()
    print(bounds_table(rows, columns=("train", "valid", "test", "gap", "best epoch", "time (s)"),
                       title="ELBO L_1 of the best model on mnist5k, nats (higher is better; "
                             "gap = train - test)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
