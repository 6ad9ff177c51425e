"""``fastair::logsumexp``: v [n, R] -> [R], reduced over the first dim, softmax gradient."""
import torch
from torch import Tensor

from fastair.backends import module

__all__ = ["logsumexp", "logsumexp_backward"]


@torch.library.custom_op("fastair::logsumexp", mutates_args=())
def logsumexp(v: Tensor, backend: str) -> Tensor:
    """``lse[r] = log sum_i exp(v[i, r])``."""
    return module(backend).logsumexp_fwd(v)


@logsumexp.register_fake
def _(v, backend):
    return v.new_empty(v.shape[1:])


@torch.library.custom_op("fastair::logsumexp_backward", mutates_args=())
def logsumexp_backward(grad: Tensor, v: Tensor, lse: Tensor, backend: str) -> Tensor:
    """``dv[i, r] = grad[r] * exp(v[i, r] - lse[r])`` (0 where ``lse[r] == -inf``)."""
    return module(backend).logsumexp_bwd(grad, v, lse)


@logsumexp_backward.register_fake
def _(grad, v, lse, backend):
    return torch.empty_like(v)


def _setup(ctx, inputs, output):
    v, backend = inputs
    ctx.save_for_backward(v, output)
    ctx.backend = backend


def _backward(ctx, grad):
    v, lse = ctx.saved_tensors
    return logsumexp_backward(grad.contiguous(), v, lse, ctx.backend), None


logsumexp.register_autograd(_backward, setup_context=_setup)
