"""The linear-Gaussian model of Rainforth et al. (2018, §4) for checking the SNR measurement
where the asymptotic regime is reachable: D = 20, ``z ~ N(0, I)``, ``x | z ~ N(z + mu, I)``
(their ``z ~ N(mu, I)``, ``x | z ~ N(z, I)`` shifted by ``mu``), and ``q(z|x) =
N(A x + b, exp(logvar))`` with ``logvar = log(2/3)`` (the posterior's variance is 1/2). The
parameters sit a small random step (sd 0.01) from the optimum ``A = I/2, b = -mu*/2,
mu = mu*``, with the data drawn from the true model ``p(x) = N(mu*, 2 I)``.

Its bound goes through :func:`fastair.nn.importance_bound`, so the three estimators are the
library's own rules (detached ``log q`` parameters, the DReG hook on ``z``).
"""
import math

import torch
from torch import nn

from fastair.nn import importance_bound

__all__ = ["LinearGaussian", "toy_data"]


class _Encoder(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.logvar = nn.Parameter(torch.full((dim,), math.log(2 / 3)))


class _Decoder(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))


class LinearGaussian(nn.Module):
    """The toy model near its optimum (see the module docstring); ``bound(x [B, D], k)`` is
    ``L_k`` per example ``[B]`` with ``self.estimator``'s gradient."""

    def __init__(self, mu_star, perturb=0.01, seed=0, estimator="iwae"):
        super().__init__()
        dim = mu_star.numel()
        self.dim, self.estimator = dim, estimator
        self.encoder, self.decoder = _Encoder(dim), _Decoder(dim)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.encoder.linear.weight.copy_(0.5 * torch.eye(dim) + perturb * torch.randn(
                dim, dim, generator=g))
            self.encoder.linear.bias.copy_(-0.5 * mu_star + perturb * torch.randn(dim, generator=g))
            self.decoder.mu.copy_(mu_star + perturb * torch.randn(dim, generator=g))

    def _draw(self, x, k, generator):
        mu = self.encoder.linear(x)
        logvar = self.encoder.logvar.expand_as(mu)
        eps = torch.randn((k,) + tuple(mu.shape), generator=generator, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_lik = -0.5 * ((x - z - self.decoder.mu) ** 2 + math.log(2 * math.pi)).sum(-1)
        return log_lik, z, mu, logvar

    def bound(self, x, k, *, generator=None):
        return importance_bound(*self._draw(x, k, generator), self.estimator)

    @torch.no_grad()
    def log_weights(self, x, k, *, generator=None):
        """``log w`` ``[k, B]`` of ``k`` draws from q."""
        log_lik, z, mu, logvar = self._draw(x, k, generator)
        var = torch.exp(logvar)
        log_q = -0.5 * (((z - mu) ** 2 / var) + logvar + math.log(2 * math.pi)).sum(-1)
        log_p = -0.5 * (z ** 2 + math.log(2 * math.pi)).sum(-1)
        return log_lik + log_p - log_q


def toy_data(n, dim=20, seed=0):
    """``(mu* [dim], x [n, dim])``: ``mu* ~ N(0, I)`` and ``x ~ N(mu*, 2 I)``."""
    g = torch.Generator().manual_seed(seed)
    mu_star = torch.randn(dim, generator=g)
    return mu_star, mu_star + math.sqrt(2) * torch.randn(n, dim, generator=g)
