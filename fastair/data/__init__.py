"""Image data sets for fastair (docs/design.md §4), binary but for one.

:func:`load_dataset` returns :class:`Splits` (``.train``, ``.valid``, ``.test``: float32 CPU
tensors ``[N, 784]`` of exact 0/1). ``"mnist5k"`` is real and offline (5000 MNIST digits embedded
in fastair as ``fastair/data/mnist5k.npz``, see ``fastair/data/README.md``); ``"mnist5k-grey"``
is the same digits as grey levels in [0, 1] (for the continuous Bernoulli and Gaussian
likelihoods); ``"mnist"``, ``"omniglot"`` and ``"caltech101"`` read the standard files from a
data directory. The per-data-set loaders are exported for files kept elsewhere.
"""
from fastair.data._files import X_DIM, default_root
from fastair.data.datasets import DATASETS, load_dataset
from fastair.data.mnist5k import (
    load_mnist5k,
    load_mnist5k_grey,
    mnist5k_path,
    read_mnist5k_csv,
    read_mnist5k_npz,
)
from fastair.data.splits import Splits
from fastair.data.standard import load_caltech101, load_omniglot, load_static_mnist, read_amat

__all__ = [
    "DATASETS", "X_DIM", "Splits", "default_root", "load_dataset",
    "load_mnist5k", "load_mnist5k_grey", "read_mnist5k_npz", "mnist5k_path", "read_mnist5k_csv",
    "load_static_mnist", "read_amat", "load_omniglot", "load_caltech101",
]
