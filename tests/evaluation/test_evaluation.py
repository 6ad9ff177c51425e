"""IW-SVI against the truth: ln p(x) by quadrature for a model with a 1-dimensional latent."""
import math

import pytest
import torch

from fastair.evaluation import amortized_bound, iwsvi_log_likelihood, streamed_log_mean_weight
from fastair.functional import bernoulli_log_prob, gaussian_log_prob
from fastair.models import VAE


def small_model(seed=0, x_dim=12):
    torch.manual_seed(seed)
    model = VAE(x_dim=x_dim, z_dim=1, hidden=(16,), k=1).double()
    with torch.no_grad():  # a decoder sharp enough that the posterior is far from the prior
        model.decoder.out.weight.mul_(4.0)
    return model


def quadrature_log_px(model, x, lo=-12.0, hi=12.0, n=40001):
    """``log int p(x|z) N(z; 0, 1) dz`` on a fine grid (trapezoid rule in log space): [B]."""
    z = torch.linspace(lo, hi, n, dtype=torch.float64)[:, None, None].expand(n, x.shape[0], 1)
    with torch.no_grad():
        log_joint = bernoulli_log_prob(model.decode_logits(z), x) + gaussian_log_prob(z)
    weights = torch.full((n, 1), math.log((hi - lo) / (n - 1)), dtype=torch.float64)
    weights[[0, -1]] -= math.log(2.0)
    return torch.logsumexp(log_joint + weights, 0)


def test_iwsvi_matches_quadrature_and_the_amortized_bound_lies_below():
    model = small_model()
    x = (torch.rand(20, 12, generator=torch.Generator().manual_seed(1)) < 0.5).double()
    truth = quadrature_log_px(model, x)
    result = iwsvi_log_likelihood(model, x, k_svi=16, k_eval=5000, chunk=700, batch_size=8,
                                  elbo_samples=4000, progress=False)
    error = (result.log_px - truth).abs()
    # 5000 importance samples from a Gaussian q fitted to a (possibly skewed) 1-D posterior:
    # a few hundredths of a nat at worst, much less on average.
    assert error.max() < 0.05 and error.mean() < 0.01, error
    assert (result.elbo < truth + 0.01).all()
    assert result.gap.mean() > 0.05  # a random encoder is far from the posterior
    torch.testing.assert_close(result.gap, result.log_px - result.elbo)


def test_streaming_equals_one_big_logsumexp():
    model = small_model(2)
    x = (torch.rand(5, 12, generator=torch.Generator().manual_seed(3)) < 0.5).double()
    mu, logvar = model.encode(x)
    mu, logvar = mu.detach(), logvar.detach()
    streamed = streamed_log_mean_weight(model, x, mu, logvar, 1000, 64,
                                        torch.Generator().manual_seed(4))
    whole = streamed_log_mean_weight(model, x, mu, logvar, 1000, 1000,
                                     torch.Generator().manual_seed(4))
    torch.testing.assert_close(streamed, whole)


