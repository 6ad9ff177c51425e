"""``fastair::iwae_bernoulli_gaussian``: the fused k-sample bound.

Inputs x [B, D], logits [k, B, D], z [k, B, Z], mu and logvar [B, Z]; outputs the log weights
``log_w`` [k, B] and their logsumexp over k, ``lse`` [B] (the bound is ``lse - log k``). The
forward reads the logits once; the backward reads them once and writes only ``dlogits``.
"""
import torch
from torch import Tensor

from fastair.backends import module

__all__ = ["iwae_bernoulli_gaussian", "iwae_bernoulli_gaussian_backward"]


@torch.library.custom_op("fastair::iwae_bernoulli_gaussian", mutates_args=())
def iwae_bernoulli_gaussian(x: Tensor, logits: Tensor, z: Tensor, mu: Tensor, logvar: Tensor,
                            backend: str) -> tuple[Tensor, Tensor]:
    """``(log_w [k, B], lse [B])``."""
    return module(backend).iwae_bg_fwd(x, logits, z, mu, logvar)


@iwae_bernoulli_gaussian.register_fake
def _(x, logits, z, mu, logvar, backend):
    return z.new_empty(z.shape[:2]), z.new_empty(z.shape[1:2])


@torch.library.custom_op("fastair::iwae_bernoulli_gaussian_backward", mutates_args=())
def iwae_bernoulli_gaussian_backward(grad_log_w: Tensor, x: Tensor, logits: Tensor, z: Tensor,
                                     mu: Tensor, logvar: Tensor,
                                     backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dlogits, dz, dmu, dlogvar)`` for the gradient ``grad_log_w`` [k, B] of ``log_w``."""
    return module(backend).iwae_bg_bwd(grad_log_w, x, logits, z, mu, logvar)


@iwae_bernoulli_gaussian_backward.register_fake
def _(grad_log_w, x, logits, z, mu, logvar, backend):
    return (torch.empty_like(logits), torch.empty_like(z), torch.empty_like(mu),
            torch.empty_like(logvar))


def _setup(ctx, inputs, output):
    x, logits, z, mu, logvar, backend = inputs
    log_w, lse = output
    ctx.save_for_backward(x, logits, z, mu, logvar, log_w, lse)
    ctx.backend = backend


def _backward(ctx, grad_log_w, grad_lse):
    x, logits, z, mu, logvar, log_w, lse = ctx.saved_tensors
    # dL/dlog_w = softmax_k(log_w) * grad_lse: the normalized importance weights.
    finite = torch.isfinite(lse)
    weights = torch.exp(log_w - torch.where(finite, lse, 0.0)) * finite
    total = weights * grad_lse if grad_lse is not None else torch.zeros_like(log_w)
    if grad_log_w is not None:
        total = total + grad_log_w
    dlogits, dz, dmu, dlogvar = iwae_bernoulli_gaussian_backward(
        total.contiguous(), x, logits, z, mu, logvar, ctx.backend)
    return None, dlogits, dz, dmu, dlogvar, None


iwae_bernoulli_gaussian.register_autograd(_backward, setup_context=_setup)
