"""The trainer: Adam on the model's per-example objective, validation every epoch, early
stopping, atomic checkpoints every epoch, bit-for-bit resume, and a clean stop on Ctrl-C.

A run directory holds::

    config.json   model hyper-parameters, training settings, seeds, versions (for people:
                  resuming reads the checkpoint, never this file)
    metrics.csv   one row per epoch (:data:`METRIC_COLUMNS`); metrics.json the same rows; both
                  rewritten from last.pt on every resume
    last.pt       everything needed to continue: model, optimizer, scheduler, the RNG states
                  of torch/numpy/python and of the shuffling generator, the epoch, the position
                  inside an interrupted epoch, the best value, the best model and the patience
                  counter, and what the run is (:func:`~fastair.training.rundir.run_identity`)
    best.pt       the model with the best validation bound so far (a copy of last.pt's)
    .lock         who owns the directory now (:func:`~fastair.training.rundir.hold`)

A new run writes last.pt at epoch 0 before anything else, so every run directory that holds
files can be resumed, and a run that diverges in its first epoch can continue with a smaller lr.
"""
import contextlib
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace

import torch

import fastair
from fastair import distributed
from fastair._checks import check_likelihood_data
from fastair.errors import CheckpointError, RunMismatch, TrainingDiverged
from fastair.evaluation.bound import EVAL_SEED, evaluate_bound
from fastair.io import atomic_write_csv, atomic_write_json, progress_bar
from fastair.precision import autocast
from fastair.training import rundir
from fastair.training.checkpoint import (
    atomic_save,
    check_checkpoint,
    get_rng_states,
    load_checkpoint,
    seed_everything,
    set_rng_states,
)
from fastair.training.config import TrainConfig, check_device
from fastair.training.schedules import make_scheduler

__all__ = ["Trainer", "TrainResult", "METRIC_COLUMNS", "make_optimizer", "signal_guard",
           "Interrupted", "committed"]

METRIC_COLUMNS = ("epoch", "lr", "train_bound", "valid_bound", "best_valid_bound", "best_epoch",
                  "bad_epochs", "time_s")
"""Per-epoch metrics: the epoch (from 1), its learning rate, the mean training objective over
the epoch, the validation bound (eval mode, clean encoder), the best so far and its epoch, the
epochs since the best (patience counter) and the epoch's wall time in seconds."""

_FORMAT = 2  # 2: the run's identity, meta and best model inside last.pt
_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
_REFRESH_S = 0.5  # progress-bar refresh period (each refresh reads the running bound once)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns. ``stop_reason``: ``"max_epochs"``, ``"early_stopping"``
    or ``"interrupted"``; ``epochs``: completed epochs; ``metrics``: the per-epoch rows;
    ``signal``: the signal number that interrupted the run (None for a KeyboardInterrupt)."""

    run_dir: str
    epochs: int
    best_epoch: int
    best_valid_bound: float
    stop_reason: str
    metrics: list
    signal: int = None

    @property
    def interrupted(self):
        return self.stop_reason == "interrupted"


def make_optimizer(params, cfg):
    """The optimizer of a run (of :class:`Trainer` and of a stack of runs): Adam over ``params``
    with ``cfg``'s (a :class:`TrainConfig`) ``lr``, ``betas`` and ``adam_eps``; the fused
    (single-kernel) implementation where this torch has it for the device."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps)


class Interrupted(KeyboardInterrupt):
    """A KeyboardInterrupt raised by a signal handler; ``signal``: its number (exit status
    ``128 + signal``)."""

    def __init__(self, signum):
        super().__init__(_SIGNALS.get(signum, f"signal {signum}"))
        self.signal = signum


_commit = {"depth": 0, "held": None}  # see committed(); signal handlers run in the main thread


@contextlib.contextmanager
def committed():
    """A block that a second Ctrl-C or SIGTERM does not split (an optimizer step and the count
    of its batch, an epoch's end): the signal's :class:`Interrupted` is raised when it ends."""
    if threading.current_thread() is not threading.main_thread():  # no handler runs here
        yield
        return
    _commit["depth"] += 1
    try:
        yield
    finally:
        _commit["depth"] -= 1
        signum = None if _commit["depth"] else _commit["held"]
        if signum is not None:  # dropped if the block failed: its error goes on instead
            _commit["held"] = None
    if signum is not None:
        raise Interrupted(signum)


