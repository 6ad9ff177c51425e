"""AIS and BDMC (fastair.evaluation.ais, .hmc) against the truth: ln p(x) by quadrature on a
user's own 2-d-latent VAE (tanh MLP, only ``encode`` and ``decode_logits``) whose decoder is made
sharp (posterior standard deviations 0.2-0.4 around single modes, log-likelihoods spread over
tens of nats under the prior); AIS with one temperature is importance sampling on the same
draws; HMC keeps a Gaussian's moments; BDMC brackets the truth and tightens with more steps; bad
arguments are named errors. Float64 models, so that the comparisons on the same draws are
exact to rounding."""
import math

import pytest
import torch
from torch import nn
from truth2d import ProtocolOnly as Hidden
from truth2d import quadrature_2d, simulate

from fastair.evaluation import fit_gaussian_q, log_weights
from fastair.evaluation.ais import (
    CHAINS,
    LEAPFROG,
    STEPS,
    AISResult,
    BDMCResult,
    ais_log_likelihood,
    bdmc,
    sigmoid_schedule,
)
from fastair.evaluation.bound import block_generator
from fastair.evaluation.hmc import hmc_transition
from fastair.models import VAE

D, Z, N = 16, 2, 16


class SharpVAE(nn.Module):
    """A user's VAE: tanh layers, its own names, no fastair base class, the decoder's output
    weights scaled by ``sharp`` (confident pixels, so narrow posteriors); the encoder is left
    untrained (a poor ``q(z|x)``)."""

    def __init__(self, sharp=12.0, h=32, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.enc = nn.Sequential(nn.Linear(D, h), nn.Tanh())
        self.enc_mu, self.enc_logvar = nn.Linear(h, Z), nn.Linear(h, Z)
        self.dec = nn.Sequential(nn.Linear(Z, h), nn.Tanh())
        self.dec_out = nn.Linear(h, D)
        with torch.no_grad():
            self.dec[0].weight.mul_(2.0)
            self.dec_out.weight.mul_(sharp)
        self.double()

    def encode(self, x):
        h = self.enc(x)
        return self.enc_mu(h), self.enc_logvar(h)

    def decode_logits(self, z):
        return self.dec_out(self.dec(z))


class NoDecoder(nn.Module):
    """Off the protocol: no ``decode_logits``; counts the calls of ``encode``."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(D, 2 * Z)
        self.calls = 0

    def encode(self, x):
        self.calls += 1
        return self.lin(x).chunk(2, -1)


def quadrature(model, x, lim=7.0, n=701):
    """``ln p(x)`` ``[B]`` by the trapezoid rule on an n x n grid."""
    return quadrature_2d(model, x, lim=lim, n=n)[0]


@pytest.fixture(scope="module")
def sharp():
    model = SharpVAE()
    x = simulate(model, N, seed=1)
    return model, x, quadrature(model, x)


def test_quadrature_is_converged(sharp):
    model, x, truth = sharp
    torch.testing.assert_close(quadrature(model, x, lim=8.0, n=901), truth, rtol=0, atol=1e-8)


def test_sigmoid_schedule():
    b = sigmoid_schedule(100)
    assert b.dtype == torch.float64 and b.shape == (101,)
    assert b[0].item() == 0.0 and b[-1].item() == 1.0 and (b.diff() > 0).all()
    steps = b.diff()
    assert steps[0] < steps[50] / 5 and steps[-1] < steps[50] / 5  # dense at both ends
    torch.testing.assert_close(b + b.flip(0), torch.ones(101, dtype=torch.float64))
    assert sigmoid_schedule(1).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("init", ["prior", "encoder"])
def test_defaults_match_quadrature(sharp, init):
    """At the defaults (T = 1000, C = 32, L = 2) the per-example standard error is about 0.035
    nat, so the mean absolute error over 16 examples is about 0.03 (0.026-0.034 over four seeds
    when the defaults were chosen); the mean error is within 3 standard errors of the mean."""
    model, x, truth = sharp
    result = ais_log_likelihood(model, x, init=init, progress=False)
    assert (result.steps, result.chains, result.leapfrog) == (STEPS, CHAINS, LEAPFROG)
    error = result.log_px - truth
    assert error.abs().mean().item() < 0.05, error
    se_of_mean = result.se.square().sum().sqrt().item() / N
    assert abs(error.mean().item()) < 3 * se_of_mean + 0.005, (error.mean(), se_of_mean)
    assert error.abs().max().item() < 0.2, error
    assert (result.se < 0.1).all() and (result.se > 0.005).all()
    assert (0.55 < result.acceptance).all() and (result.acceptance < 0.75).all()
    assert result.log_px.dtype == torch.float64 and result.log_px.device.type == "cpu"


def _is_estimate(model, x, mu, logvar, chains, generator):
    eps = torch.randn((chains,) + tuple(mu.shape), generator=generator, dtype=mu.dtype)
    log_w = log_weights(model, x, mu, logvar, mu + torch.exp(0.5 * logvar) * eps).double()
    return torch.logsumexp(log_w, 0) - math.log(chains)


@pytest.mark.parametrize("init", ["prior", "encoder", "given"])
def test_one_temperature_is_importance_sampling(sharp, init):
    """``steps = 1``: no transition, ``log w = g(z_0)``: the IS estimate on the same draws
    (the first ``randn`` of block 0's generator)."""
    model, x, _ = sharp
    with torch.no_grad():
        mu, logvar = model.encode(x)
    if init == "prior":
        mu, logvar = torch.zeros_like(mu), torch.zeros_like(logvar)
    if init == "given":
        mu, logvar = mu + 0.3, logvar - 1.0
    kwargs = {"fitted": (mu, logvar), "init": "fitted"} if init == "given" else {"init": init}
    result = ais_log_likelihood(model, x, steps=1, chains=64, seed=5, progress=False, warn=False,
                                **kwargs)
    expected = _is_estimate(model, x, mu, logvar, 64, block_generator(x.device, 5, 0))
    torch.testing.assert_close(result.log_px, expected, rtol=0, atol=1e-10)
    assert result.acceptance.isnan().all()
    assert result.decoder_passes == 64 + 4
    other = ais_log_likelihood(model, x, steps=1, chains=64, seed=6, progress=False, warn=False,
                               **kwargs)
    assert (other.log_px - result.log_px).abs().max() > 1e-3  # the seed matters


def test_fitted_init_fits_q_as_iwsvi(sharp):
    """``init="fitted"`` without ``fitted``: IW-SVI's fit (its defaults, block 0's generator),
    then the draws from the same generator."""
    model, x, _ = sharp
    x4 = x[:4]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        generator = block_generator(x.device, 3, 0)
        with torch.no_grad():
            mu, logvar = model.encode(x4)
        fit = fit_gaussian_q(model, x4, mu, logvar, generator=generator)
        expected = _is_estimate(model, x4, fit.mu, fit.logvar, 32, generator)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    result = ais_log_likelihood(model, x4, steps=1, chains=32, init="fitted", seed=3,
                                progress=False, warn=False)
    torch.testing.assert_close(result.log_px, expected, rtol=0, atol=1e-10)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("start", ["target", "offset"])
def test_hmc_leaves_a_gaussian_invariant(start):
    """Two Gaussian targets (one per column) in 3 dims with scales 0.1-2, 4000 independent chains
    each, 60 transitions with a large step (acceptance about 0.6), preconditioned by scales off
    by up to 2x. From exact draws the moments must stay, from a point 3 standard deviations off
    they must be reached. Tolerances: 5 standard errors of 4000 draws (mean: s / sqrt(n) =
    0.016 s; variance: s^2 sqrt(2 / n) = 0.022 s^2)."""
    n = 4000
    mean = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=torch.float64)
    sd = torch.tensor([[0.1, 1.0, 2.0], [0.5, 0.2, 1.5]], dtype=torch.float64)
    scale = sd * torch.tensor([[2.0, 0.5, 1.0], [1.0, 1.5, 0.7]], dtype=torch.float64)

    def target(z):
        d = (z - mean) / sd.square()
        return -0.5 * ((z - mean) * d).sum(-1), -d

    g = torch.Generator().manual_seed(0)
    if start == "target":
        z = mean + sd * torch.randn((n, 2, 3), generator=g, dtype=torch.float64)
    else:
        z = (mean + 3 * sd).expand(n, 2, 3).clone()
    state = target(z)
    accept = []
    for _ in range(60):
        z, state, a = hmc_transition(z, state, target, 0.9, scale, 3, g, jitter=0.3)
        accept.append(a.mean().item())
    torch.testing.assert_close(state[0], target(z)[0])
    assert 0.3 < sum(accept) / len(accept) < 0.95
    z_sd = (z - mean) / sd
    assert (z_sd.mean(0).abs() < 5 / math.sqrt(n)).all(), z_sd.mean(0)
    assert ((z_sd.var(0) - 1).abs() < 5 * math.sqrt(2 / n)).all(), z_sd.var(0)


def test_hmc_rejects_non_finite_proposals():
    """A target that is ``-inf`` beyond ``z = 1``: proposals there are rejected, never NaN."""
    def target(z):
        lf = torch.where(z[..., 0] < 1, -0.5 * z.square().sum(-1), -torch.inf)
        return lf, -z

    z = torch.zeros(1000, 1, 1, dtype=torch.float64)
    state = target(z)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        z, state, a = hmc_transition(z, state, target, 1.0, 1.0, 2, g)
        assert torch.isfinite(a).all() and (z < 1).all() and torch.isfinite(state[0]).all()


def test_bdmc_brackets_the_truth(sharp):
    """BDMC at the defaults on 32 simulated examples: ``lower`` at most, ``upper`` at least the
    quadrature truth, on average within 3 standard errors of the mean and per example within
    0.25 nat (7 of their standard errors of about 0.035); the bracket is then narrow."""
    model, _, _ = sharp
    result = bdmc(model, 32, z_dim=Z, seed=2, progress=False)
    assert isinstance(result, BDMCResult)
    assert result.x.shape == (32, D) and result.z.shape == (32, Z)
    assert set(result.x.unique().tolist()) <= {0.0, 1.0}
    truth = quadrature(model, result.x)
    lo, up = result.lower - truth, result.upper - truth
    se_lo = result.lower_se.square().sum().sqrt().item() / 32
    se_up = result.upper_se.square().sum().sqrt().item() / 32
    assert lo.mean().item() < 3 * se_lo and up.mean().item() > -3 * se_up, (lo, up)
    assert lo.max().item() < 0.25 and up.min().item() > -0.25, (lo, up)
    assert abs(result.width.mean().item()) < 0.05
    assert result.summary()["n"] == 32


def test_bdmc_width_falls_with_steps(sharp):
    """With 10 temperatures the bracket is about a nat wide, with 100 a tenth of that."""
    model, _, _ = sharp
    widths = [bdmc(model, 16, steps=s, chains=8, z_dim=Z, seed=4, progress=False).width.mean()
              .item() for s in (10, 100)]
    assert widths[0] > 0.4 and widths[1] < widths[0] / 4, widths
    # data and truth do not depend on the steps
    a = bdmc(model, 4, steps=2, chains=2, z_dim=Z, seed=4, progress=False)
    b = bdmc(model, 4, steps=3, chains=2, z_dim=Z, seed=4, progress=False)
    assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z)


