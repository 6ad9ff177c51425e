"""Train several runs at once as one stacked model (:class:`~fastair.models.stacked.StackedVAE`).

Each member is an ordinary :class:`~fastair.training.Trainer` with its own run directory,
config, seed, data order and early stopping; :class:`StackTrainer` sets each one up (new or
resumed, exactly as :meth:`Trainer.fit` would), then runs their steps together: one batched
forward and backward for all members, one Adam step over the stacked weights, each member's
draws from its own generator in the order it would draw them alone. At the end of every epoch
each member's weights and Adam state are copied back into its Trainer, which validates, counts
patience and writes the same files as a run trained alone, so a stacked run can be resumed alone
and the other way round. A member that stops early (or diverges) leaves the stack and the others
go on without it.

Members train together when they share the architecture, ``k``, the objective's number of
encoder terms, the optimizer settings, the data size and their position (epoch and batch); any
other mix is split into groups trained one after another.
"""
import contextlib
import time
import warnings

import torch

from fastair.errors import TrainingDiverged
from fastair.evaluation.bound import EVAL_SEED, evaluate_bound
from fastair.io import progress_bar
from fastair.models.stacked import StackedVAE, objective_terms
from fastair.precision import autocast
from fastair.training import rundir
from fastair.training.trainer import committed, make_optimizer, signal_guard

__all__ = ["StackTrainer"]

_EVAL_FLOATS = 2 ** 26  # largest stacked validation logits (floats) before it goes per member
_SAME = ("batch_size", "lr", "betas", "adam_eps", "schedule", "lr_decay", "device",
         "precision", "eval_k", "eval_batch_size")  # epochs and patience are each run's own


def _group_key(t):
    cfg, part = t.config, t.partial
    m = t.model
    return ((m.x_dim, m.z_dim, tuple(m.hidden), m.k, getattr(m, "estimator", "iwae"),
             objective_terms(m), len(t.train_x)) + tuple(repr(getattr(cfg, n)) for n in _SAME)
            + (t.epoch, part["batch"] if part is not None else 0,
               t.optimizer.param_groups[0]["lr"]))


