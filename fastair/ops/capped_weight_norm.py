"""``fastair::capped_weight_norm``: v [O, I], u [O], float H -> (w [O, I], norm [O]).

``w_i = v_i / ||v_i|| * min(||v_i||, H sigmoid(u_i))``; the row norms are returned for the
backward, which reads ``v`` and ``dw`` once per row.
"""
import torch
from torch import Tensor

from fastair.backends import module

__all__ = ["capped_weight_norm", "capped_weight_norm_backward"]


@torch.library.custom_op("fastair::capped_weight_norm", mutates_args=())
def capped_weight_norm(v: Tensor, u: Tensor, H: float, backend: str) -> tuple[Tensor, Tensor]:
    """``(w [O, I] in v's dtype, norm [O] in u's dtype)``."""
    return module(backend).capped_weight_norm_fwd(v, u, H)


@capped_weight_norm.register_fake
def _(v, u, H, backend):
    return torch.empty_like(v), u.new_empty(u.shape)


@torch.library.custom_op("fastair::capped_weight_norm_backward", mutates_args=())
def capped_weight_norm_backward(grad_w: Tensor, v: Tensor, u: Tensor, norm: Tensor, H: float,
                                backend: str) -> tuple[Tensor, Tensor]:
    """``(dv [O, I], du [O])`` for the upstream gradient ``grad_w`` [O, I]."""
    return module(backend).capped_weight_norm_bwd(grad_w, v, u, norm, H)


@capped_weight_norm_backward.register_fake
def _(grad_w, v, u, norm, H, backend):
    return torch.empty_like(v), torch.empty_like(u)


def _setup(ctx, inputs, output):
    v, u, H, backend = inputs
    ctx.save_for_backward(v, u, output[1])
    ctx.H, ctx.backend = H, backend


def _backward(ctx, grad_w, grad_norm):
    v, u, norm = ctx.saved_tensors
    if grad_w is None:
        return None, None, None, None
    dv, du = capped_weight_norm_backward(grad_w.contiguous(), v, u, norm, ctx.H, ctx.backend)
    return dv, du, None, None


capped_weight_norm.register_autograd(_backward, setup_context=_setup)
