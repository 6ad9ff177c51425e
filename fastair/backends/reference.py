"""Pure-torch reference implementations: the executable specification.

Every fused backend is tested against these functions. They are short, differentiable by
autograd and exact in float64. Shapes follow DESIGN.md §1: ``x`` [B, D], ``logits`` [k, B, D],
``z`` [k, B, Z], ``mu`` and ``logvar`` [B, Z].
"""
import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)


def accumulation_dtype(*dtypes):
    """float64 if any dtype is float64, else float32 (float16/bfloat16 accumulate in float32)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def bernoulli_log_prob(logits, x):
    """``sum_d x_d * l_d - softplus(l_d)`` over the last dim: [..., D] -> [...].

    Computed in the accumulation dtype; ``x`` is data and gets no gradient.
    """
    acc = accumulation_dtype(logits.dtype, x.dtype)
    logits = logits.to(acc)
    x = x.detach().to(acc)
    return (x * logits - F.softplus(logits)).sum(-1)


def gaussian_log_prob(z, mu=None, logvar=None):
    """``-1/2 sum_j (z_j - mu_j)^2 exp(-logvar_j) + logvar_j + log 2 pi``: [..., Z] -> [...].

    Standard normal where ``mu``/``logvar`` are None.
    """
    dtypes = [t.dtype for t in (z, mu, logvar) if t is not None]
    acc = accumulation_dtype(*dtypes)
    z = z.to(acc)
    diff = z if mu is None else z - mu.to(acc)
    if logvar is None:
        quad = diff * diff
        logvar_term = torch.zeros((), dtype=acc, device=z.device)
    else:
        logvar = logvar.to(acc)
        quad = diff * diff * torch.exp(-logvar)
        logvar_term = logvar
    return -0.5 * (quad + logvar_term + LOG_2PI).sum(-1)


def iwae_bound(log_w, dim=0):
    """``logsumexp(log_w, dim) - log n`` with ``n = log_w.shape[dim]``."""
    acc = accumulation_dtype(log_w.dtype)
    return torch.logsumexp(log_w.to(acc), dim) - math.log(log_w.shape[dim])


def log_weights(x, logits, z, mu, logvar):
    """``log w[k, b] = log p(x_b|z) + log p(z) - log q(z|x_b)``: [k, B]."""
    return bernoulli_log_prob(logits, x) + gaussian_log_prob(z) - gaussian_log_prob(z, mu, logvar)


def iwae_bernoulli_gaussian(x, logits, z, mu, logvar):
    """The k-sample bound ``L_k`` per example: [B], with ``k = logits.shape[0]``."""
    return iwae_bound(log_weights(x, logits, z, mu, logvar), dim=0)
