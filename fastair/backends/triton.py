"""Triton backend: the raw fused functions of :mod:`fastair.backends`, from :mod:`fastair.kernels`.

Kernels for CUDA tensors (CPU tensors only under ``TRITON_INTERPRET=1``). Importing this module
raises ``ImportError`` when the ``triton`` package is not installed.
"""
try:
    import triton  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fastair.backends.triton needs the 'triton' package (pip install triton); "
        "use the 'native' or 'reference' backend without it") from exc

from fastair.kernels.bernoulli import bernoulli_bwd, bernoulli_fwd
from fastair.kernels.capped_weight_norm import capped_weight_norm_bwd, capped_weight_norm_fwd
from fastair.kernels.gaussian import gaussian_bwd, gaussian_fwd
from fastair.kernels.iwae_bernoulli_gaussian import iwae_bg_bwd, iwae_bg_fwd
from fastair.kernels.linear_bernoulli import linear_bernoulli_bwd, linear_bernoulli_fwd
from fastair.kernels.logsumexp import logsumexp_bwd, logsumexp_fwd

__all__ = [
    "bernoulli_fwd", "bernoulli_bwd", "gaussian_fwd", "gaussian_bwd",
    "logsumexp_fwd", "logsumexp_bwd", "iwae_bg_fwd", "iwae_bg_bwd",
    "capped_weight_norm_fwd", "capped_weight_norm_bwd",
    "linear_bernoulli_fwd", "linear_bernoulli_bwd",
]
