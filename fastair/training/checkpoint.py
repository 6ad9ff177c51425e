"""Atomic files and random-number-generator states for resumable runs.

Every file is written to a temporary name in the same directory, flushed to disk, then moved
over the target with ``os.replace``: a reader sees the old file or the new one, never a part.
RNG states are stored as tensors, ints and tuples only, so checkpoints load with
``torch.load(..., weights_only=True)``.
"""
import csv
import io
import json
import os
import random
import tempfile

import numpy as np
import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_save", "load_checkpoint",
           "seed_everything", "get_rng_states", "set_rng_states"]


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temporary file + fsync + ``os.replace``)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(obj, path):
    """``torch.save(obj, path)``, atomically (serialized in memory first)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_csv(path, rows, columns, extrasaction="raise"):
    """Write ``rows`` (dicts) under the header ``columns`` as CSV, atomically; keys of a row
    outside ``columns`` are an error, or dropped with ``extrasaction="ignore"``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction=extrasaction,
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def load_checkpoint(path, map_location="cpu"):
    """Load a fastair checkpoint (plain tensors and containers only: ``weights_only=True``)."""
    return torch.load(path, map_location=map_location, weights_only=True)


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
