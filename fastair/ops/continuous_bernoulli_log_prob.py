"""``fastair::continuous_bernoulli_log_prob``: logits [M, N, D], x [N, D] -> [M, N]."""
import torch
from torch import Tensor

from fastair.backends import module

__all__ = ["continuous_bernoulli_log_prob", "continuous_bernoulli_log_prob_backward"]


@torch.library.custom_op("fastair::continuous_bernoulli_log_prob", mutates_args=())
def continuous_bernoulli_log_prob(logits: Tensor, x: Tensor, backend: str) -> Tensor:
    """``out[m, n] = sum_d (x[n, d] - 1/2) l[m, n, d] - log(sinh(l/2) / (l/2))``, the continuous
    Bernoulli log-density (docs/design.md §1.13)."""
    return module(backend).continuous_bernoulli_log_prob_fwd(logits, x)


@continuous_bernoulli_log_prob.register_fake
def _(logits, x, backend):
    return logits.new_empty(logits.shape[:2], dtype=x.dtype)


@torch.library.custom_op("fastair::continuous_bernoulli_log_prob_backward", mutates_args=())
def continuous_bernoulli_log_prob_backward(grad: Tensor, logits: Tensor, x: Tensor,
                                           backend: str) -> Tensor:
    """``dlogits[m, n, d] = grad[m, n] * (x[n, d] - mean(l[m, n, d]))``, with the mean
    ``1 / (1 - exp(-l)) - 1 / l`` (1/2 at ``l = 0``)."""
    return module(backend).continuous_bernoulli_log_prob_bwd(grad, logits, x)


@continuous_bernoulli_log_prob_backward.register_fake
def _(grad, logits, x, backend):
    return torch.empty_like(logits)


def _setup(ctx, inputs, output):
    logits, x, backend = inputs
    ctx.save_for_backward(logits, x)
    ctx.backend = backend


def _backward(ctx, grad):
    logits, x = ctx.saved_tensors
    dlogits = continuous_bernoulli_log_prob_backward(grad.contiguous(), logits, x, ctx.backend)
    return dlogits, None, None


continuous_bernoulli_log_prob.register_autograd(_backward, setup_context=_setup)
