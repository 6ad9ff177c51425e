"""Extreme inputs give finite results equal to the float64 reference."""
import math

import pytest
import torch
from compare import assert_as_accurate_as_reference, assert_matches_reference
from helpers import make_inputs

import fastair


@pytest.mark.parametrize("magnitude", [80.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_with_binary_data(backend, magnitude, dtype):
    g = torch.Generator().manual_seed(int(magnitude))
    sign = torch.where(torch.rand(4, 5, 33, generator=g) < 0.5, -1.0, 1.0)
    logits = (sign * magnitude).to(dtype)
    x = (torch.rand(5, 33, generator=g) < 0.5).to(dtype)
    x[0] = 0.0
    x[1] = 1.0
    out, (grad,) = assert_matches_reference(backend, fastair.bernoulli_log_prob, (logits, x),
                                            [True, False])
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("magnitude", [80.0, 1e4])
def test_extreme_logits_in_the_fused_bound(backend, magnitude):
    x, logits, z, mu, logvar = make_inputs(6, 5, 40, dtype=torch.float64)
    g = torch.Generator().manual_seed(int(magnitude))  # not the global RNG: order-independent
    logits = torch.sign(torch.randn(logits.shape, dtype=torch.float64, generator=g)) * magnitude
    x[0] = 0.0
    x[1] = 1.0
    diff = [False, True, True, True, True]
    inputs = (x, logits, z, mu, logvar)
    out, grads = assert_matches_reference(backend, fastair.iwae_bernoulli_gaussian, inputs, diff)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    # In float32 the log weights (sums of +-1e4 terms) carry rounding of about |log w| * 6e-8,
    # which moves the normalized weights; ask for the accuracy of the float32 reference.
    inputs32 = tuple(t.float() for t in inputs)
    assert_as_accurate_as_reference(backend, fastair.iwae_bernoulli_gaussian, inputs32, diff)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_weights_spread_over_1e4_nats(backend, dtype):
    g = torch.Generator().manual_seed(0)
    log_w = (torch.linspace(-1e4, 0, 64, dtype=torch.float64)[:, None]
             + torch.randn(64, 9, generator=g, dtype=torch.float64)).to(dtype)
    log_w[:, 1] -= 5e3  # a column far below zero
    log_w[:, 2] += 5e3  # and one far above
    out, (grad,) = assert_matches_reference(backend, fastair.iwae_bound, (log_w,), [True])
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()


def test_minus_infinite_log_weight(backend):
    log_w = torch.randn(8, 5, dtype=torch.float64)
    log_w[3, 1] = -math.inf
    log_w[:7, 4] = -math.inf  # a column with a single finite weight
    out, (grad,) = assert_matches_reference(backend, fastair.iwae_bound, (log_w,), [True])
    assert grad[3, 1] == 0 and (grad[:7, 4] == 0).all() and grad[7, 4] > 0
    assert torch.isfinite(out).all()


def test_all_minus_infinite_column_gives_zero_gradient(backend):
    """A column without mass: bound -inf and gradient 0 (the reference's too: its logsumexp
    treats such a column as torch's own does not; tests/op_specs.py EDGES holds all three)."""
    log_w = torch.randn(8, 3, dtype=torch.float64)
    log_w[:, 1] = -math.inf
    log_w.requires_grad_(True)
    with fastair.use_backend(backend):
        out = fastair.iwae_bound(log_w)
    out.sum().backward()
    assert out[1] == -math.inf and torch.isfinite(out[[0, 2]]).all()
    assert (log_w.grad[:, 1] == 0).all()
    torch.testing.assert_close(log_w.grad[:, 0], torch.softmax(log_w.detach()[:, 0], 0))


def test_extreme_gaussian_parameters(backend):
    z = torch.randn(5, 4, 7, dtype=torch.float64) * 50
    mu = torch.randn(4, 7, dtype=torch.float64)
    logvar = torch.tensor([-20.0, 20.0, 0.0, -5.0], dtype=torch.float64)[:, None].expand(4, 7)
    for dtype in (torch.float32, torch.float64):
        inputs = (z.to(dtype), mu.to(dtype), logvar.to(dtype).contiguous())
        out, grads = assert_matches_reference(backend, fastair.gaussian_log_prob, inputs,
                                              [True, True, True])
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("k_chunk", [None, 2])
@pytest.mark.parametrize("estimator", ["iwae", "stl", "dreg"])
@pytest.mark.parametrize("backend", ["reference", "native", "triton"])
def test_the_loss_of_a_bound_that_overflows_downwards_is_plus_inf(backend, estimator, k_chunk):
    """float32 ``logvar = 100``: ``z`` is about 5e21, ``log p(z)`` about -2e43, below the float32
    range, so the bound is -inf and the loss +inf (never -inf, the wrong sign, or NaN), with
    gradient 0 for that example and finite gradients everywhere (DReG's weights included)."""
    g = torch.Generator().manual_seed(0)
    decoder = torch.nn.Linear(4, 6)
    x = (torch.rand(3, 6, generator=g) < 0.5).float()
    mu = torch.randn(3, 4, generator=g).requires_grad_(True)
    logvar = torch.zeros(3, 4)
    logvar[0] = 100.0
    logvar.requires_grad_(True)
    with fastair.use_backend(backend):
        loss = fastair.nn.IWAELoss(k=4, estimator=estimator, reduction="none", k_chunk=k_chunk)(
            x, mu, logvar, decoder, generator=torch.Generator().manual_seed(1))
        loss.sum().backward()
        mean = fastair.nn.iwae_loss(x, mu, logvar, decoder, k=4, estimator=estimator)
    assert loss[0].item() == math.inf, loss
    assert torch.isfinite(loss[1:]).all() and mean.item() == math.inf
    for name, t in (("mu", mu.grad), ("logvar", logvar.grad), ("decoder", decoder.weight.grad)):
        assert torch.isfinite(t).all(), f"gradient of {name}: {t}"
    assert (mu.grad[0] == 0).all() and (logvar.grad[0] == 0).all()
