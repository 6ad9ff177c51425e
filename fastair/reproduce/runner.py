"""Run one :class:`~fastair.reproduce.protocol.RunSpec`: train to early stopping, then IW-SVI on
validation and test; resumable at every step.

A run directory holds ``spec.json`` (what the run is), ``train/`` (the trainer's run directory:
checkpoints every epoch), ``valid.json`` and ``test.json`` (IW-SVI summaries, each written when its
evaluation ends), ``test_per_example.csv`` and, last, ``result.json``: a run with ``result.json``
is finished and never redone; any other run continues from what is on disk.

Every result file names what produced it: ``valid.json`` and ``test.json`` a ``producer`` (the
split, its size and data, the seed, the evaluator's settings, the epochs trained, the best epoch
and a SHA-256 of the evaluated weights; ``test.json`` also the SHA-256 of the per-example file),
``result.json`` the spec and the weights. A file whose producer is not the current one is made
again, never reused, so no file removal is needed to keep a run consistent.
"""
import contextlib
import hashlib
import json
import math
import os
import time

import torch

from fastair.evaluation import iwsvi_log_likelihood
from fastair.io import atomic_write_json, atomic_write_text, read_json
from fastair.models import preset
from fastair.reproduce.protocol import RunSpec, family_label, get_family
from fastair.training import TrainConfig, Trainer, load_checkpoint, rundir, seed_everything
from fastair.training.stack import StackTrainer

__all__ = ["run_one", "run_stack", "test_run", "RunInterrupted", "NOT_TESTED", "spec_doc",
           "check_spec"]

_EVAL_SEED_OFFSET = {"valid": 0, "test": 1000}

NOT_TESTED = {"-ln p(x)": math.nan, "gap": math.nan, "-L(x)": math.nan, "seconds": 0.0,
              "evaluated": False}
"""A result's ``test`` until :func:`test_run` (``ReproduceConfig.test_chosen_only``)."""


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM; its checkpoint is saved and the run continues next
    time. ``signal``: the signal's number (None for a KeyboardInterrupt raised in Python)."""

    def __init__(self, name, signal=None):
        super().__init__(name)
        self.signal = signal


def _read_json(path):
    return read_json(path, "run file")


# may change between calls; all else may not
_FREE = ("device", "progress", "num_threads", "k_chunk")


def spec_doc(spec, config):
    """What the run ``spec`` of ``config`` is, as its ``spec.json`` records it: the run, the
    model, the data set, the training settings (those that may not change between calls) and
    the evaluator's (:meth:`~fastair.reproduce.protocol.ReproduceConfig.evaluator`)."""
    train = {k: v for k, v in config.train_config(spec.seed).to_dict().items() if k not in _FREE}
    return {"run": {"family": spec.family, "k": spec.k, "strength": spec.strength,
                    "seed": spec.seed},
            "model": {"preset": _preset(spec), **spec.model_kwargs()},
            "dataset": config.dataset, "train": train, "evaluator": config.evaluator(),
            **({} if config.valid_n is None else {"valid_n": config.valid_n})}


def _preset(spec):
    return get_family(spec.family).preset


def check_spec(run_dir, doc):
    """Hold ``run_dir`` to the settings of ``doc``: write them for a new run, refuse a run
    saved with others. The one change allowed is a larger epoch cap (see :func:`_final`)."""
    path = os.path.join(run_dir, "spec.json")
    if os.path.exists(path):
        saved, doc = _read_json(path), json.loads(json.dumps(doc))  # tuples -> lists
        defaults = {k: v for k, v in TrainConfig().to_dict().items() if k not in _FREE}
        saved["train"] = {**defaults, **saved.get("train", {})}  # settings added since
        saved["evaluator"] = {"fit_precision": "fp32", "precision": "fp32",
                              **saved.get("evaluator", {})}  # fp32 then
        if _raises_epoch_cap(saved, doc):
            atomic_write_json(path, doc)
            return
        changed = sorted(k for k in set(saved) | set(doc) if saved.get(k) != doc.get(k))
        if changed:
            raise ValueError(f"{run_dir}: this directory holds a run with other settings "
                             f"({', '.join(changed)} differ); use another --out or the same "
                             "options as before")
    else:
        os.makedirs(run_dir, exist_ok=True)
        atomic_write_json(path, doc)


def _raises_epoch_cap(saved, doc):
    """True when ``doc`` differs from ``saved`` only by a larger ``train.epochs``."""
    old, new = saved["train"].get("epochs"), doc["train"].get("epochs")
    if not (isinstance(old, int) and isinstance(new, int) and new > old):
        return False
    return {**saved, "train": {**saved["train"], "epochs": new}} == doc


