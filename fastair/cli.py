"""The command line: ``fastair train``, ``fastair evaluate``, ``fastair sample``,
``fastair reproduce`` (also ``python -m fastair ...``).

``main(argv)`` returns the exit status: 0 done, 1 a failure explained in one line (a diverged
run, a file that cannot be read or written, a run directory in use), 2 bad arguments or a run
directory that does not fit the command, 130 stopped by Ctrl-C and 143 by SIGTERM (a training
run is saved first; continue it with ``--resume``).

Every printed bound is a positive number of nats, lower is better: ``-L_k`` for the bounds,
``-ln p(x)`` for IW-SVI.
"""
import argparse
import contextlib
import os
import signal
import sys

import fastair
from fastair.errors import FastairError, TrainingDiverged
from fastair.io import atomic_write_json, read_json
from fastair.models import PRESETS, preset_kwargs
from fastair.nn import LIKELIHOODS
from fastair.nn.estimators import ESTIMATORS
from fastair.precision import flush_denormals
from fastair.training import (
    TrainConfig,
    Trainer,
    bounds_table,
    rundir,
    seed_everything,
    split_bounds,
)
from fastair.training.options import add_run_options

__all__ = ["main", "build_parser", "TRAIN_DEFAULTS"]

_T = TrainConfig()
TRAIN_DEFAULTS = {
    "model": "vae", "dataset": "mnist5k", "data_root": None, "z_dim": 50, "hidden": "200,200",
    "epochs": _T.epochs, "batch_size": _T.batch_size, "lr": _T.lr, "schedule": _T.schedule,
    "lr_decay": _T.lr_decay, "patience": _T.patience, "seed": _T.seed, "device": _T.device,
    "eval_k": None, "eval_batch_size": _T.eval_batch_size, "threads": None,
    "precision": _T.precision, "k_chunk": None,
}
"""Defaults of ``fastair train`` (options left unset; on ``--resume`` the saved run's values)."""

_TRAIN_FIELDS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                 "schedule": "schedule", "lr_decay": "lr_decay", "patience": "patience",
                 "seed": "seed", "device": "device", "eval_k": "eval_k",
                 "eval_batch_size": "eval_batch_size", "threads": "num_threads",
                 "precision": "precision", "k_chunk": "k_chunk"}


def _hidden(text):
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive ints such as 200,200, got {text!r}")
    return sizes


def _preset_default(field):
    """E.g. ``"1 for vae, dvae, wni-vae; 8 for iwae, diwae, wni-iwae"`` (VAE's own default
    where a preset does not set ``field``)."""
    base = {"k": 1, "sigma": 0.0, "alpha": 1.0, "H": None}[field]
    groups = {}
    for name, kwargs in PRESETS.items():
        groups.setdefault(kwargs.get(field, base), []).append(name)
    if len(groups) == 1:
        return str(next(iter(groups)))
    return "; ".join(f"{'none' if v is None else v} for {', '.join(n)}" for v, n in groups.items())