def test_deterministic_and_leaves_the_model_as_it_was():
    model = small_model(5).train()
    x = (torch.rand(6, 12, generator=torch.Generator().manual_seed(6)) < 0.5).double()
    flags = [p.requires_grad for p in model.parameters()]
    a = iwsvi_log_likelihood(model, x, max_steps=60, k_eval=300, chunk=100, elbo_samples=100,
                             progress=False, warn=False)
    b = iwsvi_log_likelihood(model, x, max_steps=60, k_eval=300, chunk=100, elbo_samples=100,
                             progress=False, warn=False)
    for name in ("log_px", "elbo", "steps", "ess", "se", "hit_cap"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_amortized_bound_k1_is_the_mean_elbo():
    model = small_model(7)
    x = (torch.rand(4, 12, generator=torch.Generator().manual_seed(8)) < 0.5).double()
    many = amortized_bound(model, x, k=1, n_samples=20000, chunk=5000)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = torch.linspace(-10, 10, 20001, dtype=torch.float64)[:, None, None].expand(-1, 4, 1)
        log_w = (bernoulli_log_prob(model.decode_logits(z), x) + gaussian_log_prob(z)
                 - gaussian_log_prob(z, mu, logvar))
        q = torch.exp(gaussian_log_prob(z, mu, logvar))
        exact = (q * log_w).sum(0) * (20 / 20000)  # E_q[log w] by quadrature
    torch.testing.assert_close(many, exact, rtol=0, atol=0.05)


def test_bad_arguments():
    with pytest.raises(ValueError, match="k_svi, k_eval"):
        iwsvi_log_likelihood(small_model(), torch.zeros(2, 12, dtype=torch.float64), k_eval=0)


def test_streamed_ess_and_standard_error_match_the_direct_formulas():
    model = small_model(9)
    x = (torch.rand(5, 12, generator=torch.Generator().manual_seed(10)) < 0.5).double()
    with torch.no_grad():
        mu, logvar = model.encode(x)
    from fastair.evaluation import gaussian_log_weights, streamed_weight_stats
    stats = streamed_weight_stats(model, x, mu, logvar, 1000, 64, torch.Generator().manual_seed(4))
    with torch.no_grad():
        log_w = gaussian_log_weights(model, x, mu, logvar, 1000, torch.Generator().manual_seed(4))
    w = torch.exp(log_w - log_w.max(0).values)
    ess = w.sum(0) ** 2 / (w ** 2).sum(0)
    # the delta method: sd(w) / (sqrt(k) mean(w)), with the 1/k sample variance
    se = w.std(0, unbiased=False) / (math.sqrt(1000) * w.mean(0))
    torch.testing.assert_close(stats.ess, ess)
    torch.testing.assert_close(stats.se, se)
    torch.testing.assert_close(stats.log_mean, torch.logsumexp(log_w, 0) - math.log(1000))
    assert ((stats.ess >= 1) & (stats.ess <= 1000)).all()


def test_standard_error_is_calibrated_by_repeats():
    """The spread of independent estimates matches the mean delta-method standard error."""
    model = small_model(11)
    x = (torch.rand(3, 12, generator=torch.Generator().manual_seed(12)) < 0.5).double()
    with torch.no_grad():
        mu, logvar = model.encode(x)
    from fastair.evaluation import streamed_weight_stats
    runs = [streamed_weight_stats(model, x, mu, logvar, 400, 400,
                                  torch.Generator().manual_seed(s)) for s in range(200)]
    spread = torch.stack([r.log_mean for r in runs]).std(0)
    mean_se = torch.stack([r.se for r in runs]).mean(0)
    assert ((spread / mean_se - 1).abs() < 0.25).all(), (spread, mean_se)


def test_result_files_and_summary_carry_the_diagnostics():
    model = small_model(13)
    x = (torch.rand(6, 12, generator=torch.Generator().manual_seed(14)) < 0.5).double()
    r = iwsvi_log_likelihood(model, x, k_eval=300, elbo_samples=100, batch_size=4, progress=False)
    s = r.summary()
    for key in ("median_ess", "max_se", "n_hit_cap", "mean_steps", "n_unreliable", "se_of_mean"):
        assert key in s
    assert s["max_se"] == pytest.approx(r.se.max().item())
    lines = r.per_example_csv().splitlines()
    # the columns of fastair 0.1 first, in their order (readers index them), new ones after
    assert lines[0].startswith("index,log_px,elbo,gap,steps,hit_cap,ess,se,elbo_enc,elbo_fit,"
                               "approx_gap,amort_gap") and len(lines) == 7
    assert int(lines[1].split(",")[4]) == r.steps[0].item()
    with pytest.raises(ValueError, match="init"):
        iwsvi_log_likelihood(model, x, init="zeros")


def test_bf16_evaluation_keeps_q_in_float32_and_stays_close_to_fp32():
    torch.manual_seed(3)
    model = VAE(x_dim=30, z_dim=3, hidden=(16,), k=1)
    x = (torch.rand(20, 30, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    z = torch.randn(4, 20, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the decoder's matmul in bf16
        low = model.decoder.log_prob(z, x)
    high = model.decoder.log_prob(z, x)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, high, rtol=2e-2, atol=0.5)
    kw = dict(k_svi=4, max_steps=50, k_eval=200, chunk=50, progress=False, warn=False)
    a = iwsvi_log_likelihood(model, x, precision="fp32", **kw)
    b = iwsvi_log_likelihood(model, x, precision="bf16", **kw)
    assert b.log_px.dtype == a.log_px.dtype and torch.isfinite(b.log_px).all()
    assert (b.log_px - a.log_px).abs().mean() < 0.5
    with pytest.raises(ValueError, match="precision: expected one of"):
        iwsvi_log_likelihood(model, x, precision="int8", **kw)