def _sha256(doc):
    """SHA-256 of a JSON document (keys sorted; a tuple as its list)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _final(result, doc):
    """Whether ``result`` (a ``result.json``) is the result of the run ``doc`` describes.

    Made under ``doc`` itself: yes. Made under a smaller epoch cap (the one change
    :func:`check_spec` allows): yes if the run stopped for another reason than the cap (early
    stopping, or patience spent at the cap), as the new cap changes nothing; no if the cap
    stopped it, and then the run trains on from its checkpoint (bit for bit) and its files are
    made again. Either way the result is the one a fresh run under ``doc`` gives."""
    if (result.get("producer") or {}).get("spec_sha256") == _sha256(doc):
        return True
    cap, patience = doc["train"].get("epochs"), doc["train"].get("patience") or 0
    if result["stop_reason"] != "max_epochs" or result["epochs"] >= cap:
        return True
    return bool(patience) and result["epochs"] - result["best_epoch"] >= patience


def _weights_sha256(model):
    """SHA-256 of a model's weights (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}:{t.dtype}:{t.numel()};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _producer(spec, config, split, x, made):
    """What an IW-SVI summary of ``split`` comes from; ``made``: ``epochs``, ``best_epoch``
    and ``weights_sha256`` of the evaluated model."""
    doc = {"run": spec.name, "split": split, "n": len(x), "data": rundir.data_fingerprint(x),
           "dataset": config.dataset, "seed": spec.seed + _EVAL_SEED_OFFSET[split],
           "evaluator": config.evaluator(), **made}
    return json.loads(json.dumps(doc))  # as read back: lists for tuples


