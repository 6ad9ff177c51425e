"""The evaluators on a user's own grey-level model: the protocol's optional ``likelihood``
(continuous Bernoulli, Gaussian), its fused and generic paths, simulated data for BDMC, and
IW-SVI and AIS against a truth by quadrature over a 1-d latent (computed here in float64
from the densities' closed forms and torch.distributions, not with the code under test)."""
import math

import pytest
import torch
from torch import nn

from fastair.evaluation import ais_log_likelihood, check_model, iwsvi_log_likelihood, log_weights
from fastair.evaluation.protocol import model_likelihood, sample_x


class _Decoder(nn.Module):
    def __init__(self, z_dim, d, hidden=4, logvar_x=None):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh())
        self.out = nn.Linear(hidden, d)
        if logvar_x is not None:
            self.logvar_x = nn.Parameter(torch.as_tensor(logvar_x, dtype=torch.float32))

    def forward(self, z):
        return self.out(self.trunk(z))


class GreyVAE(nn.Module):
    """A user's model: encode, decode_logits, ``likelihood``; decoder.trunk/out for the head."""

    def __init__(self, likelihood, z_dim=1, d=3, logvar_x=None, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.likelihood, self.z_dim = likelihood, z_dim
        self.enc = nn.Linear(d, 2 * z_dim)
        self.decoder = _Decoder(z_dim, d, logvar_x=logvar_x)
        with torch.no_grad():
            self.decoder.out.weight.mul_(3.0)

    def encode(self, x):
        mu, logvar = self.enc(x).chunk(2, -1)
        return mu, logvar

    def decode_logits(self, z):
        return self.decoder(z)


def _log_lik_truth(likelihood, out, x, logvar_x=None):
    """log p(x|z) in float64, ``out`` and ``x`` broadcast: [..., D] -> [...]."""
    out, x = torch.broadcast_tensors(out.double(), x.double())
    if likelihood == "continuous_bernoulli":
        # x l - softplus(l) + log C(l), C(l) = l / tanh(l / 2) -> 2 at 0 (log C = log 2 + l^2/12
        # + O(l^4) below |l| = 1e-3, where the closed form would lose digits)
        small = out.abs() < 1e-3
        safe = torch.where(small, torch.ones_like(out), out)
        log_c = torch.where(small, math.log(2) + out ** 2 / 12,
                            torch.log(safe / torch.tanh(safe / 2)))
        return (x * out - torch.nn.functional.softplus(out) + log_c).sum(-1)
    else:
        d = torch.distributions.Normal(out, torch.exp(0.5 * logvar_x.detach().double()))
    return d.log_prob(x).sum(-1)


def _quadrature_log_px(model, x, n=4001, lim=9.0):
    """ln p(x) for a 1-d latent: the trapezoid rule over z in [-lim, lim]. x [B, D] -> [B]."""
    z = torch.linspace(-lim, lim, n, dtype=torch.float64)
    with torch.no_grad():
        out = model.double().decode_logits(z[:, None, None])          # [n, 1, D]
        model.float()
    lv = model_likelihood(model)[1]
    log_joint = (_log_lik_truth(model.likelihood, out, x[None], lv) - 0.5 * z[:, None] ** 2
                 - 0.5 * math.log(2 * math.pi))                      # [n, B]
    m = log_joint.max(0).values
    return m + torch.log(torch.trapezoid(torch.exp(log_joint - m), z, dim=0))


def _model(likelihood):
    return GreyVAE(likelihood, logvar_x=-1.0 if likelihood == "gaussian" else None)


GREY = torch.tensor([[0.0, 0.3, 1.0], [0.9, 0.05, 0.5], [0.2, 0.7, 0.0]])


@pytest.mark.parametrize("likelihood", ["continuous_bernoulli", "gaussian"])
def test_fused_and_generic_paths_score_the_models_own_likelihood(likelihood):
    model = _model(likelihood)
    assert check_model(model, GREY) == "fused_head"
    mu, logvar = model.encode(GREY)
    z = mu + torch.randn(5, *mu.shape) * torch.exp(0.5 * logvar)
    with torch.no_grad():
        out = model.decode_logits(z)
        prior = torch.distributions.Normal(0.0, 1.0).log_prob(z.double()).sum(-1)
        q = torch.distributions.Normal(mu.double(), torch.exp(0.5 * logvar.double()))
        truth = (_log_lik_truth(likelihood, out, GREY, model_likelihood(model)[1]) + prior
                 - q.log_prob(z.double()).sum(-1))
        for path in ("fused_head", "generic"):
            got = log_weights(model, GREY, mu, logvar, z, path=path)
            torch.testing.assert_close(got.double(), truth, rtol=1e-5, atol=1e-4)


def test_a_bad_likelihood_or_a_gaussian_without_its_variance_is_named():
    model = _model("continuous_bernoulli")
    model.likelihood = "beta"
    with pytest.raises(TypeError, match="likelihood is 'beta'"):
        check_model(model)
    with pytest.raises(TypeError, match="no logvar_x"):
        check_model(GreyVAE("gaussian"))


@pytest.mark.parametrize("likelihood", ["continuous_bernoulli", "gaussian"])
def test_iwsvi_and_ais_find_the_quadrature_log_likelihood(likelihood):
    model = _model(likelihood)
    truth = _quadrature_log_px(model, GREY)
    iw = iwsvi_log_likelihood(model, GREY, k_eval=2000, progress=False, warn=False, seed=0)
    torch.testing.assert_close(iw.log_px.double(), truth, rtol=0, atol=0.05)
    ais = ais_log_likelihood(model, GREY, steps=500, chains=32, progress=False, warn=False)
    # within 4 of its own standard errors (over the chains) of the truth, and close in absolute
    assert torch.all((ais.log_px.double() - truth).abs() < 4 * ais.se.double() + 0.02)
    torch.testing.assert_close(ais.log_px.double(), truth, rtol=0, atol=0.15)


def test_continuous_bernoulli_draws_have_the_distributions_mean():
    """Inverse-CDF draws at logits from -40 to 40 (and 0): the sample mean against the mean by
    quadrature of the density ``exp(x l)`` on [0, 1], within 5 standard errors."""
    model = _model("continuous_bernoulli")
    logits = torch.tensor([-40.0, -3.0, -1e-9, 0.0, 1e-4, 0.7, 5.0, 40.0])
    n = 200_000
    x = sample_x(model, logits.expand(n, -1), torch.Generator().manual_seed(0)).double()
    assert x.min() >= 0 and x.max() <= 1 and x.dtype == torch.float64
    grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    for j, lv in enumerate(logits.double()):
        w = torch.exp(grid * lv - torch.clamp(lv, min=0))
        mean = torch.trapezoid(grid * w, grid) / torch.trapezoid(w, grid)
        se = x[:, j].std() / math.sqrt(n)
        assert abs(x[:, j].mean() - mean) < 5 * se + 1e-9, (lv, x[:, j].mean(), mean)


def test_gaussian_draws_and_bernoulli_draws():
    g = torch.Generator().manual_seed(1)
    model = _model("gaussian")
    x = sample_x(model, torch.full((100_000, 2), 0.25), g)
    assert abs(x.mean() - 0.25) < 0.01 and abs(x.std() - math.exp(-0.5)) < 0.01
    bern = GreyVAE("bernoulli")
    del bern.likelihood  # no attribute: the Bernoulli default
    probs_from = torch.tensor([[-2.0, 0.0, 3.0]]).expand(50_000, -1)
    xb = sample_x(bern, probs_from, torch.Generator().manual_seed(2))
    assert set(xb.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(xb.mean(0), torch.sigmoid(probs_from[0]), atol=0.01, rtol=0)
