"""The truth of the estimator tests on 2-d latents: ``ln p(x)`` (and the ELBO of given Gaussians)
by the trapezoid rule on a grid, data drawn from the model, the tolerances the IW-SVI truth tests
hold estimates to, and a wrapper that hides everything of a model but the evaluation protocol."""
import torch
from torch import nn

from fastair.evaluation.quadrature import quadrature_log_likelihood


def simulate(model, n, seed):
    """``n`` binary examples ``x ~ p(x|z)``, ``z ~ N(0, I_2)``, float64 ``[n, D]``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        p = torch.sigmoid(model.decode_logits(z))
    return (torch.rand(p.shape, generator=g, dtype=torch.float64) < p).double()


def quadrature_2d(model, x, qs=(), lim=8.0, n=1201, rows=200):
    """:func:`fastair.evaluation.quadrature.quadrature_log_likelihood` (the trapezoid rule on a
    grid, no sampling): ``(log_px [B], [elbo [B] for each (mu, logvar) in qs])``."""
    return quadrature_log_likelihood(model, x, qs, lim=lim, n=n, rows=rows)


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
