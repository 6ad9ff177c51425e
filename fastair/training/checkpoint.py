"""Checkpoints and random-number-generator states for resumable runs.

Checkpoints are written atomically by :mod:`fastair.io` (old file or new one, never a part);
the atomic writers are re-exported here for older imports. RNG states are stored as tensors,
ints and tuples only, so checkpoints load with ``torch.load(..., weights_only=True)``.

:func:`load_checkpoint` also checks what a run's ``last.pt`` and ``best.pt`` hold
(:func:`check_checkpoint`): a missing entry, an emptied optimizer state, NaN or inf weights and,
given the model, weights of other names or shapes are a :class:`CheckpointError` that names the
file and what to do, never a KeyError, a cut-off load_state_dict error or a run that diverges.
"""
import io
import os
import random

import numpy as np
import torch

from fastair.errors import CheckpointError
from fastair.io import atomic_write_bytes, atomic_write_csv, atomic_write_json, atomic_write_text

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_csv",
           "atomic_save", "load_checkpoint", "check_checkpoint", "check_state_dict", "LAST_ENTRIES",
           "seed_everything", "get_rng_states", "set_rng_states"]

LAST_ENTRIES = ("config", "model_hparams", "model", "optimizer", "scheduler", "rng",
                "shuffle_generator", "epoch", "partial", "best_value", "best_epoch", "bad_epochs",
                "metrics")
"""The entries of a ``last.pt`` that a resume reads (checkpoint formats 1 and 2)."""

_KINDS = {"last.pt": "last", "best.pt": "best"}


def atomic_save(obj, path):
    """``torch.save(obj, path)``, atomically (serialized in memory first)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path, map_location="cpu", *, kind="auto", model=None):
    """Load a fastair checkpoint (plain tensors and containers only: ``weights_only=True``).

    Args:
        kind: what the file must hold (:func:`check_checkpoint`): ``"last"`` (a run's training
            state), ``"best"`` (a run's best model), None (any dict), or ``"auto"`` (default):
            ``"last"`` for a file named ``last.pt``, ``"best"`` for ``best.pt``, else None.
        model: optionally the ``nn.Module`` whose state dict the weights must fit.
    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, garbage or not a fastair checkpoint, or its
            content is not what ``kind`` says; the message names it (torch's own traceback,
            and its advice to load untrusted files with ``weights_only=False``, are not passed
            on) and says what to do.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip reader, unpickler, EOF: all mean "not a good checkpoint"
        size = os.path.getsize(path)
        reason = "it is empty" if size == 0 else (
            f"it is truncated or not a checkpoint written by fastair ({size} bytes; "
            f"{type(err).__name__})")
        raise CheckpointError(f"{path}: cannot read this checkpoint: {reason}") from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path}: not a fastair checkpoint (it holds a "
                              f"{type(ck).__name__}, not a dict)")
    if kind == "auto":
        kind = _KINDS.get(os.path.basename(path))
    check_checkpoint(ck, path, kind, model)
    return ck


def _remedy(kind):
    if kind == "last":
        return ("restore last.pt from a copy, or start the run afresh in a new run directory")
    return ("the copy of the best model kept in last.pt stands in for it (`fastair evaluate` "
            "uses it); to write best.pt again from that copy, delete it and run `fastair train "
            "--resume` on the run")


def _names(items, limit=4):
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_state_dict(state, path, entry, kind, model=None):
    """A :class:`CheckpointError` unless ``state``, the entry ``entry`` of the checkpoint
    ``path`` of ``kind`` (``"last"`` or ``"best"``: which remedy the message gives), is a state
    dict of finite tensors with ``model``'s names and shapes (where ``model`` is given)."""
    where = f"{path}: its {entry!r} entry"
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{where} is not a state dict of tensors (it holds a "
                              f"{type(state).__name__}): the file was edited or damaged; "
                              f"{_remedy(kind)}")
    bad = [k for k, v in state.items()
           if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())]
    if bad:
        cause = ("the file was edited or damaged, or the run had diverged before this state "
                 "was saved; no learning rate can continue from NaN weights"
                 if kind == "last" else "the file was edited or damaged")
        raise CheckpointError(f"{where} holds NaN or inf weights (in {_names(bad)}: {len(bad)} "
                              f"of {len(state)} tensors): {cause}; {_remedy(kind)}")
    if model is None:
        return
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{label} {_names(items)}" for label, items in (
            ("shapes (file vs model)", shapes), ("missing", missing),
            ("unexpected", unexpected)) if items]
        raise CheckpointError(f"{where} does not fit the model ({type(model).__name__}) that "
                              f"the run's settings build: {'; '.join(parts)}: the file was "
                              f"edited or damaged; {_remedy(kind)}")


