"""fastair: fused kernels for amortized inference regularization (AIR) in PyTorch.

Public ops (see docs/design.md §2; defined in :mod:`fastair.functional`):
:func:`bernoulli_log_prob`, :func:`gaussian_log_prob`, :func:`iwae_bound`,
:func:`iwae_bernoulli_gaussian`, :func:`capped_weight_norm`, :func:`linear_bernoulli_log_prob`,
:func:`continuous_bernoulli_log_prob`, :func:`linear_continuous_bernoulli_log_prob`,
:func:`linear_gaussian_log_prob`; the backend switch :func:`set_backend`, :func:`use_backend`
(environment variable ``FASTAIR_BACKEND``), and :func:`get_backend`, the backend that actually runs
(``native``, ``triton`` or ``reference``, never ``auto``; see :mod:`fastair.backends`). Nothing is
compiled or imported from Triton at import: Triton is optional (``pip install 'fastair[gpu]'``), and
the C++ kernels are built by ``fastair build`` (the install runs it) or else on first use, and
cached (:mod:`fastair.backends.native`). ``fastair info`` prints the versions, backends and
hardware a bug report needs.

Loaded with the package: :mod:`fastair.nn` (the layers and the drop-in loss
:class:`fastair.nn.IWAELoss`) and :mod:`fastair.data` (data sets). The higher layers load on
first use: :mod:`fastair.models` (the VAE family), :mod:`fastair.training` (the trainer),
:mod:`fastair.evaluation` (IW-SVI, AIS and BDMC), :mod:`fastair.reproduce` (the paper's
experiments), :mod:`fastair.cli`, and :func:`image_grid` (digits tiled into a picture, black ink
on white; from :mod:`fastair.trained`).
"""
import importlib

# _checkout first: kernels/ and csrc/ are found as fastair.kernels/.csrc without an install
from fastair import _checkout, data, nn  # noqa: F401
from fastair import functional as _functional
from fastair.backends import BACKENDS, get_backend, set_backend, use_backend

__version__ = "0.2.0"

# The public ops are whatever fastair.functional names in its __all__: a new op is exported
# here without an edit (docs/adding_an_op.md).
globals().update({name: getattr(_functional, name) for name in _functional.__all__})

__all__ = ["BACKENDS", "get_backend", "set_backend", "use_backend", *_functional.__all__,
           "data", "nn", "image_grid", "__version__"]

_LAZY = ("models", "training", "evaluation", "reproduce", "cli")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"fastair.{name}")
    if name == "image_grid":  # loaded on first use: fastair.trained imports the trainer
        return importlib.import_module("fastair.trained").image_grid
    raise AttributeError(f"module 'fastair' has no attribute {name!r}")
