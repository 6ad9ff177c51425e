"""Files and progress bars for every layer above the ops: atomic writes, normal file modes,
errors that name the file, and one way to make a tqdm bar.

Every file is written to a temporary name in the same directory, flushed to disk, given the
mode a plain ``open`` would give it (``0o666`` less the umask), then moved over the target with
``os.replace``: a reader sees the old file or the new one, never a part. The temporary file is
removed on every error (``kill -9`` aside: :func:`remove_stale_temp_files` clears those).
"""
import csv
import errno
import io
import json
import os
import tempfile

from fastair.errors import CheckpointError, WriteError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_csv",
           "atomic_save_figure", "atomic_write_png", "png_bytes", "read_json",
           "remove_stale_temp_files", "progress_bar", "TEMP_SUFFIX", "write_temp_file"]

TEMP_SUFFIX = ".tmp"
_TEMP_PREFIX = ".fastair-"
_mode = {}


def _file_mode():
    """``0o666 & ~umask``, read once (the umask can only be read by setting it)."""
    if "mode" not in _mode:
        umask = os.umask(0o022)
        os.umask(umask)
        _mode["mode"] = 0o666 & ~umask
    return _mode["mode"]


def write_temp_file(directory, name, data):
    """``data`` in a fresh temporary file of ``directory`` (``.fastair-<name>.*.tmp``, the
    project's file mode), flushed to disk; returns its path. Removed again on any error."""
    fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{name}.", suffix=TEMP_SUFFIX,
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return tmp


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically; raise :class:`WriteError` naming the file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        tmp = write_temp_file(directory, os.path.basename(path), data)
    except OSError as err:
        raise _write_error(path, err) from err
    try:
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise _write_error(path, err) from err
        raise


def _write_error(path, err):
    intact = "the previous version of the file is intact" if os.path.exists(path) else \
        "nothing was written"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "the disk is full"
        todo = "free some space and run the command again"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "permission denied"
        todo = "choose a directory you can write to"
    else:
        what = err.strerror or str(err)
        todo = "check the directory and run the command again"
    return WriteError(err.errno, f"could not write {path}: {what}; {intact}; {todo}")


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_write_csv(path, rows, columns, extrasaction="raise"):
    """Write ``rows`` (dicts) under the header ``columns`` as CSV, atomically; keys of a row
    outside ``columns`` are an error, or dropped with ``extrasaction="ignore"``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction=extrasaction,
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())


def atomic_save_figure(fig, path, **savefig_kwargs):
    """``fig.savefig(path)`` (matplotlib), atomically; the format follows ``path``'s suffix."""
    buffer = io.BytesIO()
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    fig.savefig(buffer, format=fmt, **savefig_kwargs)
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path, what="file"):
    """Load a JSON file; a missing, unreadable or malformed one raises an error naming it."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read this {what} ({err})") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: "
                              f"{err.msg}); restore the file or remove it") from None


def remove_stale_temp_files(directory):
    """Delete the temporary files a killed writer left in ``directory`` (call it only while
    holding the directory's lock, so that no live writer owns them); returns their names."""
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if name.startswith(".") and name.endswith(TEMP_SUFFIX):  # also fastair 0.1's names
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def progress_bar(enabled=True, **kwargs):
    """A ``tqdm.auto`` bar (``leave=None``: a bar nested under another one disappears when it
    ends), or None when disabled or when tqdm is not installed."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", None)
    return tqdm(**kwargs)


def png_bytes(image):
    """An 8-bit grayscale PNG of ``image`` (a ``[H, W]`` uint8 numpy array or tensor)."""
    import struct
    import zlib

    import numpy as np
    a = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"image: expected a non-empty [H, W] array, got shape {a.shape}")
    h, w = a.shape

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + a[i].tobytes() for i in range(h))  # filter 0 on every row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def atomic_write_png(path, image):
    """Write ``image`` (``[H, W]``, uint8) as a grayscale PNG, atomically."""
    atomic_write_bytes(path, png_bytes(image))
