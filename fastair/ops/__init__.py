"""torch.library registrations: one file per op, each with its fake (meta) implementation and
autograd formula, so that ``torch.compile(fullgraph=True)`` sees the fused kernels as single ops.

Every op takes the backend name (``native`` or ``triton``) as its last argument and canonical,
contiguous shapes (see :mod:`fastair.backends`).
"""
from fastair.ops.bernoulli import bernoulli_log_prob
from fastair.ops.gaussian import gaussian_log_prob
from fastair.ops.logsumexp import logsumexp
from fastair.ops.iwae_bernoulli_gaussian import iwae_bernoulli_gaussian
from fastair.ops.capped_weight_norm import capped_weight_norm
from fastair.ops.linear_bernoulli import linear_bernoulli_log_prob

__all__ = ["bernoulli_log_prob", "gaussian_log_prob", "logsumexp", "iwae_bernoulli_gaussian",
           "capped_weight_norm", "linear_bernoulli_log_prob"]
