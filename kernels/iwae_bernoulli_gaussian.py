"""Fused log importance weights of a Bernoulli decoder with a Gaussian encoder, and the bound.

For ``x [B, D]``, ``logits [k, B, D]``, ``z [k, B, Z]``, ``mu, logvar [B, Z]``:
``log_w[k, b] = sum_d (x l - softplus(l)) - 1/2 sum_j (z^2 - (z - mu)^2 exp(-logvar) - logvar)``
(``log p(x|z) + log N(z; 0, I) - log N(z; mu, exp(logvar))``; log 2 pi cancels) and
``lse[b] = log sum_k exp(log_w[k, b])``. One pass over the logits per (k, b) row.
Backward, with ``G = dL/dlog_w``: ``dlogits = G (x - sigmoid(l))``,
``dz = G (-z + (z - mu) exp(-logvar))``, ``dmu = sum_k G (mu - z) exp(-logvar)``,
``dlogvar = sum_k G (1 - (z - mu)^2 exp(-logvar)) / 2``.
"""
import torch
import triton
import triton.language as tl

from ._common import on_input_device, row_blocks
from .bernoulli import bernoulli_bwd, bernoulli_rows
from .gaussian import gaussian_bwd_launch, gaussian_rows
from .logsumexp import logsumexp_fwd

# The launchers; fastair.backends.triton collects them.
__all__ = ["iwae_bg_fwd", "iwae_bg_bwd"]


@triton.jit
def _iwae_bg_fwd_kernel(x_ptr, l_ptr, z_ptr, mu_ptr, lv_ptr, out_ptr, R, B, D, Z,
                        BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_Z: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    log_px = bernoulli_rows(l_ptr, x_ptr, rows, rmask, B, D, BLOCK_R, BLOCK_D)
    log_pq = gaussian_rows(z_ptr, mu_ptr, lv_ptr, rows, rmask, B, Z, True, BLOCK_R, BLOCK_Z)
    tl.store(out_ptr + rows, log_px + log_pq, mask=rmask)


@on_input_device
def iwae_bg_fwd(x, logits, z, mu, logvar):
    """-> ``(log_w [k, B], lse [B])``, both in the accumulation dtype (x's)."""
    k, B, D = logits.shape
    Z = z.shape[2]
    log_w = torch.empty((k, B), dtype=x.dtype, device=logits.device)
    R = k * B
    if R > 0:
        BLOCK_R, BLOCK_D = row_blocks(R, D)
        BLOCK_Z = min(triton.next_power_of_2(max(Z, 1)), 64)
        _iwae_bg_fwd_kernel[(triton.cdiv(R, BLOCK_R),)](
            x, logits, z, mu, logvar, log_w, R, B, D, Z,
            BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D, BLOCK_Z=BLOCK_Z)
    return log_w, logsumexp_fwd(log_w)


@on_input_device
def iwae_bg_bwd(G, x, logits, z, mu, logvar):
    """``G [k, B]`` (gradient w.r.t. ``log_w``) -> ``(dlogits [k, B, D] in logits' dtype,
    dz [k, B, Z], dmu [B, Z], dlogvar [B, Z])``."""
    dlogits = bernoulli_bwd(G, logits, x)
    dz, dmu, dlogvar = gaussian_bwd_launch(G, z, mu, logvar, iwae=True)
    return dlogits, dz, dmu, dlogvar
