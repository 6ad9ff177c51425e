"""The truth of the estimator tests on 2-d latents: ``ln p(x)`` (and the ELBO of given Gaussians)
by the trapezoid rule on a grid, data drawn from the model, the tolerances the IW-SVI truth tests
hold estimates to, and a wrapper that hides everything of a model but the evaluation protocol."""
import math

import torch
from torch import nn


def simulate(model, n, seed):
    """``n`` binary examples ``x ~ p(x|z)``, ``z ~ N(0, I_2)``, float64 ``[n, D]``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        p = torch.sigmoid(model.decode_logits(z))
    return (torch.rand(p.shape, generator=g, dtype=torch.float64) < p).double()


def _gauss(z, mu, logvar):
    """``log N(z; mu, exp(logvar))`` ``[G, B]`` for grid points ``z [G, 2]``, ``mu [B, 2]``."""
    d = z[:, None, :] - mu[None]
    return -0.5 * (d * d * torch.exp(-logvar) + logvar + math.log(2 * math.pi)).sum(-1)


def quadrature_2d(model, x, qs=(), lim=8.0, n=1201, rows=200):
    """By the trapezoid rule on an n x n grid over ``[-lim, lim]^2``, ``rows`` grid rows at a
    time: ``ln p(x) = log int p(x|z) N(z; 0, I) dz`` ``[B]`` and, for each Gaussian ``(mu,
    logvar)`` in ``qs``, its ELBO ``E_q[log p(x, z) - log q(z)]`` ``[B]`` (a list)."""
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    w = torch.ones(n, dtype=torch.float64)
    w[[0, -1]] = 0.5
    cell = (2 * lim / (n - 1)) ** 2
    parts, elbos = [], [torch.zeros(x.shape[0], dtype=torch.float64) for _ in qs]
    for i in range(0, n, rows):
        z = torch.stack(torch.meshgrid(g[i:i + rows], g, indexing="ij"), -1).reshape(-1, 2)
        with torch.no_grad():
            logits = model.decode_logits(z)                                        # [G, D]
        log_joint = (logits @ x.T - nn.functional.softplus(logits).sum(1, keepdim=True)
                     - 0.5 * (z ** 2).sum(1, keepdim=True) - math.log(2 * math.pi))
        wz = (w[i:i + rows, None] * w[None, :]).reshape(-1, 1)
        parts.append(torch.logsumexp(log_joint + torch.log(wz), 0))
        for e, (mu, logvar) in zip(elbos, qs):
            log_q = _gauss(z, mu, logvar)
            e += (wz * torch.exp(log_q) * (log_joint - log_q)).sum(0) * cell
    return torch.logsumexp(torch.stack(parts), 0) + math.log(cell), elbos


def check_against_truth(result, truth):
    """IW-SVI's truth tolerances: mean error under 0.01, mean absolute under 0.03, largest under
    0.15 nat, no example at the step cap."""
    error = result.log_px - truth
    assert abs(error.mean().item()) < 0.01, error
    assert error.abs().mean().item() < 0.03, error
    assert error.abs().max().item() < 0.15, error
    assert not result.hit_cap.any()


class ProtocolOnly(nn.Module):
    """``inner`` behind the two protocol methods only: its own log weights and decoder head
    out of sight, so the evaluation takes its generic path."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def encode(self, x):
        return self.inner.encode(x)

    def decode_logits(self, z):
        return self.inner.decode_logits(z)
