"""fastair: fused kernels for amortized inference regularization (AIR) in PyTorch.

Public ops (see docs/design.md §2): :func:`bernoulli_log_prob`, :func:`gaussian_log_prob`,
:func:`iwae_bound`, :func:`iwae_bernoulli_gaussian`, :func:`capped_weight_norm`,
:func:`linear_bernoulli_log_prob` and the
layers of :mod:`fastair.nn`; the backend switch :func:`set_backend`,
:func:`use_backend`, :func:`get_backend` (environment variable ``FASTAIR_BACKEND``).
Nothing is compiled at import: the C++ kernels build on first use and are cached.
The higher layers load on first use: :mod:`fastair.models` (the VAE family),
:mod:`fastair.training` (the trainer), :mod:`fastair.data` (data sets), :mod:`fastair.cli`.
"""
import importlib

from fastair.backends import BACKENDS, get_backend, set_backend, use_backend
from fastair.functional import (bernoulli_log_prob, capped_weight_norm, gaussian_log_prob,
                                iwae_bernoulli_gaussian, iwae_bound, linear_bernoulli_log_prob)

from fastair import data, nn

__version__ = "0.2.0"

__all__ = [
    "BACKENDS", "get_backend", "set_backend", "use_backend",
    "bernoulli_log_prob", "gaussian_log_prob", "iwae_bound", "iwae_bernoulli_gaussian",
    "capped_weight_norm", "linear_bernoulli_log_prob", "data", "nn", "__version__",
]

_LAZY = ("models", "training", "evaluation", "reproduce", "cli")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"fastair.{name}")
    raise AttributeError(f"module 'fastair' has no attribute {name!r}")
