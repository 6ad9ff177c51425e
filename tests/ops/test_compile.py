"""torch.compile(fullgraph=True) of a function using the ops equals eager, values and grads."""
import pytest
import torch
from helpers import objective

import fastair


@pytest.mark.slow
def test_compile_fullgraph_equals_eager(backend):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 17, generator=g) < 0.5).float()
    leaves = [torch.randn(s, generator=g).requires_grad_(True)
              for s in [(4, 5, 17), (4, 5, 3), (5, 3), (5, 3)]]
    with fastair.use_backend(backend):
        eager = objective(x, *leaves)
        eager_grads = torch.autograd.grad(eager, leaves)
        compiled = torch.compile(objective, fullgraph=True)(x, *leaves)
        compiled_grads = torch.autograd.grad(compiled, leaves)
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b)
