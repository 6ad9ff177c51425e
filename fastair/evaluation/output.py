"""The files of one evaluation (``fastair evaluate``), replaced together or not at all.

An evaluation is ``summary.json`` and the data files it names (:data:`DATA_FILES`:
``per_example.csv``, ``bdmc.csv``). :func:`write_evaluation` puts a new one in place in three
moves:

1. every file is written and flushed to disk under a temporary name in the directory; a failure
   here (a full disk) removes the temporary files and leaves the previous evaluation untouched;
2. the previous ``summary.json`` is removed, the new data files are renamed into place, and data
   files of the previous evaluation that the new one lacks are removed;
3. the new ``summary.json`` is renamed into place, last.

SIGINT and SIGTERM that arrive during moves 2-3 are held back until 3 is done. ``summary.json``
names each data file's SHA-256 and size (``"files"``), so it never describes a file of another
evaluation: a ``kill -9`` between moves 2 and 3 leaves data files without a summary (no
evaluation), never beside an older summary. :func:`read_evaluation` checks the hashes.
"""
import contextlib
import errno
import hashlib
import json
import os
import signal
import threading

from fastair.errors import CheckpointError, WriteError
from fastair.io import write_temp_file

__all__ = ["DATA_FILES", "SUMMARY", "make_directory", "write_evaluation", "read_evaluation",
           "sha256_file", "os_error_message"]

DATA_FILES = ("per_example.csv", "bdmc.csv")
"""The data files an evaluation may have (``summary.json`` names those it has)."""

SUMMARY = "summary.json"


def os_error_message(err):
    """``(what happened, what to do)`` for an ``OSError`` of the evaluation's directory."""
    code = getattr(err, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full", "free some space and run the command again"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ("permission denied", "make the directory writable, or write elsewhere with "
                "--out DIR")
    if code in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        return ("a file is in the way of a directory of that name",
                "move the file away, or write elsewhere with --out DIR")
    return (err.strerror or type(err).__name__).lower(), \
        "check the directory and run the command again"


def _error(message, err):
    out = WriteError(message)  # one argument: str() without an "[Errno N]" prefix
    out.errno = getattr(err, "errno", None)
    return out


def make_directory(path):
    """Create ``path`` (and its parents) if missing; returns whether it was created. An
    ``OSError`` becomes a :class:`~fastair.errors.WriteError` naming the path and the remedy."""
    existed = os.path.isdir(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        what, todo = os_error_message(err)
        raise _error(f"cannot create {path}, the directory of the evaluation's files: {what}; "
                     f"{todo}", err) from None
    return not existed


def sha256_file(path, chunk=1 << 20):
    """The hex SHA-256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait until the block is done (then the first is delivered again, to
    the handlers from before); in the main thread only, elsewhere a plain block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    if caught:
        signal.raise_signal(caught[0])


def write_evaluation(directory, files, summary, on_commit=None):
    """Replace the evaluation in ``directory`` by ``files`` (``{name: text}``, names from
    :data:`DATA_FILES`) and ``summary`` (a dict, written as ``summary.json`` with ``"files":
    {name: {"sha256", "bytes"}}`` added), together or not at all (module docstring);
    ``on_commit()`` is called once the new ``summary.json`` is in place, before a held-back
    signal is delivered.

    Returns:
        the summary as written.
    Raises:
        WriteError: a file could not be written (the message says which, whether the previous
        evaluation is intact, and what to do).
    """
    unknown = sorted(set(files) - set(DATA_FILES))
    if unknown:
        raise ValueError(f"files: expected names from {DATA_FILES}, got {unknown}")
    data = {name: text.encode("utf-8") for name, text in files.items()}
    summary = dict(summary, files={name: {"sha256": hashlib.sha256(b).hexdigest(),
                                          "bytes": len(b)} for name, b in data.items()})
    data[SUMMARY] = (json.dumps(summary, indent=2) + "\n").encode("utf-8")
    had_summary = os.path.exists(os.path.join(directory, SUMMARY))
    temps = {}
    try:
        for name, b in data.items():  # move 1
            try:
                temps[name] = write_temp_file(directory, name, b)
            except OSError as err:
                what, todo = os_error_message(err)
                kept = (f"{directory} still holds the previous evaluation, unchanged" if had_summary
                        else f"no file of this evaluation was put in {directory}")
                raise _error(f"could not write {os.path.join(directory, name)}: {what}; {kept}; "
                             f"{todo}", err) from None
        with _signals_held():
            target = os.path.join(directory, SUMMARY)
            try:
                _unlink(target)  # move 2: from here the directory holds no evaluation
                for name in DATA_FILES:
                    target = os.path.join(directory, name)
                    if name in temps:
                        os.replace(temps.pop(name), target)
                    else:
                        _unlink(target)
                target = os.path.join(directory, SUMMARY)
                os.replace(temps.pop(SUMMARY), target)  # move 3
            except OSError as err:
                what, todo = os_error_message(err)
                raise _error(f"could not put {target} in place: {what}; {directory} holds no "
                             "complete evaluation now (its summary.json was removed first, so "
                             f"that no file passes for another evaluation's); {todo}",
                             err) from None
            _fsync_dir(directory)
            if on_commit is not None:
                on_commit()
    finally:
        for tmp in temps.values():
            _unlink(tmp)
    return summary


def read_evaluation(directory):
    """The summary of the evaluation in ``directory``, after checking that every data file it
    names is there with its recorded SHA-256.

    Raises:
        FileNotFoundError: no ``summary.json`` (no complete evaluation).
        CheckpointError: a named file is missing or differs from the one the summary describes.
    """
    path = os.path.join(directory, SUMMARY)
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    for name, facts in (summary.get("files") or {}).items():
        file = os.path.join(directory, name)
        if not os.path.exists(file):
            raise CheckpointError(f"{file}: missing, though {path} names it; evaluate again")
        if sha256_file(file) != facts.get("sha256"):
            raise CheckpointError(f"{file}: not the file {path} describes (its SHA-256 "
                                  "differs); evaluate again")
    return summary
