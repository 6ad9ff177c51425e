"""IW-SVI against the truth on a deliberately hard model: a 2-d latent, a sharp decoder over 200
pixels (posteriors of std 0.13-0.25, a few units from the origin) and an untrained encoder, with
ln p(x) by quadrature on a fine 2-d grid. The estimate must not depend on where q starts."""

import pytest
import torch
from truth2d import check_against_truth, quadrature_2d, simulate

from fastair.evaluation import fit_gaussian_q, iwsvi_log_likelihood
from fastair.models import VAE

D, N = 200, 32


def hard_model(seed=0, sharp=6.0):
    torch.manual_seed(seed)
    model = VAE(x_dim=D, z_dim=2, hidden=(32,), k=1).double()
    with torch.no_grad():
        model.decoder.out.weight.mul_(sharp)
    return model


@pytest.fixture(scope="module")
def hard():
    model = hard_model()
    x = simulate(model, N, seed=1)
    return model, x, quadrature_2d(model, x, lim=8.0, n=1601, rows=100)[0]


def test_quadrature_is_converged(hard):
    model, x, truth = hard
    finer = quadrature_2d(model, x, lim=10.0, n=2001, rows=100)[0]
    torch.testing.assert_close(finer, truth, rtol=0, atol=1e-6)


@pytest.mark.parametrize("init", ["encoder", "prior"])
def test_hard_model_matches_quadrature(hard, init):
    model, x, truth = hard
    result = iwsvi_log_likelihood(model, x, batch_size=N, init=init, progress=False, warn=False)
    check_against_truth(result, truth)
    assert result.steps.min() >= 75  # three checks at least
    assert (result.se < 0.1).all() and (result.ess > 100).all()


def test_a_fixed_100_step_budget_is_not_enough_here(hard):
    """The failure the stopping rule fixes: 100 steps at the old lr leave errors of 0.1 nat
    and more (a test that the hard model is hard)."""
    model, x, truth = hard
    result = iwsvi_log_likelihood(model, x, batch_size=N, max_steps=100, lr=1e-2, progress=False,
                                  warn=False)
    assert result.hit_cap.all()
    assert (result.log_px - truth).abs().max() > 0.1


def test_cap_is_reported_and_warned(hard):
    model, x, _ = hard
    with pytest.warns(UserWarning, match="hit the step cap"):
        result = iwsvi_log_likelihood(model, x[:4], max_steps=30, k_eval=200, progress=False)
    assert result.hit_cap.all() and (result.steps == 30).all()
    assert result.summary()["n_hit_cap"] == 4


def test_fit_stops_each_example_on_its_own(hard):
    """An example that starts at its optimum stops within a few checks while one that
    starts at the prior runs longer; the fitted q improves the bound."""
    model, x, _ = hard
    x2 = x[:2]
    start_mu = torch.zeros(2, 2, dtype=torch.float64)
    start_lv = torch.zeros(2, 2, dtype=torch.float64)
    first = fit_gaussian_q(model, x2, start_mu, start_lv,
                           generator=torch.Generator().manual_seed(0))
    mu = torch.stack([first.mu[0], start_mu[1]])
    lv = torch.stack([first.logvar[0], start_lv[1]])
    again = fit_gaussian_q(model, x2, mu, lv, generator=torch.Generator().manual_seed(1))
    assert again.steps[0] < again.steps[1]
    assert again.steps[0] <= 200
    with pytest.raises(ValueError, match="patience"):
        fit_gaussian_q(model, x2, mu, lv, patience=0)