def _check_optimizer(ck, path, model):
    opt = ck["optimizer"]
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    if (not isinstance(opt, dict) or not isinstance(opt.get("state"), dict)
            or not isinstance(groups, list) or not groups
            or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                       for g in groups)):
        found = (f"a {type(opt).__name__}" if not isinstance(opt, dict) else "an empty dict"
                 if not opt else f"a dict with entries {_names(sorted(map(str, opt)))}")
        raise CheckpointError(f"{path}: its optimizer state is empty or damaged (expected a "
                              f"dict with 'state' and 'param_groups', found {found}): the file "
                              f"was edited or damaged; {_remedy('last')}")
    partial = ck.get("partial")
    steps_taken = (isinstance(ck.get("epoch"), int) and ck["epoch"] > 0) or (
        isinstance(partial, dict) and isinstance(partial.get("batch"), int)
        and partial["batch"] > 0)
    # a loss-scaled (fp16) run may have skipped every step so far; any other run has moments
    if steps_taken and not opt["state"] and not ck.get("scaler"):
        raise CheckpointError(f"{path}: its optimizer state holds no moments although the run "
                              f"has taken steps (epoch {ck.get('epoch')}): Adam would restart "
                              f"from zero and the run would not continue as it was; the file "
                              f"was edited or damaged; {_remedy('last')}")
    if model is not None:
        n_params = sum(len(g["params"]) for g in groups)
        n_model = len(list(model.parameters()))
        if n_params != n_model:
            raise CheckpointError(f"{path}: its optimizer state is for {n_params} parameter "
                                  f"tensors, the model has {n_model}: the file was edited or "
                                  f"damaged; {_remedy('last')}")


def check_checkpoint(ck, path, kind, model=None):
    """Check what a loaded checkpoint ``ck`` (a dict) holds; a :class:`CheckpointError` naming
    ``path``, what is wrong and what to do otherwise.

    ``kind="last"``: every entry of :data:`LAST_ENTRIES`, a model (and a best model, where
    present) of finite weights, an optimizer state with its parameter groups and, once the run
    has taken steps, its moments. ``kind="best"``: a model of finite weights. None: nothing.
    With ``model``, the weights must also have its state dict's names and shapes (and, for
    ``"last"``, the optimizer its number of parameter tensors).
    """
    if kind is None:
        return
    if kind not in ("last", "best"):
        raise ValueError(f"kind: expected 'last', 'best', 'auto' or None, got {kind!r}")
    path = os.fspath(path)
    needed = LAST_ENTRIES if kind == "last" else ("model",)
    missing = [k for k in needed if k not in ck]
    if missing:
        names = _names([repr(k) for k in missing])
        raise CheckpointError(f"{path}: the checkpoint has no {names} "
                              f"entr{'y' if len(missing) == 1 else 'ies'} (it holds "
                              f"{_names(sorted(map(str, ck)), 8)}): the file was edited or "
                              f"damaged, or not written by `fastair train`; {_remedy(kind)}")
    check_state_dict(ck["model"], path, "model", kind, model)
    if kind == "last":
        if ck.get("best_model") is not None:
            check_state_dict(ck["best_model"], path, "best_model", kind, model)
        _check_optimizer(ck, path, model)


def seed_everything(seed):
    """Seed python's ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def get_rng_states():
    """The global RNG states of torch (CPU, CUDA), numpy and python, checkpoint-safe."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }


def set_rng_states(states):
    """Restore what :func:`get_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
