"""A run directory owned by one process at a time, and the facts that say which run it holds.

* :func:`hold` takes an advisory lock (``fcntl.flock`` on ``RUN_DIR/.lock``, which records the
  holder's pid and command). A second process is refused with :class:`RunDirBusy` naming that
  pid; the same process may take it again (nested ``with`` blocks). The kernel drops the lock
  when the holder dies, even by ``kill -9``, so a stale lock file never blocks anyone.
* :func:`run_identity` is what a checkpoint records about its run: the model class, preset and
  hyper-parameters, the data set's name, its sizes and a fingerprint of the training and
  validation data. :func:`identity_differences` names what differs between two of them.
* :data:`RUN_FILES` are the files a run owns; :func:`run_files` lists those present.
"""
import contextlib
import hashlib
import os
import sys
import time

import torch

from fastair.errors import RunDirBusy, RunDirError, WriteError
from fastair.io import remove_stale_temp_files

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None

__all__ = ["hold", "run_identity", "identity_differences", "data_fingerprint", "run_files",
           "start_mode", "RUN_FILES", "LOCK_NAME"]

LOCK_NAME = ".lock"
RUN_FILES = ("last.pt", "best.pt", "config.json", "metrics.csv", "metrics.json", "bounds.json",
             "iwsvi")
_held = {}  # realpath -> [file object, depth] of the locks this process holds


def run_files(run_dir):
    """The names of :data:`RUN_FILES` present in ``run_dir``."""
    return [n for n in RUN_FILES if os.path.exists(os.path.join(run_dir, n))]


def start_mode(run_dir, resume):
    """``"resume"`` or ``"new"``: what training in ``run_dir`` does, or a
    :class:`~fastair.errors.RunDirError` that says why it may do neither.

    ``resume=False``: new, in a directory without :data:`RUN_FILES` only; ``True``: resume,
    from a ``last.pt`` only; ``"auto"``: resume where there is a ``last.pt``, else new.
    """
    if resume and os.path.exists(os.path.join(run_dir, "last.pt")):
        return "resume"
    present = run_files(run_dir)
    if resume is True and not present:
        where = "" if os.path.isdir(run_dir) else " (the directory does not exist)"
        raise RunDirError(f"{run_dir}: no run to resume here{where}: there is no last.pt; "
                          "check the path, or start a new run without resume (--resume)")
    if resume and present:
        raise RunDirError(f"{run_dir}: last.pt is missing, so the run cannot continue (the "
                          f"directory holds {', '.join(present)}); best.pt, if present, can "
                          "still be evaluated. Train again in another directory")
    if present:
        raise RunDirError(f"{run_dir} already holds a run ({', '.join(present)}); resume it "
                          "(--resume) or choose another directory")
    return "new"


def _holder(path, wait=1.0):
    """The holder's line in the lock file ("pid N: command"). A holder that has just taken
    the lock may not have written it yet, so an empty file is read again for up to ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            return "an unknown process"
        if text or time.monotonic() >= deadline:
            return text or "an unknown process"
        time.sleep(0.02)


@contextlib.contextmanager
def hold(run_dir, create=True):
    """Own ``run_dir`` for the ``with`` block (created first unless ``create=False``).

    Raises:
        RunDirBusy: another process holds it; the message names its pid and command.
    On entry, temporary files that a killed writer left behind are removed.
    """
    run_dir = os.fspath(run_dir)
    if create:
        os.makedirs(run_dir, exist_ok=True)
    key = os.path.realpath(run_dir)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    path = os.path.join(run_dir, LOCK_NAME)
    try:
        f = open(path, "a+", encoding="utf-8")
    except OSError as err:
        raise WriteError(err.errno, f"{run_dir}: cannot create its lock file {LOCK_NAME} "
                         f"({err.strerror or err}); a run directory must be writable") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunDirBusy(f"{run_dir} is in use by another fastair process "
                                 f"({_holder(path)}); wait for it to finish or stop it, or "
                                 "choose another directory") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}: {' '.join(sys.argv) or 'python'}\n")
        f.flush()
        _held[key] = [f, 1]
        remove_stale_temp_files(run_dir)
        try:
            yield
        finally:
            del _held[key]
    finally:
        f.close()  # closing the file releases the lock


def data_fingerprint(*tensors):
    """A short hex digest of the tensors' shapes, dtypes and contents (blake2b)."""
    h = hashlib.blake2b(digest_size=8)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def run_identity(model, train_x, valid_x, meta=None):
    """What a run is: ``{"model", "preset", "hparams", "dataset", "sizes", "x_dim",
    "fingerprint"}`` (``preset`` and ``dataset`` from ``meta`` where given, else None)."""
    meta = meta or {}
    return {"model": type(model).__name__, "preset": meta.get("model"),
            "hparams": getattr(model, "hparams", None), "dataset": meta.get("dataset"),
            "sizes": [len(train_x), len(valid_x)], "x_dim": int(train_x.shape[1]),
            "fingerprint": data_fingerprint(train_x, valid_x)}


_LABELS = {"model": "model class", "preset": "model", "hparams": "model hyper-parameters",
           "dataset": "data set", "sizes": "data sizes (train, valid)", "x_dim": "data dimension",
           "fingerprint": "training/validation data"}


def identity_differences(saved, current):
    """Sentences naming each fact of two :func:`run_identity` results that differs (a fact
    missing on either side, as in checkpoints of older versions, is not compared)."""
    out = []
    for key, label in _LABELS.items():
        a, b = saved.get(key), current.get(key)
        if a is None or b is None or a == b:
            continue
        if key == "hparams":
            names = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
            detail = ", ".join(f"{n} {a.get(n)!r} (saved) vs {b.get(n)!r}" for n in names)
            out.append(f"{label}: {detail}")
        elif key == "fingerprint":
            out.append(f"{label}: the contents differ (fingerprint {a} saved vs {b})")
        else:
            out.append(f"{label}: {a!r} (saved) vs {b!r}")
    return out
