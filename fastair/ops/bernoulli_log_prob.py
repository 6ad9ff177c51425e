"""``fastair::bernoulli_log_prob``: logits [M, N, D], x [N, D] -> [M, N]."""
import torch
from torch import Tensor

from fastair.backends import module

__all__ = ["bernoulli_log_prob", "bernoulli_log_prob_backward"]


@torch.library.custom_op("fastair::bernoulli_log_prob", mutates_args=())
def bernoulli_log_prob(logits: Tensor, x: Tensor, backend: str) -> Tensor:
    """``out[m, n] = sum_d x[n, d] * l[m, n, d] - softplus(l[m, n, d])``."""
    return module(backend).bernoulli_log_prob_fwd(logits, x)


@bernoulli_log_prob.register_fake
def _(logits, x, backend):
    return logits.new_empty(logits.shape[:2], dtype=x.dtype)


@torch.library.custom_op("fastair::bernoulli_log_prob_backward", mutates_args=())
def bernoulli_log_prob_backward(grad: Tensor, logits: Tensor, x: Tensor, backend: str) -> Tensor:
    """``dlogits[m, n, d] = grad[m, n] * (x[n, d] - sigmoid(l[m, n, d]))``."""
    return module(backend).bernoulli_log_prob_bwd(grad, logits, x)


@bernoulli_log_prob_backward.register_fake
def _(grad, logits, x, backend):
    return torch.empty_like(logits)


def _setup(ctx, inputs, output):
    logits, x, backend = inputs
    ctx.save_for_backward(logits, x)
    ctx.backend = backend


def _backward(ctx, grad):
    logits, x = ctx.saved_tensors
    dlogits = bernoulli_log_prob_backward(grad.contiguous(), logits, x, ctx.backend)
    return dlogits, None, None


bernoulli_log_prob.register_autograd(_backward, setup_context=_setup)
