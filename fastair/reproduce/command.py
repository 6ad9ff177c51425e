"""``fastair reproduce`` on the command line: options, defaults and the printed tables."""
import signal
import sys

from fastair import distributed
from fastair.reproduce.protocol import FAMILIES, ReproduceConfig
from fastair.training.options import add_run_options

__all__ = ["add_parser", "run"]

_FULL = ReproduceConfig()
_QUICK = ReproduceConfig.quick_preset()


def _both(name):
    full, quick = getattr(_FULL, name), getattr(_QUICK, name)
    show = (lambda v: " ".join(f"{x:g}" for x in v)) if isinstance(full, tuple) else str
    if full == quick:
        return f"default: {show(full)}"
    return f"default: {show(full)}; with --quick {show(quick)}"


def add_parser(sub):
    p = sub.add_parser(
        "reproduce", help="the AIR paper's experiments: train, choose on validation, IW-SVI",
        description="Train the models of the AIR paper's tables (VAE, DVAE with alpha 0.5 and 1, "
                    "WNI-VAE; their IWAE versions at k > 1) over a grid of the regularization "
                    "strength and several seeds, estimate ln p(x) on validation and test by "
                    "IW-SVI, choose each model's strength on validation ln p(x), and print and "
                    "write the tables (-ln p(x), Delta_inf, -L(x), mean ± std over seeds) with "
                    "results.json, runs.csv, grid.csv, table.csv, report.md and PNG figures. "
                    "Resumable: run the same command again after an interruption; finished "
                    "runs are not redone.")
    add_run_options(p, help={
        "--dataset": "data set of fastair.data (default: %(default)s)",
        "--data-root": "directory of the data files (default: $FASTAIR_DATA or "
                       "~/.cache/fastair/data; mnist5k needs none)",
        "--epochs": f"most epochs per run ({_both('epochs')})",
        "--patience": f"early-stopping patience ({_both('patience')})",
        "--schedule": "learning-rate schedule from Adam's 1e-3: constant, exponential, or iwae "
                      "(the IWAE paper's stages, 1, 3, 9, ... epochs each a tenth of a decade "
                      f"lower) ({_both('schedule')})",
        "--device": f"torch device ({_both('device')})",
        "--threads": "torch threads (default: torch's choice)",
        "--precision": "training precision: fp32, bf16 (bfloat16 autocast) or fp16 (CUDA) "
                       f"({_both('precision')})",
        "--no-progress": "no progress bar (default: the bars of the runs, their epochs and "
                         "IW-SVI)"})
    p.set_defaults(dataset=_FULL.dataset)
    p.add_argument("--k", type=int, nargs="+", default=list(_FULL.ks), dest="ks",
                   help="the k of each table, 1: Table 1, 8 64: Tables 2-3 (default: 1)")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"seeds per grid value ({_both('seeds')})")
    p.add_argument("--sigmas", type=float, nargs="+", default=None,
                   help=f"grid of the denoising noise std ({_both('sigmas')})")
    p.add_argument("--Hs", type=float, nargs="+", default=None,
                   help=f"grid of WNI's cap H ({_both('Hs')})")
    p.add_argument("--models", nargs="+", default=None, dest="families",
                   choices=[f.key for f in FAMILIES],
                   help="families to run (default: the paper's four, vae dvae-a0.5 dvae-a1 wni; "
                        "wni-hidden: WNI capping the hidden layers only)")
    p.add_argument("--k-svi", type=int, default=None, help=f"IW-SVI samples ({_both('k_svi')})")
    p.add_argument("--max-steps", type=int, default=None,
                   help=f"cap on IW-SVI steps per example; each stops earlier when its bound "
                        f"stops improving ({_both('max_steps')})")
    p.add_argument("--svi-lr", type=float, default=None, help=f"IW-SVI lr ({_both('svi_lr')})")
    p.add_argument("--k-eval", type=int, default=None,
                   help=f"importance samples of ln p(x) ({_both('k_eval')})")
    p.add_argument("--chunk", type=int, default=None,
                   help=f"samples drawn at once ({_both('chunk')})")
    p.add_argument("--valid-n", type=int, default=None, dest="valid_n",
                   help="choose the grid value on the first N validation examples (default: "
                        "all)")
    p.add_argument("--test-chosen-only", action="store_true", default=None,
                   dest="test_chosen_only",
                   help="IW-SVI on test only for each family's chosen value, after every run "
                        "is validated (default: every run)")
    p.add_argument("--eval-precision", choices=("fp32", "bf16", "auto"), default=None,
                   dest="eval_precision",
                   help="IW-SVI's precision on validation and test: fp32 (the same numbers on "
                        "every machine), bf16, or auto (bf16 where the CPU or GPU has it "
                        f"natively) ({_both('eval_precision')})")
    p.add_argument("--no-stack", action="store_false", dest="stack", default=None,
                   help="train one run at a time (default: the runs of each k <= 8 and seed "
                        "train together as one stacked model; same files and results)")
    p.add_argument("--out", default=None,
                   help="output root (default: runs/reproduce-DATASET, -quick with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="a few minutes: 1 seed, 2 values per grid, 60 epochs, light IW-SVI")
    p.set_defaults(func=run)
    return p


_FIELDS = ("seeds", "sigmas", "Hs", "families", "epochs", "patience", "schedule", "k_svi",
           "max_steps", "svi_lr", "k_eval", "chunk", "device", "threads", "precision",
           "eval_precision", "stack", "valid_n", "test_chosen_only")
"""The options (by dest) that set the :class:`ReproduceConfig` field of the same name when
given; ``threads`` sets ``num_threads``."""


def run(args):
    """Build the config from ``args``, run everything, print the tables; exit status."""
    from fastair.reproduce import default_root

    given = {"num_threads" if name == "threads" else name: getattr(args, name)
             for name in _FIELDS if getattr(args, name) is not None}
    given.update(dataset=args.dataset, data_root=args.data_root, ks=tuple(args.ks))
    config = ReproduceConfig.quick_preset(**given) if args.quick else ReproduceConfig(**given)
    root = args.out or default_root(config)
    with distributed.start(config.device) as world:
        config.device = str(distributed.rank_device(config.device))  # cuda -> cuda:LOCAL_RANK
        return _run(config, root, args, world)


def _run(config, root, args, world):
    from fastair.reproduce import markdown_tables, reproduce

    ranks = f", {world.size} processes" if world.size > 1 else ""
    if world.main:
        print(f"fastair reproduce: {config.dataset}, k {list(config.ks)}, {config.seeds} "
              f"seed(s), output {root}{ranks}", flush=True)
    try:
        summary, paths = reproduce(config, root, progress=not args.no_progress)
    except KeyboardInterrupt as err:
        print(f"\ninterrupted; finished runs are kept under {root}. Run the same command "
              "again to continue.", file=sys.stderr)
        return 128 + (getattr(err, "signal", None) or signal.SIGINT)
    if not world.main:
        return 0
    print()
    print(markdown_tables(summary, config.dataset))
    print(f"written: {', '.join(paths)}")
    return 0
