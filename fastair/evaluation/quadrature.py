"""Exact ``ln p(x)`` of a model with a 2-d latent, by the trapezoid rule on a grid: the truth an
estimator (IW-SVI, AIS) can be checked against, independent of any sampling.

    ln p(x) = log  int  p(x|z) N(z; 0, I) dz   ~   log sum_ij  c_ij p(x|z_ij) N(z_ij; 0, I)

over an ``n x n`` grid on ``[-lim, lim]^2`` with the trapezoid weights ``c_ij`` (the cell area,
halved on the edges, quartered at the corners), summed in log space. With a Bernoulli decoder,
``log p(x|z) = x . l - sum softplus(l)`` for logits ``l = decode_logits(z)``. The grid must cover
the posterior's mass: check by a finer, wider grid (the tests do).
"""
import math

import torch
from torch import nn

__all__ = ["quadrature_log_likelihood"]


def _gauss(z, mu, logvar):
    """``log N(z; mu, exp(logvar))`` ``[G, B]`` for grid points ``z [G, 2]``, ``mu [B, 2]``."""
    d = z[:, None, :] - mu[None]
    return -0.5 * (d * d * torch.exp(-logvar) + logvar + math.log(2 * math.pi)).sum(-1)


@torch.no_grad()
def quadrature_log_likelihood(model, x, qs=(), lim=8.0, n=1201, rows=200):
    """``ln p(x)`` ``[B]`` (float64) of a model of 2-d latent by quadrature and, for each Gaussian
    ``(mu, logvar)`` (``[B, 2]`` each) in ``qs``, its ELBO ``E_q[log p(x, z) - log q(z)]`` ``[B]``.

    Args:
        model: anything with ``decode_logits(z [G, 2]) -> [G, D]`` (Bernoulli logits); called
            on float64 grid points ``rows * n`` at a time.
        x: ``[B, D]`` binary data.
        lim: the grid is ``n x n`` points on ``[-lim, lim]^2``.
        n: points per axis of the grid.
    Returns:
        ``(log_px [B], [elbo [B] for each q])``.
    """
    x = x.double()
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    w = torch.ones(n, dtype=torch.float64)
    w[[0, -1]] = 0.5
    cell = (2 * lim / (n - 1)) ** 2
    parts, elbos = [], [torch.zeros(x.shape[0], dtype=torch.float64) for _ in qs]
    for i in range(0, n, rows):
        z = torch.stack(torch.meshgrid(g[i:i + rows], g, indexing="ij"), -1).reshape(-1, 2)
        logits = model.decode_logits(z.to(next(iter(model.parameters()), z).dtype)).double()
        if logits.dim() != 2 or logits.shape[1] != x.shape[1]:
            raise ValueError(f"quadrature_log_likelihood: decode_logits of [G, 2] points gave "
                             f"{tuple(logits.shape)}, expected [G, {x.shape[1]}] (a 2-d latent)")
        log_joint = (logits @ x.T - nn.functional.softplus(logits).sum(1, keepdim=True)
                     - 0.5 * (z ** 2).sum(1, keepdim=True) - math.log(2 * math.pi))
        wz = (w[i:i + rows, None] * w[None, :]).reshape(-1, 1)
        parts.append(torch.logsumexp(log_joint + torch.log(wz), 0))
        for e, (mu, logvar) in zip(elbos, qs):
            log_q = _gauss(z, mu.double(), logvar.double())
            e += (wz * torch.exp(log_q) * (log_joint - log_q)).sum(0) * cell
    return torch.logsumexp(torch.stack(parts), 0) + math.log(cell), elbos