def _add_train(sub):
    d = TRAIN_DEFAULTS
    p = sub.add_parser(
        "train", help="train a model of the VAE family",
        description="Train one model of the AIR paper (docs/design.md section 5) with Adam, "
                    "validation every epoch, early stopping, and a run directory with "
                    "config.json, metrics.csv/json, last.pt and best.pt. Prints the train, "
                    "validation and test bounds of the best model at the end.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=list(PRESETS), default=None,
                   help=f"preset (default: {d['model']})")
    m.add_argument("--k", type=int, default=None,
                   help="importance samples of the training bound, 1 = ELBO "
                        f"(default: the preset's: {_preset_default('k')})")
    m.add_argument("--sigma", type=float, default=None,
                   help="std of the Gaussian noise on the encoder input, 0 = none "
                        f"(default: the preset's: {_preset_default('sigma')})")
    m.add_argument("--alpha", type=float, default=None,
                   help="weight of the noisy term in [0, 1] "
                        f"(default: the preset's: {_preset_default('alpha')})")
    m.add_argument("--H", dest="H", type=float, default=None,
                   help="WNI row-norm cap of the encoder Linears "
                        f"(default: the preset's: {_preset_default('H')})")
    m.add_argument("--estimator", choices=tuple(ESTIMATORS), default=None,
                   help="gradient estimator of the training bound: iwae (plain), stl (sticking "
                        "the landing), dreg (doubly reparameterized; better encoder gradients "
                        "at large k) (default: iwae)")
    m.add_argument("--likelihood", choices=LIKELIHOODS, default=None,
                   help="the decoder's p(x|z): bernoulli (binary pixels), continuous_bernoulli "
                        "(grey levels in [0, 1], e.g. --dataset mnist5k-grey), gaussian (a "
                        "learned scale) (default: bernoulli)")
    m.add_argument("--z-dim", type=int, default=None, help=f"latent size (default: {d['z_dim']})")
    m.add_argument("--hidden", type=_hidden, default=None,
                   help=f"hidden sizes of the encoder, reversed for the decoder "
                        f"(default: {d['hidden']})")
    g = p.add_argument_group("data")
    t = p.add_argument_group("training")
    r = p.add_argument_group("run")
    add_run_options(p, groups={"--dataset": g, "--data-root": g, "--epochs": t, "--patience": t,
                               "--schedule": t, "--device": r, "--threads": r, "--precision": r,
                               "--no-progress": r}, help={
        "--dataset": f"data set for fastair.data.load_dataset (default: {d['dataset']})",
        "--data-root": "directory of the data files (default: $FASTAIR_DATA or "
                       "~/.cache/fastair/data; mnist5k needs none)",
        "--epochs": f"largest number of epochs (default: {d['epochs']})",
        "--patience": "stop after this many epochs without a better validation bound, 0 = "
                      f"never (default: {d['patience']})",
        "--schedule": "learning-rate schedule, per epoch: constant; exponential (lr * "
                      "lr_decay**epoch); iwae (stage i lasts 3**i epochs at lr * 10**(-i/7), "
                      f"i = 0..7) (default: {d['schedule']})",
        "--device": f"cpu, cuda, cuda:N (default: {d['device']})",
        "--threads": "torch.set_num_threads for the run (default: torch's own choice)",
        "--precision": "fp32; bf16: the forward under bfloat16 autocast (matmuls in bfloat16, "
                       "the fused ops accumulate in float32, weights and Adam in float32); "
                       f"fp16: float16 with loss scaling, CUDA only (default: {d['precision']})",
        "--no-progress": "no progress bar (default: a tqdm bar if tqdm is installed)"})
    t.add_argument("--batch-size", type=int, default=None,
                   help=f"examples per step (default: {d['batch_size']})")
    t.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate (default: {d['lr']})")
    t.add_argument("--lr-decay", type=float, default=None,
                   help=f"per-epoch factor of the exponential schedule (default: {d['lr_decay']})")
    t.add_argument("--seed", type=int, default=None,
                   help=f"seed of torch, numpy, python and the shuffling (default: {d['seed']})")
    t.add_argument("--k-chunk", type=int, default=None, dest="k_chunk",
                   help="importance samples through the decoder at a time in the training bound, "
                        "each chunk remade in the backward: memory flat in k, one more decoder "
                        "forward a step, the same bound and gradients (default: all k at once)")
    t.add_argument("--eval-k", type=int, default=None,
                   help="importance samples of the validation bound (default: the model's k)")
    t.add_argument("--eval-batch-size", type=int, default=None,
                   help=f"examples per evaluation batch (default: {d['eval_batch_size']})")
    r.add_argument("--run-dir", default=None,
                   help="directory of the run (default: runs/<model>-<dataset>-seed<seed>)")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from last.pt, bit for bit; unset options "
                        "take the saved run's values; only --epochs, --patience, --device, "
                        "--threads and --lr may differ from them (a smaller --lr after a "
                        "divergence continues from the last good epoch) (default: off)")
    p.set_defaults(func=_train)
    return p


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastair", description="fastair: amortized inference regularization, fast.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True
    _add_train(sub)
    _add_evaluate(sub)
    from fastair.trained import add_sample_parser as add_sample
    add_sample(sub)
    from fastair.reproduce.command import add_parser as add_reproduce
    add_reproduce(sub)
    _add_info(sub)
    _add_build(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--keep-denormals", action="store_true",
            help="do not flush denormal floats to zero (default: flushed for the whole "
                 "command, as the fused kernels always do; on Intel CPUs denormals make fp32 "
                 "training several times slower, docs/design.md section 1.12)")
    return parser


_METHODS = ("iwsvi", "ais", "both")
"""``fastair evaluate --method``: IW-SVI, AIS, or IW-SVI then AIS from its fitted q."""