class StackTrainer:
    """Train ``trainers`` (each a :class:`~fastair.training.Trainer` of a
    :class:`~fastair.models.VAE`) as stacked models.

    Args:
        trainers: the runs; their own progress bars should be off (the stack shows one).
        progress: a progress bar over the epochs of each stack.
        desc: the bar's text.
    """

    def __init__(self, trainers, progress=True, desc="stack"):
        self.trainers = list(trainers)
        if not self.trainers:
            raise ValueError("StackTrainer: expected at least one Trainer")
        for t in self.trainers:
            if t.config.precision == "fp16":
                raise ValueError("StackTrainer: fp16 runs cannot be stacked (loss scaling skips "
                                 "steps per run); train them one at a time")
        self.progress, self.desc = progress, desc
        self._stop_requested, self._stop_signal, self._bar = False, None, None

    def fit(self, resume="auto"):
        """Train every run until its own stop (``config.epochs``, early stopping) or Ctrl-C.

        ``resume`` is passed to each run's set-up (``"auto"``: continue where a run has a
        ``last.pt``). Every run directory is held for the whole call. Returns the
        :class:`~fastair.training.TrainResult` of each trainer, in order; each model ends
        holding its best weights. After Ctrl-C or SIGTERM every unfinished run is saved and
        its result says ``"interrupted"``.

        Raises:
            TrainingDiverged: a run's bound became non-finite (the first such run; the others
                trained to their end first, and its ``last.pt`` keeps its last good epoch).
            Whatever :meth:`Trainer.fit` raises when setting a run up.
        """
        with contextlib.ExitStack() as held:
            for t in self.trainers:
                if t.run_dir is not None:
                    held.enter_context(rundir.hold(t.run_dir))
            return self._fit(resume)

    def _fit(self, resume):
        for t in self.trainers:
            t._setup(resume)
            t._stop_requested, t.stop_reason, t._stop_signal = False, None, None
            gen = torch.Generator(device=t.device)  # the run's draws continue from its seed
            gen.set_state(t._rng_snapshot()[0 if t.device.type == "cpu" else 1])
            t.draw_generator = gen
        self._stop_requested, self._stop_signal, self.diverged = False, None, []
        groups = {}
        for t in self.trainers:
            if t.finished_reason() is not None:
                t.stop_reason = t.finished_reason()
            else:
                groups.setdefault(_group_key(t), []).append(t)
        with signal_guard(self):
            for group in groups.values():
                if self._stop_requested:
                    for t in group:
                        self._stop(t)
                else:
                    self._train_group(group)
        for t in self.trainers:
            if t.best_state is not None:
                t.model.load_state_dict(t.best_state)
        if self.diverged:
            raise self.diverged[0]
        return [t.result() for t in self.trainers]

    # -- moving state between the stack and its members ---------------------------------------
    def _build(self, group):
        stacked = StackedVAE([t.model for t in group]).to(group[0].device)
        optimizer = make_optimizer(stacked.parameters(), group[0].config)  # lr: set by each epoch
        slice_of = stacked.member_slice
        by_param = {}
        for m, t in enumerate(group):
            for param, member_param in stacked.member_pairs(m, t.model):
                st = t.optimizer.state.get(member_param)
                if st:
                    by_param.setdefault(param, []).append((m, st))
        for param, states in by_param.items():
            steps = {float(st["step"]) for _, st in states}
            if len(steps) > 1:
                raise ValueError(f"StackTrainer: members at different Adam steps {steps}")
            state = {"step": states[0][1]["step"].clone()}
            for name in ("exp_avg", "exp_avg_sq"):
                buf = torch.zeros_like(param)
                for m, st in states:
                    slice_of(buf, m).copy_(st[name])
                state[name] = buf
            optimizer.state[param] = state
        return stacked, optimizer

    @torch.no_grad()
    def _write_down(self, stacked, optimizer, m, t):
        """Member ``m``'s weights and Adam state from the stack into its Trainer."""
        stacked.write_member(m, t.model)
        for param, member_param in stacked.member_pairs(m, t.model):
            st = optimizer.state.get(param)
            if st:
                t.optimizer.state[member_param] = {
                    "step": st["step"].clone(),
                    "exp_avg": stacked.member_slice(st["exp_avg"], m).contiguous(),
                    "exp_avg_sq": stacked.member_slice(st["exp_avg_sq"], m).contiguous()}

    # -- the loop -----------------------------------------------------------------------------
    def _train_group(self, group):
        first = group[0]
        self._bar = progress_bar(self.progress, total=first.config.epochs,
                                 initial=min(first.epoch, first.config.epochs), unit="epoch",
                                 desc=f"{self.desc}: {len(group)} runs (-L_{first.model.k})")
        try:
            stacked = None
            while group:
                if stacked is None:  # first, and after members left: rebuilt from the rest
                    stacked, optimizer = self._build(group)
                try:
                    self._run_epoch(group, stacked, optimizer)
                except KeyboardInterrupt:
                    for m, t in enumerate(group):
                        self._write_down(stacked, optimizer, m, t)
                        self._stop(t)
                    return
                try:
                    going = self._end_epoch(group, stacked, optimizer)
                except KeyboardInterrupt:  # a second signal: every unfinished member saved
                    for m, t in enumerate(group):
                        if t.stop_reason is None:  # not diverged or done in this epoch
                            self._write_down(stacked, optimizer, m, t)  # again: it may be cut
                            self._stop(t)
                    return
                if len(going) != len(group):
                    stacked = None
                group = going
                if group and self._stop_requested:
                    for t in group:
                        self._stop(t)
                    return
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def _stop(self, t):
        t.stop_reason, t._stop_signal = "interrupted", self._stop_signal
        t._save_last()

    def _batch(self, group, parts, b):
        bs = group[0].config.batch_size
        idx = [part["perm"][b * bs:(b + 1) * bs] for part in parts]
        first = group[0].train_x
        if all(t.train_x is first for t in group):
            rows = torch.stack(idx)
            return first.index_select(0, rows.reshape(-1)).view(*rows.shape, -1)
        return torch.stack([t.train_x.index_select(0, i) for t, i in zip(group, idx)])

    def _run_epoch(self, group, stacked, optimizer):
        # the members' schedulers stepped at the last epoch's end: the stack follows them
        optimizer.param_groups[0]["lr"] = group[0].optimizer.param_groups[0]["lr"]
        parts = [t._begin_epoch() for t in group]
        gens = [t.draw_generator for t in group]
        device, precision = group[0].device, group[0].config.precision
        start = time.perf_counter()
        stacked.train()
        try:
            for b in range(parts[0]["batch"], group[0].n_batches):
                if self._stop_requested:
                    raise KeyboardInterrupt
                before = [g.get_state() for g in gens]
                try:
                    x = self._batch(group, parts, b)
                    with autocast(device.type, precision):
                        noise, eps = stacked.draws(x, gens)
                        bound = stacked.objective(x, noise, eps)
                    loss = -bound.float().mean(1).sum()  # each member's gradient as alone
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    sums = bound.detach().sum(1, dtype=torch.float64)
                    with committed():  # the step and the count of its batch: both or neither
                        optimizer.step()
                        for part, s in zip(parts, sums):
                            part["sum"], part["count"], part["batch"] = (
                                part["sum"] + s, part["count"] + bound.shape[1], b + 1)
                        before = None
                except KeyboardInterrupt:
                    if before is not None:  # inside the batch, before its step: redone on resume
                        for g, state in zip(gens, before):
                            g.set_state(state)
                    raise
                for t in group:
                    if t.on_batch_end is not None:
                        t.on_batch_end(t, b)
        finally:
            share = (time.perf_counter() - start) / len(group)
            for part in parts:
                part["time_s"] += share

    @torch.no_grad()
    def _validate(self, group, stacked):
        """Each member's mean validation bound (floats), with the draws of
        :func:`~fastair.evaluation.evaluate_bound` (shared by all members)."""
        first = group[0]
        cfg, valid_x = first.config, first.valid_x
        k = cfg.eval_k or first.model.k
        bs = cfg.eval_batch_size
        shared = all(t.valid_x is valid_x for t in group)
        if not shared or len(group) * k * min(bs, len(valid_x)) * stacked.x_dim > _EVAL_FLOATS:
            # too large to stack: one member at a time, with the fused decoder head
            return [evaluate_bound(t.model, t.valid_x, cfg.eval_k, batch_size=bs,
                                   device=t.device).mean().item() for t in group]
        gen = torch.Generator(device=first.device)
        gen.manual_seed(EVAL_SEED)
        stacked.eval()
        try:
            values = []
            for i in range(0, len(valid_x), bs):
                x = valid_x[i:i + bs]
                eps = torch.randn((k, len(x), stacked.z_dim), dtype=x.dtype, device=x.device,
                                  generator=gen)
                n = len(group)
                values.append(stacked.clean_bound(x.expand(n, *x.shape),
                                                  eps.expand(n, *eps.shape)).double().cpu())
        finally:
            stacked.train()
        return torch.cat(values, 1).mean(1).tolist()

    def _end_epoch(self, group, stacked, optimizer):
        start = time.perf_counter()
        for m, t in enumerate(group):
            self._write_down(stacked, optimizer, m, t)
        valid = self._validate(group, stacked)
        share = (time.perf_counter() - start) / len(group)
        lr = group[0].optimizer.param_groups[0]["lr"]
        going = []
        for t, v in zip(group, valid):
            t.partial["time_s"] += share
            try:
                with warnings.catch_warnings():  # its optimizer's step ran in the stack
                    warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
                    t._end_epoch(lr, valid=v)
            except TrainingDiverged as err:
                t.stop_reason = "diverged"
                self.diverged.append(err)
                continue
            if t.finished_reason() is not None:
                t.stop_reason = t.finished_reason()
            else:
                going.append(t)
        if self._bar is not None:
            best = max((t.best_value for t in group), default=float("nan"))
            self._bar.set_postfix({"running": len(going), "best valid": f"{-best:.2f}"},
                                  refresh=False)
            self._bar.update(1)
        return going
