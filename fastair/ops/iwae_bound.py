"""``fastair::iwae_bound``: v [n, R] -> (bound [R], lse [R]), reduced over the first dim.

``bound = lse - log n`` is the k-sample bound of the log weights ``v``; ``lse``, their
log-sum-exp, is returned too because the backward reads it (the gradient is the softmax over the
first dim, the normalized weights).
"""
import torch
from torch import Tensor

from fastair.backends import module

__all__ = ["iwae_bound", "iwae_bound_backward"]


@torch.library.custom_op("fastair::iwae_bound", mutates_args=())
def iwae_bound(v: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    """``(bound [R], lse [R])``: ``lse[r] = log sum_i exp(v[i, r])``, ``bound = lse - log n``."""
    return module(backend).iwae_bound_fwd(v)


@iwae_bound.register_fake
def _(v, backend):
    return v.new_empty(v.shape[1:]), v.new_empty(v.shape[1:])


@torch.library.custom_op("fastair::iwae_bound_backward", mutates_args=())
def iwae_bound_backward(grad: Tensor, v: Tensor, lse: Tensor, backend: str) -> Tensor:
    """``dv[i, r] = grad[r] * exp(v[i, r] - lse[r])`` (0 where ``lse[r] == -inf``)."""
    return module(backend).iwae_bound_bwd(grad, v, lse)


@iwae_bound_backward.register_fake
def _(grad, v, lse, backend):
    return torch.empty_like(v)


def _setup(ctx, inputs, output):
    v, backend = inputs
    ctx.save_for_backward(v, output[1])
    ctx.backend = backend
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zero fill


def _backward(ctx, grad_bound, grad_lse):
    v, lse = ctx.saved_tensors
    grads = [g for g in (grad_bound, grad_lse) if g is not None]
    if not grads:  # neither output reaches the loss
        return None, None
    grad = grads[0] if len(grads) == 1 else grads[0] + grads[1]  # d bound/dv = d lse/dv
    return iwae_bound_backward(grad.contiguous(), v, lse, ctx.backend), None


iwae_bound.register_autograd(_backward, setup_context=_setup)