def _add_evaluate(sub):
    from fastair.evaluation import INITS, IWSVISettings
    from fastair.evaluation.iwsvi import FIT_PRECISIONS
    d = IWSVISettings()  # the defaults of IW-SVI's options
    p = sub.add_parser(
        "evaluate", help="test log-likelihood (IW-SVI, AIS) of a trained run or of your own model",
        description="Estimate ln p(x) of a run's best model, or of your own VAE (--model-factory "
                    "with --checkpoint), by IW-SVI (fastair.evaluation): each example's q is "
                    f"fitted until its bound stops improving, then {d.k_eval} importance samples "
                    "give ln p(x). Per example log_px, the amortized bound, the gap, the steps "
                    "taken, the effective sample size, the standard error and the split of the gap "
                    "(elbo_enc, elbo_fit, approx_gap, amort_gap) go to "
                    "RUN_DIR/iwsvi/per_example.csv; the means and the diagnostics (median ESS, "
                    "largest standard error, examples at the step cap or unreliable) to "
                    "RUN_DIR/iwsvi/summary.json and the console. --method ais estimates ln p(x) "
                    "by annealed importance sampling with HMC instead, --method both by both "
                    "(AIS from IW-SVI's fitted q; columns ais_log_px, ais_se, ais_ess, "
                    "ais_accept, ais_step_size); --bdmc N brackets ln p(x) on N examples "
                    "simulated from the model (bdmc.csv). The files of an "
                    "evaluation are replaced together or not at all, and summary.json names "
                    "what produced them (checkpoint, data, settings) and each file's SHA-256. "
                    "Your own model: an nn.Module with encode(x) -> (mu, logvar) and "
                    "decode_logits(z) -> logits (fastair.evaluation.protocol).")
    p.add_argument("run_dir", nargs="?", default=None,
                   help="a directory written by `fastair train` (or give --model-factory and "
                        "--checkpoint instead)")
    own = p.add_argument_group("your own model (instead of RUN_DIR)")
    own.add_argument("--model-factory", default=None, metavar="MODULE:FUNCTION",
                     help="a function called with no arguments that returns your nn.Module, "
                          "e.g. mypkg.models:build (imported from PYTHONPATH or the current "
                          "directory) (default: none, RUN_DIR is used)")
    own.add_argument("--checkpoint", default=None, metavar="FILE",
                     help="the model's weights: torch.save(model.state_dict(), FILE), or a "
                          "dict with a 'model' entry holding them (default: none)")
    own.add_argument("--dataset", default=None,
                     help="data set for fastair.data.load_dataset (default: mnist5k; a run "
                          "directory uses its own)")
    own.add_argument("--data-root", default=None,
                     help="directory of the data files (default: $FASTAIR_DATA or "
                          "~/.cache/fastair/data)")
    own.add_argument("--out", default=None, metavar="DIR",
                     help="directory of per_example.csv, summary.json (and bdmc.csv) (default: "
                          "RUN_DIR/iwsvi, or iwsvi beside the --checkpoint file)")
    p.add_argument("--split", choices=("test", "valid", "train"), default="test",
                   help="which split to evaluate (default: %(default)s)")
    p.add_argument("--k-svi", type=int, default=d.k_svi,
                   help="samples of the bound q is fitted on (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=d.max_steps,
                   help="cap on Adam steps per example; each example stops earlier, once its "
                        "bound stops improving (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr,
                   help=f"Adam's starting step size, times {d.decay:g} at each check without a "
                        "gain (default: %(default)s)")
    p.add_argument("--init", choices=INITS, default=d.init,
                   help="where each q starts: the encoder's output or N(0, I) (default: "
                        "%(default)s)")
    p.add_argument("--k-eval", type=int, default=d.k_eval,
                   help="importance samples of the final estimate (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=d.chunk,
                   help="samples drawn at once; memory follows it, not --k-eval "
                        "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="examples optimized together; AIS and BDMC hold (chains + 4 pilots) x "
                        "this many rows of the decoder at once (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the draws: IW-SVI's from SEED and SEED+1, AIS's from SEED+3, "
                        "BDMC's from SEED to SEED+2 (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N (default: "
                                                   "%(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the evaluation (default: torch's own choice)")
    p.add_argument("--precision", choices=FIT_PRECISIONS, default=d.precision,
                   help="the decoder's matmuls in this precision (q, the draws and the sums stay "
                        "float32): auto = bf16 where the device multiplies bf16 natively "
                        "(AVX512-BF16, AMX, CUDA), else fp32; bf16 moves a digit's estimate by "
                        "about 0.02 nat on the same draws, a sixth of its standard error "
                        "(bench/results/iwsvi_accuracy); fp32 for machine-independent numbers. "
                        "AIS and BDMC run in fp32 unless this names bf16 or fp16 "
                        "(default: %(default)s)")
    p.add_argument("--fit-precision", choices=FIT_PRECISIONS, default=d.fit_precision,
                   help="precision of the fit of q alone: auto = --precision unless fp32, else "
                        "bf16 where the device multiplies bf16 natively (AVX512-BF16, AMX, "
                        "CUDA), else fp32 (default: %(default)s)")
    p.add_argument("--elbo-samples", type=int, default=d.elbo_samples,
                   help="samples per example of the amortized bound (default: %(default)s)")
    p.add_argument("--se-target", type=float, default=d.se_target,
                   help="stop each example's final estimate once its standard error is at most "
                        "this many nats (--k-eval is then the cap; default: every example draws "
                        "--k-eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: off)")
    _add_ais_options(p)
    p.set_defaults(func=_evaluate)


def _add_ais_options(p):
    from fastair.evaluation.ais import CHAINS, LEAPFROG, STEPS
    a = p.add_argument_group("AIS and BDMC (fastair.evaluation.ais)")
    a.add_argument("--method", choices=_METHODS, default="iwsvi",
                   help="iwsvi; ais: annealed importance sampling with HMC instead; both: IW-SVI, "
                        "then AIS from its fitted q, and their mean difference (overall, and on "
                        "the examples IW-SVI flags unreliable) (default: %(default)s)")
    a.add_argument("--ais-steps", type=int, default=STEPS, metavar="T",
                   help="AIS temperatures (T - 1 HMC transitions; 1: plain importance "
                        "sampling), for --method ais/both and --bdmc (default: %(default)s)")
    a.add_argument("--ais-chains", type=int, default=CHAINS, metavar="C",
                   help="independent AIS chains per example (default: %(default)s)")
    a.add_argument("--ais-leapfrog", type=int, default=LEAPFROG, metavar="L",
                   help="leapfrog steps per HMC transition (default: %(default)s)")
    a.add_argument("--ais-init", choices=("encoder", "prior", "fitted"), default=None,
                   help="where the AIS path starts: the encoder's q(z|x), N(0, I), or IW-SVI's "
                        "fitted q (with --method ais fitted here with IW-SVI's default "
                        "settings) (default: fitted for --method both, else encoder)")
    a.add_argument("--bdmc", type=int, default=0, metavar="N",
                   help="also run bidirectional Monte Carlo on N examples simulated from the "
                        "model: forward AIS gives a lower, reverse AIS an upper bound of each "
                        "ln p(x); means and the bracket width in the summary, per example in "
                        "bdmc.csv (default: %(default)s, none)")
    a.add_argument("--bdmc-init", choices=("prior", "encoder"), default="prior",
                   help="where BDMC's paths start (default: %(default)s)")


def _add_info(sub):
    p = sub.add_parser(
        "info", help="versions, backends, C++ kernels, threads, CPU and GPUs: for a bug report",
        description="Print what a bug report needs: the versions of python, torch, numpy, "
                    "triton, ninja, the C++ compiler and fastair; the backend the ops use on "
                    "CPU and CUDA tensors and why; whether the C++ kernels are built and where; "
                    "threads; the CPU (model, AVX-512, AMX and bf16 flags); the CUDA devices. "
                    "Builds nothing and imports no Triton (also `python -m fastair --info`).")
    p.set_defaults(func=_info)


