"""``fastair::linear_gaussian_log_prob``: h [R, H], weight [D, H], bias [D] or None, x [N, D],
logvar [N, D] -> [R], the decoder's output layer fused with the Gaussian log-density of the data
(the [R, D] means are never stored; the backward recomputes them tile by tile)."""
from typing import Optional

import torch
from torch import Tensor

from fastair.backends import module

__all__ = ["linear_gaussian_log_prob", "linear_gaussian_log_prob_backward"]


@torch.library.custom_op("fastair::linear_gaussian_log_prob", mutates_args=())
def linear_gaussian_log_prob(h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor,
                             logvar: Tensor, backend: str) -> Tensor:
    """``out[r] = -1/2 sum_d (x - m)^2 exp(-logvar) + logvar + log 2 pi`` with the mean
    ``m = h @ weight.T + bias`` and ``x``, ``logvar`` at row ``r % N``."""
    return module(backend).linear_gaussian_log_prob_fwd(h, weight, bias, x, logvar)


@linear_gaussian_log_prob.register_fake
def _(h, weight, bias, x, logvar, backend):
    return x.new_empty(h.shape[:1])  # in x's dtype, the accumulation dtype


@torch.library.custom_op("fastair::linear_gaussian_log_prob_backward", mutates_args=())
def linear_gaussian_log_prob_backward(grad: Tensor, h: Tensor, weight: Tensor,
                                      bias: Optional[Tensor], x: Tensor, logvar: Tensor,
                                      backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dh [R, H], dweight [D, H], dbias [D], dlogvar [N, D])`` for the upstream gradient
    ``grad`` [R]: with ``t = (x - m) exp(-logvar / 2)``, ``dm = grad[r] t exp(-logvar / 2)`` and
    ``dlogvar[n] = sum_{r % N = n} grad[r] (t^2 - 1) / 2``."""
    return module(backend).linear_gaussian_log_prob_bwd(grad, h, weight, bias, x, logvar)


@linear_gaussian_log_prob_backward.register_fake
def _(grad, h, weight, bias, x, logvar, backend):
    return (torch.empty_like(h), torch.empty_like(weight), weight.new_empty(weight.shape[:1]),
            torch.empty_like(logvar))


def _setup(ctx, inputs, output):
    h, weight, bias, x, logvar, backend = inputs
    ctx.save_for_backward(h, weight, bias, x, logvar)
    ctx.backend = backend


def _backward(ctx, grad):
    h, weight, bias, x, logvar = ctx.saved_tensors
    dh, dweight, dbias, dlogvar = linear_gaussian_log_prob_backward(
        grad.contiguous(), h, weight, bias, x, logvar, ctx.backend)
    return dh, dweight, (dbias if bias is not None else None), None, dlogvar, None


linear_gaussian_log_prob.register_autograd(_backward, setup_context=_setup)