@pytest.mark.parametrize("name, value", [
    ("steps", 0), ("chains", 0), ("leapfrog", 0), ("init", "posterior"), ("batch_size", 0),
    ("steps", 1.5), ("chains", True), ("adapt", "sometimes"), ("pilot", 0),
    ("step_size", 0.0), ("adapt_rate", -1.0), ("precision", "fp8"),
])
def test_bad_arguments_are_named(sharp, name, value):
    model, x, _ = sharp
    with pytest.raises(ValueError, match=rf"^{name}:"):
        ais_log_likelihood(model, x, progress=False, **{name: value})
    if name != "init":
        with pytest.raises(ValueError, match=rf"^{name}:"):
            bdmc(model, 4, z_dim=Z, progress=False, **{name: value})


def test_bad_fitted_bdmc_and_x(sharp):
    model, x, _ = sharp
    mu = torch.zeros(N, Z, dtype=torch.float64)
    with pytest.raises(ValueError, match="fitted"):
        ais_log_likelihood(model, x, init="fitted", fitted=(mu, mu[:3]), progress=False)
    with pytest.raises(ValueError, match="fitted"):
        ais_log_likelihood(model, x, init="prior", fitted=(mu, mu), progress=False)
    with pytest.raises(ValueError, match="x"):
        ais_log_likelihood(model, x[0], progress=False)
    with pytest.raises(ValueError, match="z_dim"):
        bdmc(model, 4, progress=False)  # SharpVAE has no z_dim attribute
    with pytest.raises(ValueError, match="init"):
        bdmc(model, 4, z_dim=Z, init="fitted", progress=False)
    with pytest.raises(ValueError, match="^n:"):
        bdmc(model, 0, z_dim=Z, progress=False)