def _info(args):
    from fastair.info import main as info_main
    return info_main()


def _add_build(sub):
    p = sub.add_parser(
        "build", help="build the C++ CPU kernels now (the install runs it), not on first use",
        description="Compile the C++ kernels of the native backend (csrc/cpu) into the cache "
                    "that the ops load them from ($FASTAIR_BUILD_DIR, default "
                    "~/.cache/fastair), so that the first op does not wait for the build (about "
                    "a minute on two cores). Nothing to do when they are built already. Needs a "
                    "C++ compiler and ninja; exit status 1 if the build fails (the ops then use "
                    "the pure-torch reference on CPU tensors).")
    p.set_defaults(func=_build)


def _build(args):
    from fastair.backends import native

    try:
        library, seconds = native.build()
    except Exception as err:  # a compiler error, no compiler, no ninja: say so, no traceback
        lines = str(err).strip().splitlines()
        if len(lines) > 1:
            print("\n".join(lines[-40:]), file=sys.stderr)
        print(f"fastair build: error: the C++ kernels could not be built "
              f"({type(err).__name__}: {lines[-1] if lines else ''}); the ops will use the "
              f"pure-torch reference on CPU tensors (slower). The build needs a C++ compiler "
              f"(c++) and ninja; `fastair info` shows what was found.", file=sys.stderr)
        return 1
    if seconds is None:
        print(f"fastair build: the C++ kernels are built already: {library}")
    else:
        print(f"fastair build: C++ kernels built in {seconds:.0f} s: {library}")
    return 0


def _version():
    import platform

    import torch
    return (f"fastair {fastair.__version__} (torch {torch.__version__}, python "
            f"{platform.python_version()})")


def _evaluate(args):
    from fastair import distributed
    from fastair.trained import require_run_dir
    from fastair.training.config import check_device
    _check_evaluate_options(args)
    own = args.model_factory is not None or args.checkpoint is not None
    if own:
        if args.run_dir is not None:
            raise ValueError(f"give RUN_DIR ({args.run_dir}) or --model-factory with "
                             "--checkpoint, not both")
        if args.model_factory is None or args.checkpoint is None:
            missing = "--checkpoint" if args.checkpoint is None else "--model-factory"
            raise ValueError(f"{missing}: your own model needs both --model-factory "
                             "MODULE:FUNCTION (builds it) and --checkpoint FILE (its weights)")
    elif args.run_dir is None:
        raise ValueError("give RUN_DIR (a directory written by `fastair train`), or "
                         "--model-factory MODULE:FUNCTION with --checkpoint FILE for your own "
                         "model")
    elif args.dataset is not None or args.data_root is not None:
        raise ValueError("--dataset, --data-root: a run directory is evaluated on the data set "
                         "it was trained on; these options go with --model-factory")
    else:
        require_run_dir(args.run_dir)
    check_device(args.device)
    _check_evaluate_device(args)
    state = {"out_dir": None, "written": False}  # what an interruption reports
    try:
        with _sigterm_stops(), distributed.start(args.device) as world:
            if own:
                return _evaluate_held(args, world, state)
            # rank 0 holds the run directory and writes; the others only read best.pt
            with rundir.hold(args.run_dir, create=False) if world.main else \
                    contextlib.nullcontext():
                return _evaluate_held(args, world, state)
    except KeyboardInterrupt as err:
        return _evaluate_stopped(state, getattr(err, "signum", signal.SIGINT))


def _check_evaluate_options(args):
    """ValueErrors naming the option, before anything is loaded."""
    import math
    counts = {"--threads": args.threads, "--k-svi": args.k_svi, "--k-eval": args.k_eval,
              "--chunk": args.chunk, "--batch-size": args.batch_size,
              "--elbo-samples": args.elbo_samples, "--ais-steps": args.ais_steps,
              "--ais-chains": args.ais_chains, "--ais-leapfrog": args.ais_leapfrog}
    for option, value in counts.items():
        if value is not None and value < 1:
            raise ValueError(f"{option}: expected an int >= 1, got {value}")
    for option, value in (("--max-steps", args.max_steps), ("--bdmc", args.bdmc)):
        if value < 0:
            raise ValueError(f"{option}: expected an int >= 0, got {value}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr: expected a finite number > 0, got {args.lr}")
    if args.se_target is not None and not (math.isfinite(args.se_target) and args.se_target > 0):
        raise ValueError(f"--se-target: expected a finite number > 0, got {args.se_target}")
    if args.ais_init == "fitted" and args.method == "iwsvi":
        raise ValueError("--ais-init fitted: AIS runs with --method ais or both only")


def _check_evaluate_device(args):
    """A ValueError for a device the evaluation cannot use (after ``check_device``): not cpu
    or cuda, or fp16 off CUDA (as ``fastair train`` refuses it). Resolves ``--precision auto``
    to the precision the device will run, so the summary records what ran."""
    import torch
    kind = torch.device(args.device).type
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"--device {args.device}: fastair evaluates on cpu or cuda devices only; "
                         "use --device cpu")
    for option in ("precision", "fit_precision"):
        if getattr(args, option) == "fp16" and kind != "cuda":
            raise ValueError(f"--{option.replace('_', '-')} fp16: float16 is for CUDA devices "
                             "(as in `fastair train`); on the CPU use bf16 or fp32")
    from fastair.evaluation.iwsvi import resolve_precision
    # AIS and BDMC stay fp32 unless asked: bf16's effect on them is not measured
    args.ais_precision = "fp32" if args.precision == "auto" else args.precision
    args.precision = resolve_precision(args.precision, torch.device(args.device))  # as recorded


