"""The fused k-sample bound against the float64 reference: values and all four gradients."""
import itertools

import pytest
import torch
from compare import assert_matches_reference
from helpers import make_inputs

import fastair

KS, BS, DS = (1, 3, 64, 5000), (1, 7, 100), (1, 17, 784)
# The full grid minus the cases too large for a CPU test run (the Triton interpreter and the
# float64 autograd reference hold several [k, B, D] tensors).
# Through the interpreter the long-k sweep is covered by k = 5000 at B x D = 7 x 17 and 100 x 1,
# and D = 784 by k = 64.
LIMIT = {"native": 6_000_000, "triton": 1_000_000}
GRID = [s for s in itertools.product(KS, BS, DS) if s[0] * s[1] * s[2] <= LIMIT["native"]]


@pytest.mark.parametrize("k,b,d", GRID)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference_over_shapes(backend, k, b, d, dtype):
    if k * b * d > LIMIT[backend]:
        pytest.skip(f"{k}x{b}x{d} logits: too slow for the {backend} backend on a CPU test run")
    inputs = make_inputs(k, b, d, dtype=dtype, seed=k + b + d)
    assert_matches_reference(backend, fastair.iwae_bernoulli_gaussian, inputs,
                             [False, True, True, True, True])


@pytest.mark.parametrize("logits_dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_logits(backend, logits_dtype):
    inputs = make_inputs(8, 7, 784, logits_dtype=logits_dtype)
    out, grads = assert_matches_reference(backend, fastair.iwae_bernoulli_gaussian, inputs,
                                          [False, True, True, True, True],
                                          tol_dtype=logits_dtype)
    assert out.dtype == torch.float32 and grads[0].dtype == logits_dtype


def test_k1_is_the_elbo(backend):
    x, logits, z, mu, logvar = make_inputs(1, 7, 17, dtype=torch.float64)
    with fastair.use_backend(backend):
        bound = fastair.iwae_bernoulli_gaussian(x, logits, z, mu, logvar)
        elbo = (fastair.bernoulli_log_prob(logits, x) + fastair.gaussian_log_prob(z)
                - fastair.gaussian_log_prob(z, mu, logvar))[0]
    torch.testing.assert_close(bound, elbo)


def test_weight_gradient_identity(backend):
    """dL_k/dlog w is the softmax of the log weights: checked through the logits' gradient."""
    x, logits, z, mu, logvar = make_inputs(16, 3, 9, dtype=torch.float64)
    logits.requires_grad_(True)
    with fastair.use_backend(backend):
        fastair.iwae_bernoulli_gaussian(x, logits, z, mu, logvar).sum().backward()
    log_w = (fastair.bernoulli_log_prob(logits, x) + fastair.gaussian_log_prob(z)
             - fastair.gaussian_log_prob(z, mu, logvar)).detach()
    weights = torch.softmax(log_w, dim=0)
    expected = weights[..., None] * (x - torch.sigmoid(logits.detach()))
    torch.testing.assert_close(logits.grad, expected)


def test_gradient_reaches_encoder_through_reparameterized_z(backend):
    x, logits, _, mu, logvar = make_inputs(4, 5, 11, dtype=torch.float64)
    eps = torch.randn(4, 5, 5, dtype=torch.float64)

    def through_z(mu, logvar):
        return fastair.iwae_bernoulli_gaussian(x, logits, mu + torch.exp(0.5 * logvar) * eps,
                                               mu, logvar)

    assert_matches_reference(backend, through_z, (mu, logvar), [True, True])


def test_non_contiguous_inputs(backend):
    x, logits, z, mu, logvar = make_inputs(5, 6, 13)
    logits_t = logits.transpose(0, 1).contiguous().transpose(0, 1)
    assert not logits_t.is_contiguous()
    assert_matches_reference(backend, fastair.iwae_bernoulli_gaussian,
                             (x, logits_t, z, mu.t().contiguous().t(), logvar),
                             [False, True, True, True, True])


def test_return_log_w_gives_the_log_weights_of_the_same_pass(backend):
    g = torch.Generator().manual_seed(9)
    x = (torch.rand(5, 11, generator=g) < 0.5).double()
    leaves = [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_(True)
              for s in [(4, 5, 11), (4, 5, 3), (5, 3), (5, 3)]]
    with fastair.use_backend(backend):
        bound, log_w = fastair.iwae_bernoulli_gaussian(x, *leaves, return_log_w=True)
        alone = fastair.iwae_bernoulli_gaussian(x, *leaves)
    from fastair.backends import reference
    torch.testing.assert_close(log_w, reference.log_weights(x, *leaves))
    torch.testing.assert_close(bound, alone)
    assert log_w.shape == (4, 5) and bound.shape == (5,)
    grads = torch.autograd.grad(log_w.sum() + bound.sum(), leaves)
    want = torch.autograd.grad((reference.log_weights(x, *leaves).sum()
                                + reference.iwae_bernoulli_gaussian(x, *leaves).sum()), leaves)
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b)
