"""The quadrature truth (fastair.evaluation.quadrature) against closed forms: with logits that do
not depend on z the posterior is the prior, so ln p(x) is the Bernoulli likelihood of the logits
and the ELBO of any Gaussian q is ln p(x) - KL(q || N(0, I))."""

import pytest
import torch
from torch import nn

from fastair.evaluation import quadrature_log_likelihood


class ConstantLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def decode_logits(self, z):
        return self.logits.expand(z.shape[:-1] + self.logits.shape)


def test_constant_logits_give_the_bernoulli_likelihood_and_the_kl():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, generator=g, dtype=torch.float64) * 3
    x = (torch.rand(5, 7, generator=g) < 0.5).double()
    mu = torch.randn(5, 2, generator=g, dtype=torch.float64)
    logvar = torch.randn(5, 2, generator=g, dtype=torch.float64) * 0.5
    log_px, (elbo,) = quadrature_log_likelihood(ConstantLogits(logits), x, qs=[(mu, logvar)])
    exact = (x * logits - nn.functional.softplus(logits)).sum(1)
    torch.testing.assert_close(log_px, exact, rtol=0, atol=1e-9)
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
    torch.testing.assert_close(elbo, exact - kl, rtol=0, atol=1e-5)


def test_a_latent_that_is_not_2d_is_refused():
    model = nn.Linear(3, 7)
    model.decode_logits = lambda z: torch.zeros(z.shape[0], 5, dtype=z.dtype)
    with pytest.raises(ValueError, match="2-d latent"):
        quadrature_log_likelihood(model, torch.zeros(2, 7), n=11, rows=11)