class _Stopped(KeyboardInterrupt):
    """SIGTERM during ``fastair evaluate`` (``signum`` says which signal)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _sigterm_stops():
    """SIGTERM raises :class:`_Stopped` in the block (main thread only), as Ctrl-C raises
    KeyboardInterrupt; the previous handler is restored after."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Stopped(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _evaluate_stopped(state, signum):
    """Say what an interrupted ``fastair evaluate`` left behind; returns 128 + ``signum``."""
    from fastair.evaluation.output import SUMMARY
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    out_dir = state["out_dir"]
    summary = None if out_dir is None else os.path.join(out_dir, SUMMARY)
    again = ("; an evaluation does not resume: run the same command again to evaluate from "
             "the start")
    if state["written"]:
        what, again = (f"after the evaluation was written: {summary} and the files it names "
                       "are complete"), ""
    elif summary is None:
        what = "before anything was written"
    elif os.path.exists(summary):
        what = (f"before the results were written; {out_dir} still holds the previous "
                "evaluation, unchanged (an evaluation's files are replaced together or not at "
                "all)")
    else:
        what = f"before the results were written; no evaluation was put in {out_dir}"
    print(f"\nfastair evaluate: stopped by {name} {what}{again}", file=sys.stderr)
    return 128 + signum


def _load_for_evaluate(args, say):
    """``(model, data, source, out_dir, checkpoint)`` of ``fastair evaluate``: a run's best
    model and its data set, or a user's model (``--model-factory``, ``--checkpoint``) and
    ``--dataset``; ``checkpoint`` is the file the weights came from."""
    if args.model_factory is None:
        from fastair.trained import load_best_model
        model, data, notes = load_best_model(args.run_dir)
        for note in notes:
            say(f"note: {note}", file=sys.stderr)
        fallback = any("kept in last.pt" in note for note in notes)  # best.pt was unreadable
        checkpoint = os.path.join(args.run_dir, "last.pt" if fallback else "best.pt")
        return (model, data, args.run_dir, args.out or os.path.join(args.run_dir, "iwsvi"),
                checkpoint)
    from fastair.data import load_dataset
    from fastair.trained import load_factory_model
    model = load_factory_model(args.model_factory, args.checkpoint)
    dataset = args.dataset or "mnist5k"
    from fastair.evaluation import check_model
    try:
        check_model(model)  # the methods, before the data are loaded; the probe comes later
    except TypeError as err:
        raise ValueError(f"--model-factory {args.model_factory}: {err}") from None
    data = load_dataset(dataset, root=args.data_root)
    out_dir = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "iwsvi")
    return (model, data, f"{args.model_factory} with {args.checkpoint} on {dataset}", out_dir,
            args.checkpoint)


@contextlib.contextmanager
def _evaluation_dir(args, out_dir, world, state):
    """Rank 0 owns ``out_dir`` for the block: created (removed again if it stays empty),
    locked unless it lies inside the run directory already held, temporary files of a killed
    evaluation removed."""
    from fastair.evaluation.output import make_directory
    from fastair.io import remove_stale_temp_files
    if not world.main:
        yield
        return
    created = make_directory(out_dir)
    state["out_dir"] = out_dir
    inside = args.run_dir is not None and os.path.realpath(out_dir).startswith(
        os.path.join(os.path.realpath(args.run_dir), ""))
    try:
        with contextlib.nullcontext() if inside else rundir.hold(out_dir, create=False):
            remove_stale_temp_files(out_dir)
            yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out_dir)  # only if nothing is in it


def _evaluate_held(args, world, state):
    import torch

    from fastair import distributed
    from fastair.evaluation import check_model
    from fastair.evaluation.bound import model_k
    from fastair.evaluation.output import write_evaluation

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if world.size > 1 and (args.method != "iwsvi" or args.bdmc):
        raise ValueError("--method ais/both and --bdmc run in one process; start fastair "
                         "evaluate without torchrun for them")
    say = print if world.main else (lambda *a, **k: None)
    shards = f" over {world.size} processes" if world.size > 1 else ""
    what = (args.model_factory if args.model_factory is not None
            else f"{args.run_dir}, loading the best model and the data")
    say(f"fastair evaluate: {what}{shards}", flush=True)
    model, data, source, out_dir, checkpoint = _load_for_evaluate(args, say)
    weights = rundir.data_fingerprint(*model.state_dict().values())
    device = distributed.rank_device(args.device)
    model.to(device)
    x = getattr(data, args.split).to(device)
    try:
        check_model(model, x)
    except TypeError as err:  # the command line reports it as a bad argument (exit 2)
        raise ValueError(f"{source}: {err}") from None
    k_model = model_k(model)
    with _evaluation_dir(args, out_dir, world, state):
        iw, ais, sim = _evaluate_methods(args, model, x, world)
        if not world.main:
            return 0
        producer = _evaluation_producer(args, checkpoint, weights, data, x)
        files, summary = _evaluation_files(args, iw, ais, sim, k_model, producer)
        summary = write_evaluation(out_dir, files, summary,
                                   on_commit=lambda: state.update(written=True))
    _print_evaluation(args, summary, out_dir, k_model)
    return 0


def _ais_init(args):
    return args.ais_init or ("fitted" if args.method == "both" else "encoder")


