"""``fastair::iwae_bernoulli_gaussian``: the fused k-sample bound.

Inputs x [B, D], logits [k, B, D], z [k, B, Z], mu and logvar [B, Z]; outputs the log weights
``log_w`` [k, B] and the bound ``logsumexp_k log_w - log k`` [B]. The forward reads the logits
once; the backward reads them once, writes only ``dlogits`` and forms the normalized importance
weights inside the backend's kernels, so that the op layer runs no kernel of its own.
"""
from typing import Optional

import torch
from torch import Tensor

from fastair.backends import module

__all__ = ["iwae_bernoulli_gaussian", "iwae_bernoulli_gaussian_backward"]


@torch.library.custom_op("fastair::iwae_bernoulli_gaussian", mutates_args=())
def iwae_bernoulli_gaussian(x: Tensor, logits: Tensor, z: Tensor, mu: Tensor, logvar: Tensor,
                            backend: str) -> tuple[Tensor, Tensor]:
    """``(log_w [k, B], bound [B])``."""
    return module(backend).iwae_bernoulli_gaussian_fwd(x, logits, z, mu, logvar)


@iwae_bernoulli_gaussian.register_fake
def _(x, logits, z, mu, logvar, backend):
    return z.new_empty(z.shape[:2]), z.new_empty(z.shape[1:2])


@torch.library.custom_op("fastair::iwae_bernoulli_gaussian_backward", mutates_args=())
def iwae_bernoulli_gaussian_backward(grad_bound: Optional[Tensor], grad_log_w: Optional[Tensor],
                                     log_w: Tensor, bound: Tensor, x: Tensor, logits: Tensor,
                                     z: Tensor, mu: Tensor, logvar: Tensor,
                                     backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dlogits, dz, dmu, dlogvar)`` for the gradients ``grad_bound`` [B] of the bound and
    ``grad_log_w`` [k, B] of ``log_w`` (either may be None: zero)."""
    return module(backend).iwae_bernoulli_gaussian_bwd(grad_bound, grad_log_w, log_w, bound, x,
                                                       logits, z, mu, logvar)


@iwae_bernoulli_gaussian_backward.register_fake
def _(grad_bound, grad_log_w, log_w, bound, x, logits, z, mu, logvar, backend):
    return (torch.empty_like(logits), torch.empty_like(z), torch.empty_like(mu),
            torch.empty_like(logvar))


def _setup(ctx, inputs, output):
    x, logits, z, mu, logvar, backend = inputs
    log_w, bound = output
    ctx.save_for_backward(x, logits, z, mu, logvar, log_w, bound)
    ctx.backend = backend
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zero fill


def _backward(ctx, grad_log_w, grad_bound):
    x, logits, z, mu, logvar, log_w, bound = ctx.saved_tensors
    if grad_log_w is None and grad_bound is None:
        return None, None, None, None, None, None
    dlogits, dz, dmu, dlogvar = iwae_bernoulli_gaussian_backward(
        None if grad_bound is None else grad_bound.contiguous(),
        None if grad_log_w is None else grad_log_w.contiguous(),
        log_w, bound, x, logits, z, mu, logvar, ctx.backend)
    return None, dlogits, dz, dmu, dlogvar, None


iwae_bernoulli_gaussian.register_autograd(_backward, setup_context=_setup)
