"""Pareto k-hat (fastair.evaluation.psis) against known tail shapes, scipy's GPD maximum
likelihood fit, a plain numpy Zhang-Stephens fit, and itself streamed over chunks."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from fastair.evaluation.psis import KHAT_WARN, StreamedKhat, pareto_khat, tail_size

SHAPES = (-0.3, 0.3, 0.7, 1.2)
B, K = 200, 10000
M = tail_size(K)  # 300


def gpd_log_weights(shape, k=K, b=B, seed=0):
    """``[k, b]`` logs of generalized Pareto draws of ``shape`` (scale 1) by inversion:
    ``w = ((1 - U)^(-shape) - 1) / shape``. The excesses of a GPD over any threshold are GPD
    with the same shape, so the top ``M`` of them are exactly GPD: no tail-approximation bias."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(k, b, dtype=torch.float64, generator=g)
    return torch.log(torch.expm1(-shape * torch.log(u)) / shape)


def tail_exceedances(log_w_column, tail):
    """numpy: the ``tail`` largest weights over the ``(tail+1)``-th, scaled by the largest."""
    top = np.sort(log_w_column)[-(tail + 1):]
    return np.exp(top[1:] - top[-1]) - np.exp(top[0] - top[-1])  # ascending


def zhang_stephens_reference(x):
    """Zhang & Stephens (2009) empirical-Bayes GPD shape of exceedances ``x``, written from the
    papers' formulas with a loop, then the PSIS paper's prior ``(n k + 5) / (n + 10)``."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    n = len(x)
    m = 30 + int(math.floor(math.sqrt(n)))
    x_star = x[int(math.floor(n / 4 + 0.5)) - 1]  # first quartile, 1-based rank floor(n/4+1/2)
    thetas = [1 / x[-1] + (1 - math.sqrt(m / (j - 0.5))) / (3 * x_star) for j in range(1, m + 1)]
    profile = []
    for theta in thetas:
        k = np.mean(np.log1p(-theta * x))
        profile.append(n * (math.log(-theta / k) - k - 1))
    profile = np.array(profile)
    weights = np.exp(profile - profile.max())
    weights /= weights.sum()
    theta_hat = float(np.dot(weights, thetas))
    k = float(np.mean(np.log1p(-theta_hat * x)))
    return (n * k + 10 * 0.5) / (n + 10)


def unshrink(khat, n):
    """Undo the PSIS prior adjustment ``(n k + 5) / (n + 10)``."""
    return (khat * (n + 10) - 5) / n


@pytest.mark.parametrize("shape", SHAPES)
def test_khat_recovers_known_tail_shape(shape):
    khat = pareto_khat(gpd_log_weights(shape))
    assert khat.shape == (B,) and khat.dtype == torch.float64 and torch.isfinite(khat).all()
    # The prior pulls k toward 0.5 by the known amount (n k + 5) / (n + 10) - k (<= 0.026 here);
    # past that the Zhang-Stephens estimate is nearly unbiased at n = 300 (ZS 2009, Table 1) and
    # asymptotically normal with sd (1 + k) / sqrt(n) (0.04..0.13), so the batch mean is known to
    # sd / sqrt(200) <= 0.009: allow 4 of those plus 0.01 for the small-sample bias.
    expected = (M * shape + 5) / (M + 10)
    sd = (1 + shape) / math.sqrt(M)
    assert abs(khat.mean().item() - expected) < 4 * sd / math.sqrt(B) + 0.01
    assert abs(khat.mean().item() - shape) < 0.1
    # The spread over examples is the estimator's own sd: the sample sd of 200 is known to ~5%
    # and the prior shrinks it by n / (n + 10); a loose [0.7, 1.4] band catches a constant or
    # noise-dominated estimate.
    assert 0.7 * sd < khat.std().item() < 1.4 * sd


@pytest.mark.parametrize("shape", SHAPES)
def test_khat_agrees_with_scipy_mle_and_numpy_zhang_stephens(shape):
    log_w = gpd_log_weights(shape, b=12, seed=1)
    khat = pareto_khat(log_w)
    for b in range(log_w.shape[1]):
        y = tail_exceedances(log_w[:, b].numpy(), M)
        # Same data, same algorithm, independent code: only float64 round-off may differ.
        assert khat[b].item() == pytest.approx(zhang_stephens_reference(y), abs=1e-10)
        # Maximum likelihood is a different estimator of the same shape: the ZS posterior mean
        # and the MLE (the profile likelihood's mode) differ by O(1/n); at n = 300 the largest
        # gap seen is ~0.026 (at shape -0.3, where the MLE leans negative), against a per-example
        # sd of 0.04..0.13. Compare before the prior, which the MLE does not have.
        c_mle, _, _ = scipy.stats.genpareto.fit(y, floc=0)
        assert unshrink(khat[b].item(), M) == pytest.approx(c_mle, abs=0.05)


def test_streamed_equals_one_shot_exactly():
    log_w = gpd_log_weights(0.7, k=5000, b=7, seed=2)
    log_w[::3, 1] = -math.inf  # zero weights in one example
    log_w[:4995, 2] = -math.inf  # 5 finite weights, 4 exceedances: NaN
    log_w[17, 3] = math.nan
    sizes = [1, 3, 250, 97, 2000, 1, 1648, 1000]
    assert sum(sizes) == 5000
    for tail in (None, 50):
        streamed = StreamedKhat(5000, tail=tail)
        for chunk in torch.split(log_w, sizes):
            streamed.update(chunk.float() if tail == 50 else chunk)
        assert streamed.count == 5000
        kept = streamed.tail + 1
        assert streamed.top.shape == (kept, 7)  # memory O(M B)
        assert streamed.tail == (tail_size(5000) if tail is None else 50)
        ref = log_w.float() if tail == 50 else log_w
        expected = pareto_khat(ref, tail=streamed.tail)
        torch.testing.assert_close(streamed.khat(), expected, rtol=0, atol=0, equal_nan=True)
        got = streamed.khat()
        assert torch.isfinite(got[[0, 1, 4, 5, 6]]).all() and got[[2, 3]].isnan().all()


def test_tail_size():
    assert tail_size(5000) == 213  # ceil(3 sqrt(5000)) = ceil(212.13); 5000 / 5 = 1000
    assert tail_size(100) == 20  # 100 / 5 = 20 < 30
    assert tail_size(64) == 12  # 64 // 5 = 12 < 24
    assert tail_size(10000) == 300
    assert [tail_size(k) for k in (1, 2, 4, 5, 10)] == [1, 1, 1, 1, 2]
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="k"):
            tail_size(bad)


def test_degenerate_inputs_give_nan_per_example():
    log_w = gpd_log_weights(0.5, k=1000, b=6, seed=3)
    log_w[:, 0] = 1.5  # all weights equal
    log_w[::2, 1] = -math.inf  # half of the weights zero: still a fine fit
    log_w[4:, 2] = -math.inf  # 4 finite weights: 3 exceedances < 5
    log_w[9, 3] = math.nan
    log_w[9, 4] = math.inf
    log_w[:950, 5] = -math.inf  # 50 finite, < M + 1 = 96: the fit uses the 49 over the least
    khat = pareto_khat(log_w)
    assert khat[[0, 2, 3, 4]].isnan().all()
    assert torch.isfinite(khat[[1, 5]]).all()
    # zero weights do not move the tail: the same fit as on the finite weights alone (to
    # round-off: torch may order a reduction differently for another batch size)
    finite = log_w[1::2, 1]
    assert khat[1].item() == pytest.approx(pareto_khat(finite, tail=tail_size(1000)).item(),
                                           abs=1e-12)
    assert khat[5].item() == pytest.approx(zhang_stephens_reference(
        tail_exceedances(log_w[950:, 5].numpy(), 49)), abs=1e-10)
    assert pareto_khat(torch.zeros(3)).isnan()  # k = 3: no tail to fit


def test_bad_arguments():
    with pytest.raises(ValueError, match="k_total"):
        StreamedKhat(0)
    with pytest.raises(ValueError, match="tail"):
        StreamedKhat(100, tail=0)
    with pytest.raises(ValueError, match="tail"):
        pareto_khat(torch.zeros(100, 2), tail=0)
    streamed = StreamedKhat(100)
    with pytest.raises(RuntimeError):
        streamed.khat()
    streamed.update(torch.zeros(10, 4))
    with pytest.raises(ValueError, match="log_w_chunk"):
        streamed.update(torch.zeros(10, 3))
    with pytest.raises(ValueError, match="log_w_chunk"):
        streamed.update(torch.zeros(10))


def test_shift_invariance_and_batch_shapes():
    log_w = gpd_log_weights(0.6, k=2000, b=12, seed=4)
    khat = pareto_khat(log_w)
    for c in (-1000.0, 12.3, 700.0):  # w -> e^c w; 700 would overflow exp without the max shift
        torch.testing.assert_close(pareto_khat(log_w + c), khat, rtol=0, atol=1e-9)
    # any trailing batch shape, any sample dim
    cube = log_w.reshape(2000, 3, 4)
    assert pareto_khat(cube).shape == (3, 4)
    torch.testing.assert_close(pareto_khat(cube).reshape(12), khat, rtol=0, atol=0)
    torch.testing.assert_close(pareto_khat(cube.permute(1, 0, 2), dim=1).reshape(12), khat,
                               rtol=0, atol=0)
    assert pareto_khat(log_w[:, 0]).shape == ()
    assert pareto_khat(log_w.float()).dtype == torch.float64


def test_warning_threshold():
    assert KHAT_WARN == 0.7
    # heavy tails are flagged, light ones not
    assert (pareto_khat(gpd_log_weights(1.2, b=20)) > KHAT_WARN).float().mean() > 0.9
    assert (pareto_khat(gpd_log_weights(0.3, b=20)) < KHAT_WARN).all()