def _evaluate_methods(args, model, x, world):
    """``(IWSVIResult or None, AISResult or None, BDMCResult or None)`` as the options ask."""
    import torch

    from fastair.evaluation import ais_log_likelihood, bdmc, sharded_iwsvi_log_likelihood
    progress = not args.no_progress
    iw = ais = sim = None
    init = _ais_init(args)
    if args.method in ("iwsvi", "both"):
        iw = sharded_iwsvi_log_likelihood(
            model, x, k_svi=args.k_svi, max_steps=args.max_steps, lr=args.lr, k_eval=args.k_eval,
            chunk=args.chunk, batch_size=args.batch_size, seed=args.seed, progress=progress,
            init=args.init, warn=False, precision=args.precision,
            fit_precision=args.fit_precision, elbo_samples=args.elbo_samples,
            se_target=args.se_target, keep_q=args.method == "both" and init == "fitted")
    if args.method in ("ais", "both"):
        # AIS draws from SEED + 3: its chains must not reuse the draws IW-SVI fitted q on
        fitted = (iw.q_mu, iw.q_logvar) if iw is not None and init == "fitted" else None
        ais = ais_log_likelihood(
            model, x, steps=args.ais_steps, chains=args.ais_chains, init=init,
            leapfrog=args.ais_leapfrog, seed=args.seed + 3, precision=args.ais_precision,
            progress=progress and world.main, batch_size=args.batch_size, fitted=fitted,
            warn=False)
    if args.bdmc:
        with torch.no_grad():
            z_dim = int(model.encode(x[:1])[0].shape[-1])
        sim = bdmc(model, args.bdmc, steps=args.ais_steps, chains=args.ais_chains,
                   leapfrog=args.ais_leapfrog, init=args.bdmc_init, seed=args.seed,
                   precision=args.ais_precision, progress=progress and world.main,
                   batch_size=args.batch_size, z_dim=z_dim)
    return iw, ais, sim


_EVAL_SETTINGS = ("method", "split", "seed", "k_svi", "max_steps", "lr", "init", "k_eval",
                  "chunk", "batch_size", "precision", "fit_precision", "elbo_samples",
                  "se_target", "ais_steps", "ais_chains", "ais_leapfrog", "ais_init", "bdmc",
                  "bdmc_init")


def _evaluation_producer(args, checkpoint, weights, data, x):
    """What produced an evaluation's files: the checkpoint (path, SHA-256, a fingerprint of the
    weights), the data (set, split, fingerprint) and every setting that changes a number."""
    import torch

    from fastair.evaluation.output import sha256_file
    try:
        digest = sha256_file(checkpoint)
    except OSError:
        digest = None
    settings = {name: getattr(args, name) for name in _EVAL_SETTINGS}
    settings["ais_init"] = _ais_init(args) if args.method != "iwsvi" else None
    return {"command": "fastair evaluate",
            "fastair": fastair.__version__, "torch": torch.__version__,
            "run_dir": None if args.run_dir is None else os.path.abspath(args.run_dir),
            "model_factory": args.model_factory, "checkpoint": os.path.abspath(checkpoint),
            "checkpoint_sha256": digest, "weights": weights, "dataset": data.name,
            "split": args.split, "n": int(x.shape[0]),
            "data": rundir.data_fingerprint(x), "settings": settings}


def _ais_csv_columns(ais):
    """The ``ais_*`` header and per-example cells of ``per_example.csv``."""
    head = ["ais_log_px", "ais_se", "ais_ess", "ais_accept", "ais_step_size"]
    cells = [f"{a:.6f},{s:.6f},{e:.2f},{acc:.4f},{h:.5g}" for a, s, e, acc, h in zip(
        ais.log_px.tolist(), ais.se.tolist(), ais.ess.tolist(), ais.acceptance.tolist(),
        ais.step_size.tolist())]
    return head, cells


def _mean_se(d):
    """``{"n", "mean", "se"}`` of the values ``d`` ``[n]`` (se None below two values)."""
    n = int(d.numel())
    return {"n": n, "mean": d.mean().item() if n else None,
            "se": (d.std() / n ** 0.5).item() if n > 1 else None}


def _evaluation_files(args, iw, ais, sim, k_model, producer):
    """``({name: text}, summary)`` of an evaluation."""
    files, warns = {}, []
    if iw is not None:
        summary = dict(iw.summary())
        lines = iw.per_example_csv().splitlines()
        warns += iw.warnings()
    else:
        summary = {"n": int(ais.log_px.numel())}
        lines = ["index"] + [str(i) for i in range(ais.log_px.numel())]
    summary.update(method=args.method, split=args.split, k_model=k_model, seed=args.seed,
                   precision=args.precision)
    if iw is not None:
        summary.update(k_svi=args.k_svi, lr=args.lr, init=args.init)
    if ais is not None:
        head, cells = _ais_csv_columns(ais)
        lines = [f"{lines[0]},{','.join(head)}"] + [f"{a},{b}" for a, b in zip(lines[1:], cells)]
        summary["ais"] = dict(ais.summary(), seed=args.seed + 3, adapt=ais.adapt,
                              pilot=ais.pilot, precision=args.ais_precision)
        warns += [f"AIS: {m}" for m in ais.warnings()]
    if iw is not None and ais is not None:
        d = ais.log_px - iw.log_px
        flagged = iw.unreliable()
        summary["ais_minus_iwsvi"] = dict(_mean_se(d), flagged=_mean_se(d[flagged]),
                                          unflagged=_mean_se(d[~flagged]))
    files["per_example.csv"] = "\n".join(lines) + "\n"
    if sim is not None:
        files["bdmc.csv"] = sim.per_example_csv()
        summary["bdmc"] = dict(sim.summary(), seed=args.seed, file="bdmc.csv")
    summary["warnings"] = warns
    if args.model_factory is not None:
        summary.update(model_factory=args.model_factory,
                       checkpoint=os.path.abspath(args.checkpoint),
                       dataset=args.dataset or "mnist5k")
    summary["producer"] = producer
    return files, summary


