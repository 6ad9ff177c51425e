"""Loaders for the standard binary benchmark files a user downloads: static MNIST, OMNIGLOT and
Caltech 101 Silhouettes (docs/design.md §4).

Each loader takes the file path(s) and the expected sizes; ``sizes=None`` accepts any number of
images (the structure, 784 pixels per image and the values, is always checked).
"""
from pathlib import Path

import numpy as np

from fastair.data._files import (
    X_DIM,
    check_binary,
    check_grey,
    check_row_count,
    fortran_images,
    load_mat,
    mat_array,
    read_text_table,
    require_file,
)
from fastair.data.splits import Splits

# --- static binarized MNIST -------------------------------------------------------------------

MNIST_SPLITS = ("train", "valid", "test")
MNIST_FILES = tuple(f"binarized_mnist_{s}.amat" for s in MNIST_SPLITS)
MNIST_MAT_FILES = tuple(f"binarized_mnist_{s}.mat" for s in MNIST_SPLITS)
MNIST_SIZES = (50000, 10000, 10000)
MNIST_SOURCE = ("They are the static binarized MNIST of Larochelle & Murray (2011), distributed "
                "by Hugo Larochelle as text .amat files and mirrored by the IWAE code and many VAE "
                "code bases; MATLAB files holding one [N, 784] array X are read too.")
MNIST_MAT_KEY = "X"

_MAT_MAGIC = b"MATLAB"  # the 128-byte header of MATLAB v5 and v7.3 files starts with this text


def is_mat_file(path):
    """Whether ``path`` is a MATLAB file, judged by its first bytes (not its extension): v5 and
    v7.3 files open with the text ``MATLAB``; a v4 file has no header, but its first 4 bytes are
    a small type code that is never the ASCII digit or whitespace a ``.amat`` line starts with."""
    with open(path, "rb") as f:
        head = f.read(128)
    if head.startswith(_MAT_MAGIC):
        return True
    if len(head) >= 4 and head[:1] not in b"01 \t\r\n" and head[1:4] == b"\x00\x00\x00":
        return True  # MATLAB v4: little-endian int32 type code, e.g. 0x00000000 or 0x0000000a
    return False


def read_mnist_mat(path, n_images=None):
    """Read one split from a MATLAB file holding a 0/1 array ``X`` ``[N, 784]`` (row-major
    28 x 28 images, as in the ``binarized_mnist_*.mat`` files of the ARM and TheanoNADE code).

    A file with a single array under another name is accepted too.

    Returns:
        float32 ``[N, 784]`` of 0/1.
    """
    mat = load_mat(path)
    key = MNIST_MAT_KEY
    if key not in mat:
        arrays = [k for k in mat if not k.startswith("__")]
        key = arrays[0] if len(arrays) == 1 else key
    x = mat_array(mat, key, path, shape=(n_images, X_DIM),
                  described=f"[{n_images or 'N'}, {X_DIM}] (one image per row)")
    check_binary(x, path, f"array {key!r}")
    return np.ascontiguousarray(x, dtype=np.float32)


def read_mnist_split(path, n_images=None):
    """One split of static MNIST from ``path``, a text ``.amat`` file or a MATLAB file, whichever
    its content is (some mirrors ship MATLAB files named ``.amat``).

    Returns:
        float32 ``[N, 784]`` of 0/1.
    """
    path = Path(path)
    if is_mat_file(path):
        return read_mnist_mat(path, n_images)
    return read_amat(path, n_images)


def read_amat(path, n_images=None):
    """Read one ``.amat`` file: lines of 784 space-separated ``0``/``1``.

    Args:
        n_images: the number of lines expected; None accepts any.

    Returns:
        float32 ``[N, 784]`` of 0/1.
    """
    x = read_text_table(path, n_values=X_DIM, dtype=np.float32)
    check_binary(x, path, "an .amat file")
    check_row_count(x, n_images, path)
    return x


def find_mnist_files(root):
    """The three split files of static MNIST in ``root``: for each split
    ``binarized_mnist_<split>.amat``, else ``binarized_mnist_<split>.mat``.

    Raises:
        FileNotFoundError naming the directory and both names when a split has neither.
    """
    return [require_file(root, amat, MNIST_SOURCE, alternative=mat)
            for amat, mat in zip(MNIST_FILES, MNIST_MAT_FILES)]


