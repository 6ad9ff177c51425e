"""IW-SVI's reliability diagnostics and cost controls: the streamed PSIS k-hat of the final
weights, the adaptive stop at a target standard error, and the precision of the fit."""
import math

import pytest
import torch

from fastair.evaluation import iwsvi_log_likelihood
from fastair.evaluation.iwsvi import resolve_fit_precision, resolve_precision
from fastair.evaluation.psis import KHAT_WARN, pareto_khat
from fastair.evaluation.result import IWSVIResult
from fastair.evaluation.weights import gaussian_log_weights, streamed_weight_stats
from fastair.models import VAE
from fastair.precision import native_bf16


def _flat_model(z_dim=2, x_dim=6):
    """A VAE whose decoder ignores z: the posterior is the prior N(0, I) exactly."""
    torch.manual_seed(0)
    model = VAE(x_dim=x_dim, z_dim=z_dim, hidden=(4,))
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.zero_()
    return model.eval().requires_grad_(False)


def _x(n=40, x_dim=6):
    return (torch.rand(n, x_dim, generator=torch.Generator().manual_seed(1)) < 0.5).float()


def test_streamed_khat_equals_the_one_shot_fit_on_the_same_draws():
    model, x = _flat_model(), _x(8)
    mu, logvar = torch.zeros(8, 2), torch.full((8, 2), math.log(0.5 ** 2))
    stats = streamed_weight_stats(model, x, mu, logvar, 700, 100,
                                  torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    every = torch.cat([gaussian_log_weights(model, x, mu, logvar, 100, g).double()
                       for _ in range(7)])
    assert torch.allclose(stats.khat, pareto_khat(every), atol=1e-10, equal_nan=True)
    assert torch.allclose(stats.log_mean, torch.logsumexp(every, 0) - math.log(700), atol=1e-10)
    assert (stats.n == 700).all()


@pytest.mark.parametrize("scale, low, high", [(0.3, KHAT_WARN, 1.2), (1.3, -2.0, 0.3)])
def test_khat_against_the_closed_form_tail(scale, low, high):
    """Posterior N(0, I), proposal N(0, s^2 I): ``w = exp(a |z|^2) (const)`` with ``a = (1/s^2 -
    1) / 2``, whose tail is Pareto of shape ``1 - s^2`` for ``s < 1`` (0.91 at s = 0.3: flagged)
    and bounded for ``s > 1`` (a negative shape: reliable)."""
    model, x = _flat_model(), _x(40)
    mu, logvar = torch.zeros(40, 2), torch.full((40, 2), math.log(scale ** 2))
    stats = streamed_weight_stats(model, x, mu, logvar, 5000, 500,
                                  torch.Generator().manual_seed(4))
    assert low < stats.khat.median() < high


def test_se_target_stops_examples_at_their_target():
    model, x = _flat_model(), _x(30)
    mu = torch.zeros(30, 2)
    # half the examples get a good proposal (SE falls fast), half a narrow one (heavy tail)
    logvar = torch.cat([torch.full((15, 2), math.log(1.1 ** 2)),
                        torch.full((15, 2), math.log(0.35 ** 2))])
    stats = streamed_weight_stats(model, x, mu, logvar, 8000, 200,
                                  torch.Generator().manual_seed(5), se_target=0.02,
                                  min_samples=1000, check=5)
    assert stats.n.min() >= 1000 and stats.n.max() <= 8000
    stopped = stats.n < 8000
    assert stopped[:15].all() and not stopped[15:].any()
    assert (stats.se[stopped] <= 0.02).all()
    full = streamed_weight_stats(model, x, mu, logvar, 8000, 200, torch.Generator().manual_seed(5))
    assert (full.n == 8000).all()
    with pytest.raises(ValueError, match="se_target"):
        streamed_weight_stats(model, x, mu, logvar, 100, 10, None, se_target=0)


def test_iwsvi_reports_khat_n_eval_and_flags_by_khat():
    model, x = _flat_model(), _x(6)
    r = iwsvi_log_likelihood(model, x, k_eval=600, max_steps=25, elbo_samples=50,
                             progress=False, warn=False, se_target=0.5)
    assert r.khat.shape == (6,) and r.n_eval.dtype == torch.int64
    header = r.per_example_csv().splitlines()[0].split(",")
    assert header[-2:] == ["khat", "n_eval"]
    assert "median_khat" in r.summary() and "n_khat_over" in r.summary()
    fake = IWSVIResult(**{f: getattr(r, f) for f in (
        "log_px", "elbo", "gap", "steps", "hit_cap", "elbo_enc", "elbo_fit", "approx_gap",
        "amort_gap", "n_eval")}, ess=torch.full((6,), 500.0), se=torch.full((6,), 0.01),
        khat=torch.tensor([0.1, 0.69, 0.71, 1.5, float("nan"), -0.2], dtype=torch.float64),
        max_steps=25, k_eval=600)
    assert fake.unreliable().tolist() == [False, False, True, True, True, False]
    assert fake.flagged_by()["khat"].sum() == 3 and not fake.flagged_by()["ess"].any()


def test_fit_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_fit_precision("auto", "fp32", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_fit_precision("auto", "bf16", cpu) == "bf16"
    assert resolve_fit_precision("fp32", "bf16", cpu) == "fp32"
    assert resolve_fit_precision("auto", "auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("half", cpu)
    with pytest.raises(ValueError, match="fit_precision"):
        resolve_fit_precision("fp8", "fp32", cpu)
    model, x = _flat_model(), _x(4)
    with pytest.raises(ValueError, match="fit_precision"):
        iwsvi_log_likelihood(model, x, fit_precision="half", progress=False)
    with pytest.raises(ValueError, match="se_target"):
        iwsvi_log_likelihood(model, x, se_target=-1.0, progress=False)


def test_table_shows_each_column_and_the_flag_count():
    model, x = _flat_model(), _x(6)
    r = iwsvi_log_likelihood(model, x, k_eval=300, max_steps=25, elbo_samples=20,
                             progress=False, warn=False)
    text = r.table(rows=3).splitlines()
    assert text[0].split()[:7] == ["example", "log_px", "se", "ess", "khat", "approx_gap",
                                   "amort_gap"]
    assert len(text) == 2 + 3 + 1 and text[-1].endswith(f"{int(r.unreliable().sum())} of 6")
    assert float(text[2].split()[1]) == pytest.approx(r.log_px[0].item(), abs=1e-3)