def _print_evaluation(args, summary, out_dir, k_model):
    if "-ln p(x)" in summary:  # IW-SVI
        print(f"{args.split}: -ln p(x) {summary['-ln p(x)']:.2f} (± {summary['se_of_mean']:.3f} "
              f"from the samples), gap {summary['gap']:.2f}, -L_{k_model}(x) "
              f"{summary['-L(x)']:.2f} nats over {summary['n']} examples")
        print(f"gap of the ELBO: approximation {summary['approx_gap']:.2f} + amortization "
              f"{summary['amort_gap']:.2f} nats (-ELBO of the fitted q {summary['-elbo_fit']:.2f}"
              f", of the encoder's {summary['-elbo_enc']:.2f})")
        print(f"diagnostics: median ESS {summary['median_ess']:.0f} of {args.k_eval}, largest "
              f"standard error {summary['max_se']:.3f} nat, steps {summary['mean_steps']:.0f} on "
              f"average ({summary['max_steps_used']} at most), {summary['n_hit_cap']} example(s) "
              f"hit the cap of {args.max_steps}, {summary['n_unreliable']} unreliable")
    if "ais" in summary:
        a = summary["ais"]
        print(f"{args.split}: AIS -ln p(x) {a['-ln p(x)']:.2f} (± {a['se_of_mean']:.3f}) over "
              f"{a['n']} examples: {a['steps']} temperatures, {a['chains']} chains from "
              f"{a['init']} q, acceptance {a['mean_acceptance']:.2f} (smallest "
              f"{a['min_acceptance']:.2f}), largest standard error {a['max_se']:.3f} nat, "
              f"{a['n_unreliable']} unreliable")
    if "ais_minus_iwsvi" in summary:
        d = summary["ais_minus_iwsvi"]

        def part(p):
            if not p["n"]:
                return "none"
            se = "" if p["se"] is None else f" ± {p['se']:.3f}"
            return f"{p['mean']:+.3f}{se} nat over {p['n']}"
        print(f"AIS - IW-SVI on ln p(x): {part(d)}; on the examples IW-SVI flags unreliable "
              f"{part(d['flagged'])}, on the others {part(d['unflagged'])}")
    if "bdmc" in summary:
        b = summary["bdmc"]
        print(f"BDMC on {b['n']} simulated examples ({b['steps']} temperatures, {b['chains']} "
              f"chains from the {b['init']}): -ln p(x) bracketed by {-b['upper']:.2f} (reverse "
              f"AIS) and {-b['lower']:.2f} (forward AIS), width {b['width']:.3f} nat on "
              f"average, {b['max_width']:.3f} at most")
    names = list(summary["files"]) + ["summary.json"]
    print(f"written: {', '.join(os.path.join(out_dir, n) for n in names)}")
    for message in summary["warnings"]:
        print(f"warning: {message}", file=sys.stderr)


def _saved_run(run_dir):
    """The saved run's settings, from its checkpoint (config.json is for people and may have
    been edited): ``{"meta", "train", "model": {"hparams"}}``."""
    from fastair.errors import CheckpointError
    from fastair.training import load_checkpoint

    ck = load_checkpoint(os.path.join(run_dir, "last.pt"))
    meta = ck.get("meta")
    if meta is None:  # written by fastair 0.1: the run's facts were in config.json only
        meta = read_json(os.path.join(run_dir, "config.json"), "run config").get("meta", {})
    if not isinstance(ck.get("config"), dict) or not isinstance(ck.get("model_hparams"), dict):
        raise CheckpointError(f"{os.path.join(run_dir, 'last.pt')}: not a checkpoint of "
                              "`fastair train` (no training settings or model in it)")
    return {"meta": meta, "train": ck["config"], "model": {"hparams": ck["model_hparams"]}}


def _train(args):
    if args.resume and args.run_dir is None:
        raise ValueError("--resume needs --run-dir")
    if args.resume:
        rundir.start_mode(args.run_dir, True)  # a clear refusal before any data is loaded
        with rundir.hold(args.run_dir, create=False):
            return _train_held(args, _saved_run(args.run_dir))
    return _train_held(args, None)


