"""``VAE.pixel_means``: the mean of p(x|z) per pixel, checked against numerical integration of
each likelihood's own density (not the closed form the code uses)."""
import math

import pytest
import torch

from fastair.models import VAE


def _quadrature_mean(log_density, n=20001):
    """``int_0^1 x p(x) dx / int_0^1 p(x) dx`` by the trapezoid rule, per logit."""
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    p = torch.exp(log_density(x))
    return torch.trapezoid(x * p, x, dim=-1) / torch.trapezoid(p, x, dim=-1)


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian"])
def test_pixel_means_are_the_likelihoods_means(likelihood):
    torch.manual_seed(0)
    model = VAE(x_dim=6, z_dim=2, hidden=(5,), likelihood=likelihood).double()
    with torch.no_grad():
        model.decoder.out.bias.copy_(torch.tensor([-30.0, -3.0, -1e-6, 0.0, 0.5, 12.0]))
    z = torch.randn(3, 2, dtype=torch.float64) * 1e-3
    out = model.decode_logits(z)
    means = model.pixel_means(z)
    assert means.shape == out.shape
    if likelihood == "bernoulli":
        expected = 1 / (1 + torch.exp(-out))
    elif likelihood == "continuous_bernoulli":
        # the density's own form: p(x) proportional to exp(x l) on [0, 1]
        expected = torch.stack([_quadrature_mean(lambda x, l=l: x * l) for l in out.reshape(-1)])
        expected = expected.reshape(out.shape)
        assert torch.all(means > 0) and torch.all(means < 1)
    else:
        expected = out
    torch.testing.assert_close(means, expected, rtol=1e-6, atol=1e-7)
    if likelihood == "continuous_bernoulli":  # far from sigmoid(l) except at the ends
        assert abs(means[0, 1].item() - 1 / (1 + math.exp(3.0))) > 0.1


def test_continuous_bernoulli_means_at_a_known_logit():
    """A continuous Bernoulli decoder at logits -3 has mean 1 / (1 - e^3) + 1/3 = 0.28, not
    sigmoid(-3) = 0.05 (what pictures of its samples showed before)."""
    model = VAE(x_dim=4, z_dim=2, hidden=(3,), likelihood="continuous_bernoulli")
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.zero_()
        model.decoder.out.bias.fill_(-3.0)
    m = model.pixel_means(torch.zeros(1, 2))
    assert m.shape == (1, 4)
    torch.testing.assert_close(m, torch.full((1, 4), 1 / (1 - math.exp(3.0)) + 1 / 3),
                               rtol=1e-5, atol=1e-6)