@contextlib.contextmanager
def signal_guard(owner):
    """First Ctrl-C or SIGTERM: set ``owner._stop_requested`` (and ``_stop_signal``), so that
    the loop finishes its current batch, saves and stops. Second: :class:`Interrupted` at once,
    or at the end of a :func:`committed` block (the checkpoint is still saved, without the
    unfinished batch). A no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if owner._stop_requested:
            if _commit["depth"]:
                _commit["held"] = signum
                return
            raise Interrupted(signum)
        owner._stop_requested, owner._stop_signal = True, signum
        name = _SIGNALS[signum]
        print(f"\nfastair: {name}: stopping after this batch ({name} again to stop now)",
              file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _commit["held"] = None


def _likelihood(model):
    """The likelihood whose data check the trainer applies: the model's ``likelihood``
    (:class:`fastair.models.VAE`'s), ``"bernoulli"`` for a model without one."""
    likelihood = getattr(model, "likelihood", "bernoulli")
    return likelihood if likelihood in ("continuous_bernoulli", "gaussian") else "bernoulli"


class Trainer:
    """Train ``model`` (a :class:`fastair.models.VAE` or any module with ``bound(x) -> [B]`` and
    ``hparams``) by maximizing ``model.bound(x).mean()`` with Adam.

    Args:
        model: the model; its weights are updated in place, and hold the best model (by the
            validation bound) when :meth:`fit` returns.
        train_x: ``[N, D]`` training data (moved to ``config.device``).
        valid_x: ``[N, D]`` validation data (moved to ``config.device``).
        config: a :class:`TrainConfig` (default settings if None); keyword ``settings`` override
            its fields, e.g. ``Trainer(model, tx, vx, epochs=5)``.
        run_dir: directory for config, metrics and checkpoints (None: keep nothing on disk).
        meta: extra JSON-able facts to record in ``config.json`` (data set name, preset ...).
        on_batch_end: optional ``f(trainer, batch_index)`` after every optimizer step.
        on_epoch_end: optional ``f(trainer, row)`` after every epoch's checkpoint.
        data_parallel: under ``torchrun``, train over every rank of the process group with
            DistributedDataParallel: each global batch of ``batch_size`` split into one slice
            per rank, the random draws those of the global batch (so the steps are a single
            process's, to rounding), validation run whole on every rank, and the files written
            by rank 0 alone; a run may resume with another number of ranks.
    """

    def __init__(self, model, train_x, valid_x, config=None, run_dir=None, *, meta=None,
                 on_batch_end=None, on_epoch_end=None, data_parallel=False, **settings):
        config = config if config is not None else TrainConfig()
        self.config = replace(config, **settings) if settings else config
        self.model, self.train_x, self.valid_x = model, train_x, valid_x
        for name, x in (("train_x", train_x), ("valid_x", valid_x)):
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or len(x) == 0:
                raise ValueError(f"{name}: expected a non-empty [N, D] tensor, got "
                                 f"{getattr(x, 'shape', type(x).__name__)}")
            # once per run: NaN, 0-255 pixels, logits; grey levels in [0, 1] pass (the
            # Bernoulli op takes them too), and a Gaussian model's data need only be finite
            check_likelihood_data(name, x, _likelihood(model))
        self.run_dir = os.fspath(run_dir) if run_dir is not None else None
        self.meta = dict(meta or {})
        self.on_batch_end, self.on_epoch_end = on_batch_end, on_epoch_end
        self.epoch = 0  # completed epochs
        self.best_value, self.best_epoch, self.bad_epochs = -math.inf, 0, 0
        self.metrics, self.partial, self.stop_reason = [], None, None
        self.best_state, self.identity, self.lr_changes = None, None, []
        self._stop_requested, self._rng_before, self._bar = False, None, None
        self._stop_signal, self.scaler = None, None
        self.draw_generator = None  # set by a stack: the generator of this run's draws
        self.data_parallel = bool(data_parallel)
        self.world = distributed.world() if data_parallel else distributed.World()

    # -- files --------------------------------------------------------------------------------
    def _path(self, name):
        return os.path.join(self.run_dir, name)

    def _write_config(self):
        cfg = self.config
        doc = {"model": {"class": type(self.model).__name__,
                         "hparams": getattr(self.model, "hparams", None)},
               "train": cfg.to_dict(), "meta": self.meta,
               "seeds": {"torch": cfg.seed, "numpy": cfg.seed, "python": cfg.seed,
                         "shuffle": cfg.seed, "eval": EVAL_SEED},
               "versions": {"fastair": fastair.__version__, "torch": torch.__version__,
                            "python": sys.version.split()[0]},
               "backend": fastair.backends.active_backend(self.device.type)}
        atomic_write_json(self._path("config.json"), doc)

    def _write_metrics(self):
        if self.run_dir is None or not self._writes():
            return
        atomic_write_json(self._path("metrics.json"), self.metrics)
        atomic_write_csv(self._path("metrics.csv"), self.metrics, METRIC_COLUMNS)

    def _checkpoint(self):
        partial = None
        if self.partial is not None:
            partial = {k: (v.cpu() if isinstance(v, torch.Tensor) else v)
                       for k, v in self.partial.items()}
        return {"format": _FORMAT, "config": self.config.to_dict(),
                "model_hparams": getattr(self.model, "hparams", None),
                "identity": self.identity, "meta": self.meta, "lr_changes": self.lr_changes,
                "best_model": self.best_state, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": self._rng_states(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "shuffle_generator": self.shuffle.get_state(), "epoch": self.epoch,
                "partial": partial, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "metrics": self.metrics,
                "stop_reason": self.stop_reason}

    def _rng_states(self):
        """The RNG states to save: the global ones, with the torch state of the device this
        run draws from replaced by :attr:`draw_generator`'s where a stack drew for it."""
        states = get_rng_states()
        gen = self.draw_generator
        if gen is not None:
            if gen.device.type == "cpu":
                states["torch"] = gen.get_state()
            else:
                states["cuda"] = list(states["cuda"] or torch.cuda.get_rng_state_all())
                states["cuda"][gen.device.index or 0] = gen.get_state()
        return states

    def _save_last(self):
        if self.run_dir is not None and self._writes():
            atomic_save(self._checkpoint(), self._path("last.pt"))
            self._write_metrics()

    def _keep_best(self):
        self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _writes(self):
        """Whether this process writes the run's files (rank 0 under torchrun)."""
        return self.world.main

    def _write_best(self):
        if self.run_dir is not None and self.best_state is not None and self._writes():
            atomic_save({"format": _FORMAT, "model_hparams": getattr(self.model, "hparams", None),
                         "identity": self.identity, "meta": self.meta, "model": self.best_state,
                         "epoch": self.best_epoch, "valid_bound": self.best_value},
                        self._path("best.pt"))

    # -- set-up -------------------------------------------------------------------------------
    def _setup(self, resume):
        cfg = self.config
        check_device(cfg.device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.identity = rundir.run_identity(self.model, self.train_x, self.valid_x, self.meta)
        self.world = distributed.world() if self.data_parallel else distributed.World()
        self.device = (distributed.rank_device(cfg.device) if self.data_parallel
                       else torch.device(cfg.device))
        self.model.to(self.device)
        if cfg.k_chunk is not None:
            if not hasattr(self.model, "k_chunk"):
                raise ValueError(f"k_chunk: {type(self.model).__name__} has no chunked bound "
                                 f"(fastair.models.VAE has); leave k_chunk unset")
            self.model.k_chunk = cfg.k_chunk
        self.train_x = self.train_x.to(self.device)
        self.valid_x = self.valid_x.to(self.device)
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16: loss-scaled float16 training is for CUDA devices; "
                             "use bf16 on a CPU")
        self.scaler = (torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None)
        self.optimizer = make_optimizer(self.model.parameters(), cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule, cfg.lr_decay)
        self.shuffle = torch.Generator()
        self.ddp = None
        if self.world.size > 1:
            self._check_ddp()
        # under torchrun rank 0 decides, before it writes anything, and tells the others
        mode = (rundir.start_mode(self.run_dir, resume)
                if self.run_dir is not None and self.world.main else None)
        mode = distributed.gather(mode)[0] if self.world.size > 1 else mode
        if mode == "resume":
            self._resume(self._path("last.pt"))
        else:
            self._start_fresh()
        if self.world.size > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _check_ddp(self):
        if not hasattr(self.model, "objective_draws"):
            raise ValueError(f"torchrun training: {type(self.model).__name__} has no "
                             "objective_draws; only a fastair VAE trains over several ranks")
        if self.config.batch_size < self.world.size:
            raise ValueError(f"batch size {self.config.batch_size} is below the {self.world.size}"
                             " ranks: each rank needs rows of every batch")

    def _start_fresh(self):
        cfg = self.config
        seed_everything(cfg.seed)
        self.shuffle.manual_seed(cfg.seed)
        if cfg.init_decoder_bias and hasattr(self.model, "init_decoder_bias"):
            self.model.init_decoder_bias(self.train_x)
        if self.run_dir is not None:  # epoch 0 first: a directory with files can be resumed
            self._save_last()
            if self.world.main:
                self._write_config()

    def _resume(self, last):
        try:
            ck = load_checkpoint(last)
        except CheckpointError as err:
            raise CheckpointError(f"{err}. The run cannot continue from it; best.pt, if "
                                  "present and readable, can still be evaluated") from None
        differences = rundir.identity_differences(ck.get("identity") or {}, self.identity)
        saved = TrainConfig.from_dict(ck["config"])
        changed = self.config.changed_for_resume(saved)
        differences += [f"setting {n}: {getattr(saved, n)!r} (saved) vs "
                        f"{getattr(self.config, n)!r}" for n in changed]
        hparams = getattr(self.model, "hparams", None)
        if ck["model_hparams"] != hparams and not ck.get("identity"):
            differences.append(f"model hyper-parameters: {ck['model_hparams']} (saved) vs "
                               f"{hparams}")
        if differences:
            raise RunMismatch(f"{self.run_dir}: cannot resume with other data or model settings "
                              f"than the run was made with; " + "; ".join(differences))
        check_checkpoint(ck, last, "last", model=self.model)  # weights' names and shapes
        self._load(ck)
        if self.config.lr != saved.lr:
            self._change_lr(saved.lr, self.config.lr)
        if self.best_state is not None and not self._best_file_matches(self._path("best.pt")):
            self._write_best()  # a crash between best.pt and last.pt, or a damaged best.pt
        self._save_last()  # metrics.* and last.pt agree again (a crash may have split them)
        self._write_config()

    def _best_file_matches(self, path):
        try:
            return load_checkpoint(path)["epoch"] == self.best_epoch
        except (FileNotFoundError, CheckpointError, KeyError):
            return False

    def _change_lr(self, old, new):
        """Resume with another learning rate: the schedule continues from ``new``."""
        sched = self.scheduler
        sched.base_lrs = [new for _ in sched.base_lrs]
        for group, factor in zip(self.optimizer.param_groups, sched.lr_lambdas):
            group["initial_lr"] = new
            group["lr"] = new * factor(sched.last_epoch)
        self.lr_changes.append({"epoch": self.epoch, "from": old, "to": new})

    def _load(self, ck):
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        set_rng_states(ck["rng"])
        self.shuffle.set_state(ck["shuffle_generator"])
        self.epoch, self.partial = ck["epoch"], ck["partial"]
        self.best_value, self.best_epoch = ck["best_value"], ck["best_epoch"]
        self.bad_epochs, self.metrics = ck["bad_epochs"], list(ck["metrics"])
        self.lr_changes = list(ck.get("lr_changes") or [])
        self.best_state = ck.get("best_model")
        if self.best_state is None and self.best_epoch:  # format 1: the best model is in best.pt
            self.best_state = load_checkpoint(self._path("best.pt"))["model"]

    # -- the loop -----------------------------------------------------------------------------
    def _rng_snapshot(self):
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def _rng_restore(self, snapshot):
        torch.set_rng_state(snapshot[0])
        if snapshot[1] is not None:
            torch.cuda.set_rng_state(snapshot[1], self.device)

    def _refresh_bar(self, running=None, refresh=True):
        """Show -L (positive nats, lower is better, as `fastair evaluate` prints -ln p(x)):
        the running training value (or the last epoch's), the last validation value and the
        best one with its epoch."""
        if self._bar is None:
            return
        post = {}
        if running is None and self.metrics:
            running = self.metrics[-1]["train_bound"]
        if running is not None:
            post["train"] = f"{-running:.2f}"
        if self.metrics:
            post["valid"] = f"{-self.metrics[-1]['valid_bound']:.2f}"
            post["best"] = f"{-self.best_value:.2f}@{self.best_epoch}"
        self._bar.set_postfix(post, refresh=refresh)

    @property
    def n_batches(self):
        return math.ceil(len(self.train_x) / self.config.batch_size)

    def _begin_epoch(self):
        """The epoch's state (a new shuffle at the start of an epoch, else the interrupted
        one's): ``partial`` with its ``perm`` and running ``sum`` on the device."""
        if self.partial is None:
            with committed():  # the shuffle's draw and the epoch that uses it
                self.partial = {"perm": torch.randperm(len(self.train_x), generator=self.shuffle),
                                "batch": 0, "sum": torch.zeros((), dtype=torch.float64),
                                "count": 0, "time_s": 0.0}
        part = self.partial
        part["perm"] = part["perm"].to(self.device)
        part["sum"] = part["sum"].to(self.device)
        return part

    def _run_epoch(self):
        cfg, model = self.config, self.model
        bs, n_batches = cfg.batch_size, self.n_batches
        part = self._begin_epoch()
        perm = part["perm"]
        lr = self.optimizer.param_groups[0]["lr"]
        start = last_refresh = time.perf_counter()
        model.train()
        try:
            for b in range(part["batch"], n_batches):
                if self._stop_now():
                    raise KeyboardInterrupt
                self._rng_before = self._rng_snapshot()
                xb = self.train_x.index_select(0, perm[b * bs:(b + 1) * bs])
                with autocast(self.device.type, cfg.precision):
                    if self.ddp is None:
                        bound = model.bound(xb)
                        loss = -bound.float().mean()
                    else:
                        bound, loss = self._rank_rows(xb)
                self.optimizer.zero_grad(set_to_none=True)
                batch_sum = bound.detach().sum(dtype=torch.float64)
                if self.ddp is not None:  # the global batch's sum, for the epoch's mean
                    torch.distributed.all_reduce(batch_sum)
                if self.scaler is None:
                    loss.backward()
                else:
                    self.scaler.scale(loss).backward()
                with committed():  # the step and the count of its batch: both or neither
                    if self.scaler is None:
                        self.optimizer.step()
                    else:
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                    part["sum"], part["count"], part["batch"] = (
                        part["sum"] + batch_sum, part["count"] + len(xb), b + 1)
                    self._rng_before = None
                if self._bar is not None and time.perf_counter() - last_refresh > _REFRESH_S:
                    last_refresh = time.perf_counter()
                    self._refresh_bar((part["sum"] / part["count"]).item())
                if self.on_batch_end is not None:
                    self.on_batch_end(self, b)
        finally:
            part["time_s"] += time.perf_counter() - start
        self._end_epoch(lr)

    def _stop_now(self):
        """Whether to stop before the next batch: this process's request, or under torchrun
        any rank's (all ranks stop at the same batch)."""
        if self.ddp is None:
            return self._stop_requested
        flag = torch.tensor([int(self._stop_requested)], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def _rank_rows(self, xb):
        """This rank's rows of the global batch ``xb [B, D]``: ``(bound [rows], loss)``. The
        draws are the global batch's (every rank draws them alike from the same RNG state) and
        the loss is scaled so that DDP's mean over ranks is the global batch's mean ``-L``."""
        n, size, rank = len(xb), self.world.size, self.world.rank
        lo, hi = n * rank // size, n * (rank + 1) // size
        draws = self.model.draw_rows(self.model.objective_draws(xb), n, lo, hi)
        bound = self.ddp(xb[lo:hi], draws=draws)
        return bound, -bound.float().sum() * (size / n)

    def _end_epoch(self, lr, valid=None):
        """Validate (unless a stack gives ``valid``, the mean validation bound), record the
        epoch's row, step the schedule, save; TrainingDiverged on a non-finite bound."""
        cfg, part = self.config, self.partial
        start = time.perf_counter()
        if valid is None:
            valid = evaluate_bound(self.model, self.valid_x, cfg.eval_k,
                                   batch_size=cfg.eval_batch_size,
                                   device=self.device).mean().item()
        train = (part["sum"] / part["count"]).item()
        if not (math.isfinite(train) and math.isfinite(valid)):
            where = (f"{self._path('last.pt')} holds epoch {self.epoch}, the last good one"
                     if self.run_dir is not None else f"epoch {self.epoch} was the last good one")
            raise TrainingDiverged(
                f"training diverged at epoch {self.epoch + 1} (the bound is not finite: train "
                f"{train}, valid {valid}); {where}. Resume it with a smaller learning rate "
                f"(now {self.optimizer.param_groups[0]['lr']:g})", self.epoch + 1, self.epoch)
        epoch = self.epoch + 1
        improved = valid > self.best_value
        with committed():  # the epoch's row, schedule step, best model and count together
            if improved:
                self.best_value, self.best_epoch, self.bad_epochs = valid, epoch, 0
                self._keep_best()
            else:
                self.bad_epochs += 1
            row = {"epoch": epoch, "lr": lr, "train_bound": train, "valid_bound": valid,
                   "best_valid_bound": self.best_value, "best_epoch": self.best_epoch,
                   "bad_epochs": self.bad_epochs,
                   "time_s": round(part["time_s"] + time.perf_counter() - start, 4)}
            self.metrics.append(row)
            self.scheduler.step()
            self.epoch, self.partial = epoch, None
        if improved:
            self._write_best()
        self._save_last()
        if self._bar is not None:
            self._refresh_bar(refresh=False)
            self._bar.update(1)
        if self.on_epoch_end is not None:
            self.on_epoch_end(self, row)

    def finished_reason(self):
        """``"max_epochs"`` or ``"early_stopping"`` when no epoch is left to run, else None."""
        if self.partial is not None:
            return None
        if self.epoch >= self.config.epochs:
            return "max_epochs"
        if self.config.patience and self.bad_epochs >= self.config.patience:
            return "early_stopping"
        return None

    def result(self):
        """The :class:`TrainResult` of the run as it stands."""
        return TrainResult(self.run_dir, self.epoch, self.best_epoch, self.best_value,
                           self.stop_reason, list(self.metrics), self._stop_signal)

    def _interrupted(self):
        if self._rng_before is not None:  # stopped inside a batch, before its step: redo it
            self._rng_restore(self._rng_before)
            self._rng_before = None
        self.stop_reason = "interrupted"
        self._save_last()

    def fit(self, resume=False):
        """Train until ``config.epochs`` epochs, early stopping, or Ctrl-C.

        ``resume=True`` continues the run in ``run_dir`` from ``last.pt`` exactly where it
        stopped (mid-epoch after Ctrl-C), bit for bit; ``resume="auto"`` does so where there
        is a ``last.pt`` and starts afresh in a directory without run files. The directory is
        held (:func:`~fastair.training.rundir.hold`) for the whole call.

        Only :data:`~fastair.training.config.RESUMABLE_CHANGES` settings may differ from the
        saved run (a new ``lr`` continues the schedule from it), and the model and data must be
        those of the run. Ctrl-C or SIGTERM saves ``last.pt`` and returns with ``stop_reason ==
        "interrupted"``. The model ends holding the best weights.

        Raises:
            RunDirError: ``resume=False`` and the directory holds run files; ``resume=True``
                and there is no ``last.pt``.
            RunDirBusy: another process holds the directory.
            RunMismatch: resuming with other data, model or settings (each difference named).
            CheckpointError: ``last.pt`` cannot be read (the file is named).
            TrainingDiverged: the bound became non-finite; ``last.pt`` keeps the last good
                epoch, and ``fit(resume=True)`` with a smaller ``lr`` continues from it.
        """
        if self.run_dir is None or not self.world.main:
            return self._fit(resume)
        with rundir.hold(self.run_dir):
            return self._fit(resume)

    def _fit(self, resume):
        self._setup(resume)
        self._stop_requested, self.stop_reason, self._stop_signal = False, None, None
        cfg = self.config
        self._bar = progress_bar(cfg.progress and self.world.main, total=cfg.epochs,
                                 initial=min(self.epoch, cfg.epochs), unit="epoch",
                                 desc=f"train (-L_{getattr(self.model, 'k', 'k')})")
        if self._bar is not None:
            self._refresh_bar()
        try:
            with signal_guard(self):
                try:
                    while self.stop_reason is None:
                        if self.finished_reason() is not None:
                            self.stop_reason = self.finished_reason()
                        elif self._stop_requested:
                            raise KeyboardInterrupt
                        else:
                            self._run_epoch()
                except KeyboardInterrupt:
                    self._interrupted()
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.result()
