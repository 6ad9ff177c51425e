"""torch.autograd.gradcheck in float64 beyond the contract's cases: every op is gradchecked on
its spec's inputs under each backend in tests/ops/test_op_contract.py; here the bound's reduction
over an inner dimension (the spec reduces over dim 0)."""
import pytest
import torch

import fastair


@pytest.mark.parametrize("dim", [1, -1])
def test_gradcheck_of_the_bound_over_an_inner_dim(backend, dim):
    torch.manual_seed(0)
    v = (torch.randn(4, 6, 3, dtype=torch.float64) * 5).requires_grad_(True)
    with fastair.use_backend(backend):
        assert torch.autograd.gradcheck(lambda v: fastair.iwae_bound(v, dim=dim), (v,), eps=1e-6,
                                        atol=1e-6, rtol=1e-5)
