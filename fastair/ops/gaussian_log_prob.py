"""``fastair::gaussian_log_prob``: z [M, N, Z], mu and logvar [N, Z] -> [M, N]."""
import torch
from torch import Tensor

from fastair.backends import module

__all__ = ["gaussian_log_prob", "gaussian_log_prob_backward"]


@torch.library.custom_op("fastair::gaussian_log_prob", mutates_args=())
def gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor, backend: str) -> Tensor:
    """``out[m, n] = -1/2 sum_j (z - mu)^2 exp(-logvar) + logvar + log 2 pi``."""
    return module(backend).gaussian_log_prob_fwd(z, mu, logvar)


@gaussian_log_prob.register_fake
def _(z, mu, logvar, backend):
    return z.new_empty(z.shape[:2])


@torch.library.custom_op("fastair::gaussian_log_prob_backward", mutates_args=())
def gaussian_log_prob_backward(grad: Tensor, z: Tensor, mu: Tensor, logvar: Tensor,
                               backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(dz [M, N, Z], dmu [N, Z], dlogvar [N, Z])`` for the upstream ``grad`` [M, N]."""
    return module(backend).gaussian_log_prob_bwd(grad, z, mu, logvar)


@gaussian_log_prob_backward.register_fake
def _(grad, z, mu, logvar, backend):
    return torch.empty_like(z), torch.empty_like(mu), torch.empty_like(logvar)


def _setup(ctx, inputs, output):
    z, mu, logvar, backend = inputs
    ctx.save_for_backward(z, mu, logvar)
    ctx.backend = backend


def _backward(ctx, grad):
    z, mu, logvar = ctx.saved_tensors
    dz, dmu, dlogvar = gaussian_log_prob_backward(grad.contiguous(), z, mu, logvar, ctx.backend)
    return dz, dmu, dlogvar, None


gaussian_log_prob.register_autograd(_backward, setup_context=_setup)