def load_static_mnist(paths, *, sizes=MNIST_SIZES, name="mnist"):
    """Static binarized MNIST from its three files (train, valid, test, in that order), each a
    text ``.amat`` or a MATLAB file (:func:`read_mnist_split`).

    Args:
        paths: three file paths.
        sizes: expected images per file, default 50000 / 10000 / 10000; None accepts any.

    Returns:
        :class:`Splits` of float32 0/1 tensors ``[N, 784]``.
    """
    sizes = (None, None, None) if sizes is None else sizes
    return Splits.from_arrays(name, *(read_mnist_split(Path(p), n) for p, n in zip(paths, sizes)))


# --- OMNIGLOT ---------------------------------------------------------------------------------

OMNIGLOT_FILE = "chardata.mat"
OMNIGLOT_SIZES = (24345, 8070)
OMNIGLOT_N_VALID = 1345
OMNIGLOT_SOURCE = ("It is the 28x28 OMNIGLOT of Burda et al. (IWAE), in the datasets/OMNIGLOT "
                   "folder of the IWAE code repository.")


def load_omniglot(path, *, sizes=OMNIGLOT_SIZES, n_valid=OMNIGLOT_N_VALID, name="omniglot"):
    """OMNIGLOT from ``chardata.mat``, statically binarized and split.

    The file holds ``data`` ``[784, N_train]`` and ``testdata`` ``[784, N_test]``, grey levels in
    ``[0, 1]``, one image per column in column-major pixel order. Recipe: transpose, reorder
    each image (:func:`~fastair.data._files.fortran_images`); binarize with
    ``rng = RandomState(5)`` (the same stream as the legacy ``numpy.random.seed(5)``) drawing
    ``rng.uniform(size=train.shape)`` then ``rng.uniform(size=test.shape)``, pixel =
    ``uniform < intensity`` (float64 intensities as stored); then permute train with
    ``RandomState(123).permutation`` and keep its last ``n_valid`` images as validation.

    Args:
        sizes: expected ``(N_train, N_test)`` columns, default 24345 / 8070; None accepts any.
        n_valid: images moved from train to validation, default 1345.

    Returns:
        :class:`Splits`: 23000 / 1345 / 8070 images ``[N, 784]`` for the standard file.
    """
    path = Path(path)
    n_train, n_test = (None, None) if sizes is None else sizes
    mat = load_mat(path)
    grey = []
    for key, n in (("data", n_train), ("testdata", n_test)):
        a = mat_array(mat, key, path, shape=(X_DIM, n),
                      described=f"[{X_DIM}, {n or 'N'}] (one image per column)")
        a = np.asarray(a, dtype=np.float64)
        check_grey(a, path, f"array {key!r}")
        grey.append(fortran_images(a.T))
    train, test = grey
    if not 0 <= n_valid < len(train):
        raise ValueError(f"{path}: 'data' holds {len(train)} images, too few to keep "
                         f"n_valid={n_valid} of them for validation")
    rng = np.random.RandomState(5)
    train = rng.uniform(size=train.shape) < train
    test = rng.uniform(size=test.shape) < test
    train = train[np.random.RandomState(123).permutation(len(train))]
    cut = len(train) - n_valid
    return Splits.from_arrays(name, train[:cut], train[cut:], test)


# --- Caltech 101 Silhouettes ------------------------------------------------------------------

CALTECH_FILE = "caltech101_silhouettes_28_split1.mat"
CALTECH_KEYS = ("train_data", "val_data", "test_data")
CALTECH_SIZES = (4100, 2264, 2307)
CALTECH_SOURCE = ("It is the 28x28 Caltech 101 Silhouettes, split 1, from Benjamin Marlin's "
                  "Caltech 101 Silhouettes data set page.")


def load_caltech101(path, *, sizes=CALTECH_SIZES, name="caltech101"):
    """Caltech 101 Silhouettes (28x28, split 1) from its ``.mat`` file.

    The file holds ``train_data``, ``val_data`` and ``test_data``, each ``[N, 784]`` of 0/1, one
    image per row in column-major pixel order (reordered with
    :func:`~fastair.data._files.fortran_images`).

    Args:
        sizes: expected images per split, default 4100 / 2264 / 2307; None accepts any.

    Returns:
        :class:`Splits` of float32 0/1 tensors ``[N, 784]``.
    """
    path = Path(path)
    sizes = (None, None, None) if sizes is None else sizes
    mat = load_mat(path)
    parts = []
    for key, n in zip(CALTECH_KEYS, sizes):
        a = mat_array(mat, key, path, shape=(n, X_DIM),
                      described=f"[{n or 'N'}, {X_DIM}] (one image per row)")
        check_binary(a, path, f"array {key!r}")
        parts.append(fortran_images(a))
    return Splits.from_arrays(name, *parts)
