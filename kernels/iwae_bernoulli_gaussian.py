"""Fused log importance weights of a Bernoulli decoder with a Gaussian encoder, and the bound.

For ``x [B, D]``, ``logits [k, B, D]``, ``z [k, B, Z]``, ``mu, logvar [B, Z]``:
``log_w[k, b] = sum_d (x l - softplus(l)) - 1/2 sum_j (z^2 - (z - mu)^2 exp(-logvar) - logvar)``
(``log p(x|z) + log N(z; 0, I) - log N(z; mu, exp(logvar))``; log 2 pi cancels) and the bound
``bound[b] = log sum_k exp(log_w[k, b]) - log k``. One pass over the logits per (k, b) row, then
one launch for the bound (two for k > 512): two kernels in all.
Backward, from the gradients of the bound ``gb [B]`` and of ``log_w`` ``gl [k, B]`` (either may
be absent), ``G = gl + gb softmax_k(log_w)`` is formed inside both kernels:
``dlogits = G (x - sigmoid(l))``, ``dz = G (-z + (z - mu) exp(-logvar))``,
``dmu = sum_k G (mu - z) exp(-logvar)``, ``dlogvar = sum_k G (1 - (z - mu)^2 exp(-logvar)) / 2``:
two kernels and one sum of the partial ``dmu, dlogvar`` (none for small k).
"""
import torch
import triton
import triton.language as tl

from .bernoulli_log_prob import bernoulli_log_prob_bwd_launch, bernoulli_rows
from .common import min_programs, on_input_device, row_blocks
from .gaussian_log_prob import gaussian_log_prob_bwd_launch, gaussian_rows
from .iwae_bound import logsumexp_launch

# The launchers; fastair.backends.triton collects them.
__all__ = ["iwae_bernoulli_gaussian_fwd", "iwae_bernoulli_gaussian_bwd"]


@triton.jit
def _iwae_bg_fwd_kernel(x_ptr, l_ptr, z_ptr, mu_ptr, lv_ptr, out_ptr, R, B, D, Z,
                        BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_Z: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    log_px = bernoulli_rows(l_ptr, x_ptr, rows, rmask, B, D, BLOCK_R, BLOCK_D)
    log_pq = gaussian_rows(z_ptr, mu_ptr, lv_ptr, rows, rmask, B, Z, True, BLOCK_R, BLOCK_Z)
    tl.store(out_ptr + rows, log_px + log_pq, mask=rmask)


@on_input_device
def iwae_bernoulli_gaussian_fwd(x, logits, z, mu, logvar):
    """-> ``(log_w [k, B], bound [B])``, both in the accumulation dtype (x's)."""
    k, B, D = logits.shape
    Z = z.shape[2]
    log_w = torch.empty((k, B), dtype=x.dtype, device=logits.device)
    R = k * B
    if R > 0:
        BLOCK_R, BLOCK_D = row_blocks(R, D, programs=min_programs(logits))
        BLOCK_Z = min(triton.next_power_of_2(max(Z, 1)), 64)
        _iwae_bg_fwd_kernel[(triton.cdiv(R, BLOCK_R),)](
            x, logits, z, mu, logvar, log_w, R, B, D, Z,
            BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D, BLOCK_Z=BLOCK_Z)
    return log_w, logsumexp_launch(log_w, mean_of=k)


@on_input_device
def iwae_bernoulli_gaussian_bwd(grad_bound, grad_log_w, log_w, bound, x, logits, z, mu, logvar):
    """``grad_bound [B]`` and ``grad_log_w [k, B]`` (either None) with the forward's ``log_w``
    and ``bound`` -> ``(dlogits [k, B, D] in logits' dtype, dz [k, B, Z], dmu [B, Z],
    dlogvar [B, Z])``."""
    iw = (grad_bound, grad_log_w, log_w, bound)
    dlogits = bernoulli_log_prob_bwd_launch(logits, x, None, iw)
    dz, dmu, dlogvar = gaussian_log_prob_bwd_launch(None, z, mu, logvar, iw)
    return dlogits, dz, dmu, dlogvar
