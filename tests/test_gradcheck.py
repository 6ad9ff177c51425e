"""torch.autograd.gradcheck of every op in float64, under each fused backend."""
import pytest
import torch

import fastair

D64 = dict(dtype=torch.float64)


def _leaf(*shape, scale=1.0):
    return (torch.randn(*shape, **D64) * scale).requires_grad_(True)


CASES = {
    "bernoulli": lambda: (lambda l: fastair.bernoulli_log_prob(l, X),
                          (_leaf(3, 4, 7, scale=3),)),
    "gaussian": lambda: (fastair.gaussian_log_prob, (_leaf(3, 4, 5), _leaf(4, 5), _leaf(4, 5))),
    "iwae_bound": lambda: (lambda v: fastair.iwae_bound(v, dim=1), (_leaf(4, 6, 3, scale=5),)),
    "iwae_bernoulli_gaussian": lambda: (
        lambda l, z, m, v: fastair.iwae_bernoulli_gaussian(X, l, z, m, v),
        (_leaf(3, 4, 7, scale=3), _leaf(3, 4, 5), _leaf(4, 5), _leaf(4, 5, scale=0.5))),
}
X = (torch.rand(4, 7, generator=torch.Generator().manual_seed(1)) < 0.5).double()


@pytest.mark.parametrize("op", sorted(CASES))
def test_gradcheck(backend, op):
    torch.manual_seed(0)
    fn, inputs = CASES[op]()
    with fastair.use_backend(backend):
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
