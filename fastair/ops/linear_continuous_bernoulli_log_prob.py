"""``fastair::linear_continuous_bernoulli_log_prob``: h [R, H], weight [D, H], bias [D] or None,
x [N, D] -> [R], the decoder's output layer fused with the continuous Bernoulli term (the [R, D]
logits are never stored; the backward recomputes them tile by tile)."""
from typing import Optional

import torch
from torch import Tensor

from fastair.backends import module

__all__ = ["linear_continuous_bernoulli_log_prob", "linear_continuous_bernoulli_log_prob_backward"]


@torch.library.custom_op("fastair::linear_continuous_bernoulli_log_prob", mutates_args=())
def linear_continuous_bernoulli_log_prob(h: Tensor, weight: Tensor, bias: Optional[Tensor],
                                         x: Tensor, backend: str) -> Tensor:
    """``out[r] = sum_d (x[r % N, d] - 1/2) l[r, d] - log(sinh(l/2) / (l/2))``,
    ``l = h @ weight.T + bias``."""
    return module(backend).linear_continuous_bernoulli_log_prob_fwd(h, weight, bias, x)


@linear_continuous_bernoulli_log_prob.register_fake
def _(h, weight, bias, x, backend):
    return x.new_empty(h.shape[:1])  # in x's dtype, the accumulation dtype


@torch.library.custom_op("fastair::linear_continuous_bernoulli_log_prob_backward",
                         mutates_args=())
def linear_continuous_bernoulli_log_prob_backward(grad: Tensor, h: Tensor, weight: Tensor,
                                                  bias: Optional[Tensor], x: Tensor,
                                                  backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(dh [R, H], dweight [D, H], dbias [D])`` for the upstream gradient ``grad`` [R], with
    ``dl = grad[r] (x - mean(l))``."""
    return module(backend).linear_continuous_bernoulli_log_prob_bwd(grad, h, weight, bias, x)


@linear_continuous_bernoulli_log_prob_backward.register_fake
def _(grad, h, weight, bias, x, backend):
    return torch.empty_like(h), torch.empty_like(weight), weight.new_empty(weight.shape[:1])


def _setup(ctx, inputs, output):
    h, weight, bias, x, backend = inputs
    ctx.save_for_backward(h, weight, bias, x)
    ctx.backend = backend


def _backward(ctx, grad):
    h, weight, bias, x = ctx.saved_tensors
    dh, dweight, dbias = linear_continuous_bernoulli_log_prob_backward(
        grad.contiguous(), h, weight, bias, x, ctx.backend)
    return dh, dweight, (dbias if bias is not None else None), None, None


linear_continuous_bernoulli_log_prob.register_autograd(_backward, setup_context=_setup)
