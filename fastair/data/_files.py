"""Readers shared by the dataset loaders, with errors that name the file and say what is wrong.

Nothing here knows a particular data set: text tables (``.amat``, ``.csv``, ``.csv.gz``), MATLAB
``.mat`` files, value checks (binary, grey levels) and the image reordering used by the ``.mat``
data sets.
"""
import gzip
import os
import warnings
from pathlib import Path

import numpy as np

X_DIM = 784
"""Pixels per image (28 x 28) in every data set of fastair."""

SIDE = 28


def default_root():
    """The directory searched for data files: ``$FASTAIR_DATA`` or ``~/.cache/fastair/data``."""
    env = os.environ.get("FASTAIR_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fastair" / "data"


def resolve_root(root):
    """``root`` as a :class:`~pathlib.Path`, or :func:`default_root` when it is None."""
    return default_root() if root is None else Path(root).expanduser()


def require_file(root, filename, where, alternative=None):
    """Path of ``root / filename`` (else of ``root / alternative``, if given); a
    FileNotFoundError naming the file(s), the directory and ``where`` if none exists."""
    root = Path(root)
    for name in (filename, alternative):
        if name is not None and (root / name).is_file():
            return root / name
    what = (f"{filename} not found in {root} (looked for {root / filename})" if alternative is None
            else f"neither {filename} nor {alternative} found in {root}")
    raise FileNotFoundError(f"{what}. {where} Put the file in that directory, or pass "
                            "root=<directory holding it>, or set FASTAIR_DATA.")


def _opener(path):
    return gzip.open if str(path).endswith(".gz") else open


def read_text_table(path, *, n_values, delimiter=None, dtype=np.float64):
    """Read a text file holding one row of ``n_values`` numbers per line.

    ``delimiter`` None means any whitespace (``.amat``); ``","`` for CSV. ``.gz`` files are
    decompressed on the fly. Blank lines are skipped.

    Returns:
        ``[N, n_values]`` array of ``dtype``.

    Raises:
        ValueError naming the file (and the line, when one line is at fault): a line with the wrong
        number of values, a value that is not a number, an empty or unreadable file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            with _opener(path)(path, "rt") as f:
                rows = np.loadtxt(f, dtype=dtype, delimiter=delimiter, comments=None, ndmin=2)
    except (gzip.BadGzipFile, EOFError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read as a (gzipped) text file: {err}") from err
    except ValueError as err:
        _diagnose_lines(path, n_values, delimiter)
        raise ValueError(f"{path}: cannot be read as lines of {n_values} numbers: {err}") from err
    if rows.shape[0] == 0:
        raise ValueError(f"{path}: holds no data, expected lines of {n_values} values")
    if rows.shape[1] != n_values:
        _diagnose_lines(path, n_values, delimiter)
        raise ValueError(f"{path}: rows of {rows.shape[1]} values, expected {n_values}")
    return rows


def _diagnose_lines(path, n_values, delimiter):
    """Scan ``path`` line by line and raise a ValueError at the first bad line (the slow path)."""
    with _opener(path)(path, "rt") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            tokens = line.split(delimiter)
            if len(tokens) != n_values:
                raise ValueError(f"{path}, line {number}: {len(tokens)} values, expected "
                                 f"{n_values} (one image per line)")
            try:
                np.asarray(tokens, dtype=np.float64)
            except ValueError:
                bad = next(t for t in tokens if not _is_number(t))
                raise ValueError(f"{path}, line {number}: {bad.strip()!r} is not a number") \
                    from None


def _is_number(token):
    try:
        float(token)
    except ValueError:
        return False
    return True


def check_row_count(rows, expected, path):
    """ValueError naming ``path`` and both counts unless ``len(rows) == expected`` (None: any)."""
    if expected is not None and len(rows) != expected:
        raise ValueError(f"{path}: {len(rows)} images (lines), expected {expected}; the file may "
                         f"be truncated or a different version")


def check_binary(x, path, what):
    """ValueError naming ``path`` and ``what`` unless every value of ``x`` ``[N, D]`` is 0 or 1."""
    bad = (x != 0) & (x != 1)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        value = x[row][bad[row]][0].item()
        raise ValueError(f"{path}: {what} must hold only 0 and 1 (binary pixels), but image "
                         f"{row + 1} holds {value!r}")


def check_grey(x, path, what):
    """ValueError naming ``path`` and ``what`` unless every value of ``x`` lies in ``[0, 1]``."""
    bad = ~((x >= 0) & (x <= 1))  # also catches NaN
    if bad.any():
        value = x[bad].flat[0].item()
        raise ValueError(f"{path}: {what} must hold grey levels in [0, 1], found {value!r}")


def load_mat(path):
    """Load a MATLAB ``.mat`` file with :func:`scipy.io.loadmat` -> dict of arrays."""
    try:
        import scipy.io
    except ImportError as err:
        raise ImportError(f"reading {Path(path).name} needs scipy: pip install scipy") from err
    try:
        return scipy.io.loadmat(path)
    except Exception as err:  # scipy raises ValueError, MatReadError, OSError, ... on bad files
        raise ValueError(f"{path}: cannot be read as a MATLAB .mat file: {err}") from err


def mat_array(mat, key, path, *, shape, described):
    """The 2-D numeric array ``mat[key]``, checked against ``shape``.

    Args:
        shape: ``(rows, cols)``; an entry None accepts any size along that dim.
        described: the expected shape in words for the error, e.g. ``"[784, N] (one image per
            column)"``.

    Raises:
        ValueError naming ``path``, ``key`` and the expected shape when the key is missing or the
        array does not fit.
    """
    if key not in mat:
        present = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: no array {key!r} (expected shape {described}); the file holds "
                         f"{present}")
    a = np.asarray(mat[key])
    numeric = a.dtype == np.bool_ or np.issubdtype(a.dtype, np.number)
    fits = a.ndim == 2 and all(want is None or got == want for got, want in zip(a.shape, shape))
    if not (numeric and fits):
        got = "x".join(str(s) for s in a.shape) if numeric else f"dtype {a.dtype}"
        raise ValueError(f"{path}: array {key!r} is {got}, expected a numeric array of shape "
                         f"{described}")
    return a


def fortran_images(x):
    """Reorder each flattened image from column-major (MATLAB) to row-major pixel order.

    ``x.reshape((-1, 28, 28), order='F').reshape(-1, 784)``, i.e. each 28 x 28 image is
    transposed: ``out[n, 28 * i + j] = x[n, i + 28 * j]``.

    Args:
        x: ``[N, 784]``.

    Returns:
        ``[N, 784]``, C-contiguous.
    """
    return np.ascontiguousarray(x.reshape((-1, SIDE, SIDE), order="F").reshape(-1, X_DIM))