def _train_held(args, saved):
    from fastair.data import load_dataset
    from fastair.models import VAE
    from fastair.training.config import check_device

    given = {k: v for k, v in vars(args).items() if v is not None}
    if saved is not None:  # the saved run's settings, then what the command line says
        meta, tcfg = saved.get("meta", {}), dict(saved["train"])
        settings = {**TRAIN_DEFAULTS, "model": meta.get("model", "vae"),
                    "dataset": meta.get("dataset", "mnist5k"), "data_root": meta.get("data_root")}
        settings.update({cli: tcfg.get(field, TRAIN_DEFAULTS[cli])  # older runs lack some
                         for cli, field in _TRAIN_FIELDS.items()})
        model_kwargs = dict(saved["model"]["hparams"])
        model_kwargs["hidden"] = tuple(model_kwargs["hidden"])
    else:
        settings, model_kwargs = dict(TRAIN_DEFAULTS), None
    settings.update({k: v for k, v in given.items() if k in TRAIN_DEFAULTS})
    if saved is None:
        hidden = settings["hidden"]
        hidden = _hidden(hidden) if isinstance(hidden, str) else tuple(hidden)
        model_kwargs = preset_kwargs(settings["model"], k=args.k, sigma=args.sigma,
                                     alpha=args.alpha, H=args.H, z_dim=settings["z_dim"],
                                     hidden=hidden, estimator=args.estimator)
        if args.likelihood not in (None, "bernoulli"):
            model_kwargs["likelihood"] = args.likelihood
    else:
        model_kwargs.update({n: given[n] for n in ("k", "sigma", "alpha", "H", "estimator",
                                                   "likelihood") if n in given})
        if "z_dim" in given:
            model_kwargs["z_dim"] = given["z_dim"]
        if "hidden" in given:
            model_kwargs["hidden"] = given["hidden"]

    config = TrainConfig(**{field: settings[cli] for cli, field in _TRAIN_FIELDS.items()},
                         progress=not args.no_progress)
    check_device(config.device)  # before the data set is loaded
    run_dir = args.run_dir or os.path.join(
        "runs", f"{settings['model']}-{settings['dataset']}-seed{config.seed}")
    data = load_dataset(settings["dataset"], root=settings["data_root"])
    model_kwargs.setdefault("x_dim", data.x_dim)
    seed_everything(config.seed)  # the model's initial weights follow the seed
    model = VAE(**model_kwargs)
    meta = {"model": settings["model"], "dataset": settings["dataset"],
            "data_root": settings["data_root"], "sizes": list(data.sizes)}
    from fastair import distributed
    with distributed.start(config.device) as world:
        return _train_ranks(args, settings, config, model, data, meta, run_dir, world)


def _train_ranks(args, settings, config, model, data, meta, run_dir, world):
    """``fastair train`` in this process: alone, or as one rank of a torchrun group (rank 0
    holds the run directory, writes and prints)."""
    ranks = f", DDP over {world.size} processes" if world.size > 1 else ""
    if world.main:
        print(f"fastair train: {settings['model']} {model.extra_repr()} on "
              f"{settings['dataset']} {data.sizes}, run dir {run_dir}{ranks}", flush=True)
    held = rundir.hold(run_dir) if world.main else contextlib.nullcontext()
    with held:  # the run and its bounds.json, written by rank 0 only
        try:
            result = Trainer(model, data.train, data.valid, config, run_dir, meta=meta,
                             data_parallel=world.size > 1).fit(resume=args.resume)
        except TrainingDiverged as err:
            raise TrainingDiverged(
                f"{err}: fastair train --run-dir {run_dir} --resume --lr "
                f"{config.lr / 2:g}", err.epoch, err.last_good_epoch) from None
        except KeyboardInterrupt as err:  # a second signal, e.g. during the final save
            code = 128 + (getattr(err, "signal", None) or signal.SIGINT)
            if not world.main:
                return code
            if os.path.exists(os.path.join(run_dir, "last.pt")):
                print(f"\ninterrupted; last.pt keeps the last state saved before the stop. "
                      f"Continue with: fastair train --run-dir {run_dir} --resume",
                      file=sys.stderr)
            else:
                print(f"\ninterrupted before the run's first checkpoint; {run_dir} holds no "
                      "run to continue: start it again", file=sys.stderr)
            return code
        if not world.main:
            return 128 + (result.signal or signal.SIGINT) if result.interrupted else 0
        if result.interrupted:
            print(f"interrupted after {result.epochs} epoch(s); last.pt saved. Continue with: "
                  f"fastair train --run-dir {run_dir} --resume", file=sys.stderr)
            return 128 + (result.signal or signal.SIGINT)
        bounds = report_run(model, data, settings["model"], result, config)
        atomic_write_json(os.path.join(run_dir, "bounds.json"), {
            "bounds": bounds, "-L": {s: -v for s, v in bounds.items()}, "k": model.k,
            "best_epoch": result.best_epoch, "epochs": result.epochs,
            "stop_reason": result.stop_reason})
    return 0


def report_run(model, data, name, result, config):
    """Print the best model's train/validation/test ``-L_k`` (eval mode, the model's k, positive
    nats as ``fastair evaluate`` prints ``-ln p(x)``); returns the bounds ``L_k`` themselves."""
    bounds = split_bounds(model.to(config.device), data, batch_size=config.eval_batch_size)
    print(f"stopped: {result.stop_reason} after {result.epochs} epochs; best epoch "
          f"{result.best_epoch}")
    print(bounds_table({name: {s: -v for s, v in bounds.items()}},
                       title=f"-L_{model.k} of the best model (nats, lower is better)"))
    return bounds


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = _sigterm_as_interrupt()
    try:
        with flush_denormals(not args.keep_denormals):
            return args.func(args)
    except FastairError as err:
        print(f"fastair {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"fastair {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # permissions, a vanished disk: a sentence, not a traceback
        print(f"fastair {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # 130 for Ctrl-C, 143 for SIGTERM
        print(f"\nfastair {args.command}: interrupted; every file is written whole or not at "
              "all, so nothing on disk is half-written; run the command again to finish",
              file=sys.stderr)
        return 128 + (getattr(err, "signal", None) or signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt():
    """SIGTERM (what ``kill`` and schedulers send) stops a command as Ctrl-C does: the trainer
    saves its checkpoint, temporary files are removed. Returns the previous handler."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    from fastair.training.trainer import Interrupted

    def handler(signum, frame):
        raise Interrupted(signum)

    return signal.signal(signal.SIGTERM, handler)