def _current(path, producer):
    """The summary in ``path`` if ``producer`` made it (for test: with its per-example file
    unchanged), else None."""
    try:
        saved = _read_json(path)
    except FileNotFoundError:
        return None
    if saved.get("producer") != producer:
        return None
    csv = saved.get("per_example_sha256")
    if csv is not None:
        try:
            with open(os.path.join(os.path.dirname(path), "test_per_example.csv"), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != csv:
                    return None
        except FileNotFoundError:
            return None
    return saved


def _evaluate(model, x, spec, config, split, run_dir, progress, made, saved_only=False):
    """IW-SVI on one split; the summary (and for test the per-example values) written. A
    summary on disk is reused only if this model and these settings made it (:func:`_producer`);
    ``saved_only``: return None instead of evaluating."""
    path = os.path.join(run_dir, f"{split}.json")
    producer = _producer(spec, config, split, x, made)
    summary = _current(path, producer)
    if summary is not None or saved_only:
        return summary
    start = time.perf_counter()
    result = iwsvi_log_likelihood(model, x, seed=spec.seed + _EVAL_SEED_OFFSET[split],
                                  progress=progress, warn=False, **config.evaluator())
    summary = dict(result.summary(), seconds=round(time.perf_counter() - start, 3),
                   warnings=result.warnings(), producer=producer)  # warnings: not printed
    if split == "test":
        text = result.per_example_csv()
        atomic_write_text(os.path.join(run_dir, "test_per_example.csv"), text)
        summary["per_example_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    atomic_write_json(path, summary)
    return summary


def run_one(spec, config, data, root, progress=True, on_epoch_end=None):
    """Train and evaluate ``spec`` under ``root`` (or read its finished result).

    Args:
        spec: a :class:`~fastair.reproduce.protocol.RunSpec`.
        config: the :class:`~fastair.reproduce.protocol.ReproduceConfig`.
        data: the loaded data set (``.train``, ``.valid``, ``.test`` ``[N, D]``).
        root: the output root; the run lives in ``root/spec.name``, held by this process
            (:func:`fastair.training.rundir.hold`) while it trains and evaluates.
        progress: bars for the training epochs and the IW-SVI steps.
        on_epoch_end: passed to the :class:`~fastair.training.Trainer`.
    Returns:
        the run's result dict (what ``result.json`` holds); ``"resumed"`` says whether it was
        read back finished.
    Raises:
        RunInterrupted: Ctrl-C or SIGTERM during training (the checkpoint is saved).
    """
    run_dir = os.path.join(root, spec.name)
    with rundir.hold(run_dir):
        return _run_held(spec, config, data, run_dir, progress, on_epoch_end)


def _run_held(spec, config, data, run_dir, progress, on_epoch_end):
    done, trainer = _prepare(spec, config, data, run_dir, progress, on_epoch_end)
    if done is not None:
        return done
    return _finish(spec, config, data, run_dir, trainer, trainer.fit(resume="auto"), progress)


def run_stack(specs, config, data, root, progress=True, on_epoch_end=None):
    """:func:`run_one` for several runs of the same ``k``, trained together as one stacked
    model (:class:`~fastair.training.stack.StackTrainer`), then evaluated one by one.

    The run directories, files and results are those of :func:`run_one` (a run may be started
    stacked and finished alone, or the other way round). Returns the result dicts in the order
    of ``specs``.

    Raises:
        RunInterrupted: Ctrl-C or SIGTERM during training (every unfinished run is saved).
    """
    run_dirs = [os.path.join(root, spec.name) for spec in specs]
    with contextlib.ExitStack() as held:
        for run_dir in run_dirs:
            held.enter_context(rundir.hold(run_dir))
        prepared = [_prepare(spec, config, data, run_dir, False, on_epoch_end)
                    for spec, run_dir in zip(specs, run_dirs)]
        trainers = [trainer for done, trainer in prepared if done is None]
        fits = iter(StackTrainer(trainers, progress=progress,
                                 desc=f"stack k{specs[0].k}").fit(resume="auto")
                    if trainers else [])
        fits = [next(fits) if done is None else None for done, _ in prepared]
        stopped = [(spec, fit) for spec, fit in zip(specs, fits)
                   if fit is not None and fit.interrupted]
        if stopped:
            raise RunInterrupted(", ".join(spec.name for spec, _ in stopped), stopped[0][1].signal)
        return [done if done is not None else
                _finish(spec, config, data, run_dir, trainer, fit, progress)
                for spec, run_dir, (done, trainer), fit in zip(specs, run_dirs, prepared, fits)]


def _prepare(spec, config, data, run_dir, progress, on_epoch_end):
    """``(result, None)`` for a finished run, else ``(None, trainer)`` ready to fit."""
    doc = spec_doc(spec, config)
    check_spec(run_dir, doc)
    done = os.path.join(run_dir, "result.json")
    if os.path.exists(done):
        result = _read_json(done)
        if _final(result, doc):
            return dict(result, resumed=True), None
    seed_everything(spec.seed)  # the initial weights follow the seed
    model = preset(_preset(spec), x_dim=data.x_dim, **spec.model_kwargs())
    trainer = Trainer(model, data.train, data.valid, config.train_config(spec.seed),
                      os.path.join(run_dir, "train"),
                      meta={"model": _preset(spec), "dataset": config.dataset,
                            "reproduce_run": spec.name},
                      progress=progress, on_epoch_end=on_epoch_end)
    return None, trainer


def _finish(spec, config, data, run_dir, trainer, fit, progress):
    """IW-SVI on validation and test after training; writes and returns the result."""
    if fit.interrupted:
        raise RunInterrupted(spec.name, fit.signal)
    model, device = trainer.model, config.device
    made = {"epochs": fit.epochs, "best_epoch": fit.best_epoch,
            "weights_sha256": _weights_sha256(model)}
    valid = _evaluate(model, data.valid[:config.valid_n].to(device), spec, config, "valid",
                      run_dir, progress, made)
    test = _evaluate(model, data.test.to(device), spec, config, "test", run_dir, progress, made,
                     saved_only=config.test_chosen_only)
    test = dict(NOT_TESTED) if test is None else test
    best = next(row for row in fit.metrics if row["epoch"] == fit.best_epoch)
    result = {"name": spec.name, "family": spec.family, "label": family_label(spec.family, spec.k),
              "k": spec.k, "strength": spec.strength, "seed": spec.seed,
              "best_epoch": fit.best_epoch, "epochs": fit.epochs, "stop_reason": fit.stop_reason,
              "train_bound": best["train_bound"], "valid_bound": best["valid_bound"],
              "train_seconds": round(sum(row["time_s"] for row in fit.metrics), 3),
              "valid": valid, "test": test,
              "producer": {"spec_sha256": _sha256(spec_doc(spec, config)),
                           "weights_sha256": made["weights_sha256"]}}
    atomic_write_json(os.path.join(run_dir, "result.json"), result)
    return dict(result, resumed=False)


def test_run(result, config, data, root, progress=True):
    """IW-SVI on test for a finished run whose ``result["test"]`` is :data:`NOT_TESTED`: its
    best model from ``train/best.pt``; ``result.json`` is rewritten and the result returned."""
    spec = RunSpec(result["family"], result["k"], result["strength"], result["seed"])
    run_dir = os.path.join(root, spec.name)
    with rundir.hold(run_dir):
        model = preset(_preset(spec), x_dim=data.x_dim, **spec.model_kwargs())
        model.load_state_dict(load_checkpoint(os.path.join(run_dir, "train", "best.pt"))["model"])
        model.to(config.device).eval()
        made = {"epochs": result["epochs"], "best_epoch": result["best_epoch"],
                "weights_sha256": _weights_sha256(model)}
        test = _evaluate(model, data.test.to(config.device), spec, config, "test", run_dir,
                         progress, made)
        done = {k: v for k, v in result.items() if k != "resumed"}
        done["test"] = test
        atomic_write_json(os.path.join(run_dir, "result.json"), done)
    return done
