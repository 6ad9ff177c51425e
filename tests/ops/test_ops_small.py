"""bernoulli_log_prob, gaussian_log_prob and iwae_bound against the float64 reference."""
import math

import pytest
import torch
from compare import assert_matches_reference

import fastair

SHAPES = [(1,), (17,), (7, 17), (3, 7, 784), (64, 100, 17), (2, 3, 4, 5)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_log_prob(backend, shape, dtype):
    g = torch.Generator().manual_seed(len(shape))
    logits = torch.randn(shape, generator=g, dtype=dtype) * 4
    x = (torch.rand(shape[-2:] if len(shape) > 1 else shape, generator=g) < 0.5).to(dtype)
    assert_matches_reference(backend, fastair.bernoulli_log_prob, (logits, x), [True, False])


@pytest.mark.parametrize("x_shape", [(4, 1, 5), (1, 5), (5,), (4, 3, 5), (1, 1, 1)])
def test_bernoulli_broadcasting(backend, x_shape):
    logits = torch.randn(4, 3, 5, dtype=torch.float64)
    x = (torch.rand(x_shape) < 0.5).double()
    assert_matches_reference(backend, fastair.bernoulli_log_prob, (logits, x), [True, False])


def test_bernoulli_bool_data(backend):
    logits = torch.randn(3, 4, 6, dtype=torch.float64)
    x = torch.rand(4, 6) < 0.5
    assert_matches_reference(backend, fastair.bernoulli_log_prob, (logits, x), [True, False])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_bernoulli_reduced_precision(backend, dtype):
    logits = (torch.randn(8, 7, 784) * 3).to(dtype)
    x = (torch.rand(7, 784) < 0.5).float()
    out, (grad,) = assert_matches_reference(backend, fastair.bernoulli_log_prob, (logits, x),
                                            [True, False], tol_dtype=dtype)
    assert out.dtype == torch.float32 and grad.dtype == dtype


@pytest.mark.parametrize("z_shape,p_shape", [
    ((1,), (1,)), ((7, 5), (7, 5)), ((64, 100, 50), (100, 50)), ((3, 7, 5), (5,)),
    ((3, 7, 5), (3, 1, 5)), ((2, 3, 4, 5), (4, 5)), ((6, 50), (1, 50))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_log_prob(backend, z_shape, p_shape, dtype):
    g = torch.Generator().manual_seed(sum(z_shape))
    z = torch.randn(z_shape, generator=g, dtype=dtype)
    mu = torch.randn(p_shape, generator=g, dtype=dtype)
    logvar = 0.5 * torch.randn(p_shape, generator=g, dtype=dtype)
    assert_matches_reference(backend, fastair.gaussian_log_prob, (z, mu, logvar),
                             [True, True, True])


@pytest.mark.parametrize("which", ["none", "mu", "logvar"])
def test_gaussian_missing_parameters(backend, which):
    z = torch.randn(4, 3, 6, dtype=torch.float64)
    p = torch.randn(3, 6, dtype=torch.float64)
    if which == "none":
        fn, inputs, diff = (lambda z: fastair.gaussian_log_prob(z)), (z,), [True]
    elif which == "mu":
        fn, inputs, diff = (lambda z, m: fastair.gaussian_log_prob(z, mu=m)), (z, p), [True] * 2
    else:
        fn, inputs, diff = (lambda z, v: fastair.gaussian_log_prob(z, logvar=v)), (z, p), [True] * 2
    assert_matches_reference(backend, fn, inputs, diff)


@pytest.mark.parametrize("shape,dim", [((1,), 0), ((5000, 100), 0), ((64, 7), 0), ((7, 64), 1),
                                       ((3, 4, 5), -1), ((3, 4, 5), 1), ((1, 1), 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iwae_bound(backend, shape, dim, dtype):
    log_w = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(3)) * 20
    assert_matches_reference(backend, lambda v: fastair.iwae_bound(v, dim=dim), (log_w,), [True])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_iwae_bound_reduced_precision(backend, dtype):
    log_w = (torch.randn(64, 9) * 5).to(dtype)
    out, (grad,) = assert_matches_reference(backend, fastair.iwae_bound, (log_w,), [True],
                                            tol_dtype=dtype)
    assert out.dtype == torch.float32 and grad.dtype == dtype


def test_iwae_bound_default_dim_and_value(backend):
    log_w = torch.tensor([[0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    with fastair.use_backend(backend):
        out = fastair.iwae_bound(log_w)
    expected = torch.tensor([0.0, math.log((math.e + 1 / math.e) / 2)],
                            dtype=torch.float64)
    torch.testing.assert_close(out, expected)
