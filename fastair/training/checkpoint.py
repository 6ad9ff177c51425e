"""Checkpoints and random-number-generator states for resumable runs.

Checkpoints are written atomically by :mod:`fastair.io` (old file or new one, never a part);
the atomic writers are re-exported here for older imports. RNG states are stored as tensors,
ints and tuples only, so checkpoints load with ``torch.load(..., weights_only=True)``.
"""
import io
import os
import random

import numpy as np
import torch

from fastair.errors import CheckpointError
from fastair.io import atomic_write_bytes, atomic_write_csv, atomic_write_json, atomic_write_text

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_csv",
           "atomic_save", "load_checkpoint", "seed_everything", "get_rng_states",
           "set_rng_states"]


def atomic_save(obj, path):
    """``torch.save(obj, path)``, atomically (serialized in memory first)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path, map_location="cpu"):
    """Load a fastair checkpoint (plain tensors and containers only: ``weights_only=True``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, garbage or not a fastair checkpoint; the
            message names it (torch's own traceback, and its advice to load untrusted files
            with ``weights_only=False``, are not passed on).
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
    return ck


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