def test_model_off_the_protocol_is_a_type_error_before_any_work(sharp):
    _, x, _ = sharp
    model = NoDecoder().double()
    with pytest.raises(TypeError, match="decode_logits"):
        ais_log_likelihood(model, x, progress=False)
    with pytest.raises(TypeError, match="decode_logits"):
        bdmc(model, 4, z_dim=Z, progress=False)
    assert model.calls == 0


def test_paths_agree_and_state_is_restored():
    """fastair's VAE (its own ``log_weights``: the fused kernels' gradients in ``z``) and the same
    model behind only ``encode`` and ``decode_logits`` (autograd through the decoder) give the
    same AIS run; the model's mode and ``requires_grad`` flags come back as they were."""
    torch.manual_seed(0)
    model = VAE(x_dim=D, z_dim=Z, hidden=(16,), k=1).double()
    x = simulate(model, 6, seed=3)
    model.train()
    model.decoder.out.bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    kw = dict(steps=30, chains=4, seed=1, progress=False, warn=False)
    own = ais_log_likelihood(model, x, **kw)
    generic = ais_log_likelihood(Hidden(model), x, **kw)
    torch.testing.assert_close(own.log_px, generic.log_px, rtol=0, atol=1e-8)
    torch.testing.assert_close(own.acceptance, generic.acceptance, rtol=0, atol=1e-8)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert bdmc(model, 3, steps=5, chains=2, progress=False).lower.shape == (3,)  # model.z_dim


def test_result_summary_csv_and_other_adapt_modes(sharp):
    model, x, _ = sharp
    for adapt in ("chain", "fixed"):
        result = ais_log_likelihood(model, x[:3], steps=20, chains=4, adapt=adapt, batch_size=2,
                                    progress=False, warn=False)
        assert isinstance(result, AISResult) and result.log_px.shape == (3,)
        assert result.pilot == 0 and result.adapt == adapt
        assert result.decoder_passes == 4 * (1 + 19 * LEAPFROG)
        if adapt == "fixed":
            assert torch.allclose(result.step_size, torch.full((3,), 0.3, dtype=torch.float64))
    summary = result.summary()
    assert summary["steps"] == 20 and summary["chains"] == 4 and summary["n"] == 3
    assert summary["-ln p(x)"] == pytest.approx(-result.log_px.mean().item())
    lines = result.per_example_csv().splitlines()
    assert lines[0] == ",".join(AISResult.CSV_COLUMNS) and len(lines) == 4
    assert float(lines[1].split(",")[1]) == pytest.approx(result.log_px[0].item(), abs=1e-6)
    with pytest.warns(UserWarning, match="AIS: .* standard error"):
        ais_log_likelihood(model, x[:3], steps=1, chains=4, init="prior", progress=False)
