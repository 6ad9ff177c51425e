"""CUDA tensors: the Triton kernels (auto backend) against the float64 reference."""
import pytest
import torch
from compare import assert_matches_reference
from helpers import make_inputs, objective

import fastair

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("k,b,d", [(1, 1, 1), (3, 7, 17), (64, 100, 784), (5000, 7, 784),
                                   (64, 1024, 784)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend_name", ["auto", "triton"])
def test_fused_bound_on_cuda(k, b, d, dtype, backend_name):
    inputs = tuple(t.cuda() for t in make_inputs(k, b, d, dtype=dtype))
    assert_matches_reference(backend_name, fastair.iwae_bernoulli_gaussian, inputs,
                             [False, True, True, True, True])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_on_cuda(dtype):
    inputs = tuple(t.cuda() for t in make_inputs(64, 100, 784, logits_dtype=dtype))
    assert_matches_reference("auto", fastair.iwae_bernoulli_gaussian, inputs,
                             [False, True, True, True, True], tol_dtype=dtype)


def test_small_ops_on_cuda():
    logits = torch.randn(8, 7, 784, device="cuda") * 3
    x = (torch.rand(7, 784, device="cuda") < 0.5).float()
    assert_matches_reference("auto", fastair.bernoulli_log_prob, (logits, x), [True, False])
    z, mu, logvar = (torch.randn(8, 7, 50, device="cuda"), torch.randn(7, 50, device="cuda"),
                     torch.randn(7, 50, device="cuda"))
    assert_matches_reference("auto", fastair.gaussian_log_prob, (z, mu, logvar), [True] * 3)
    log_w = torch.randn(5000, 100, device="cuda") * 30
    assert_matches_reference("auto", fastair.iwae_bound, (log_w,), [True])


def test_compile_on_cuda():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 17, generator=g) < 0.5).float().cuda()
    leaves = [torch.randn(s, generator=g).cuda().requires_grad_(True)
              for s in [(4, 5, 17), (4, 5, 3), (5, 3), (5, 3)]]
    eager = objective(x, *leaves)
    compiled = torch.compile(objective, fullgraph=True)(x, *leaves)
    torch.testing.assert_close(compiled, eager)
