"""Bernoulli log-likelihood from logits, summed over the last dim.

``out[m, n] = sum_d x[n, d] * l[m, n, d] - softplus(l[m, n, d])`` for ``logits [M, N, D]``,
``x [N, D]``; its gradient is ``dl = grad[m, n] * (x - sigmoid(l))``. Row-parallel: a program
takes ``BLOCK_R`` rows of the flattened ``[M * N, D]`` logits and loops over D in ``BLOCK_D`` tiles.
"""
import torch
import triton
import triton.language as tl

from .common import (
    bernoulli_term,
    iw_grad,
    iw_pointers,
    min_programs,
    on_input_device,
    row_blocks,
    sigmoid_pair,
)

# The launchers; fastair.backends.triton collects them.
__all__ = ["bernoulli_log_prob_fwd", "bernoulli_log_prob_bwd"]


@triton.jit
def bernoulli_rows(l_ptr, x_ptr, rows, rmask, N, D, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """``sum_d x*l - softplus(l)`` for ``rows`` of ``l [R, D]`` (x row = row % N): ``[BLOCK_R]``."""
    acc_ty = x_ptr.dtype.element_ty
    l_row = rows.to(tl.int64)[:, None] * D
    x_row = (rows % N).to(tl.int64)[:, None] * D
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=acc_ty)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)[None, :]
        mask = rmask[:, None] & (cols < D)
        l = tl.load(l_ptr + l_row + cols, mask=mask, other=0.0).to(acc_ty)
        x = tl.load(x_ptr + x_row + cols, mask=mask, other=0.0)
        acc += tl.where(mask, bernoulli_term(l, x), 0.0)
    return tl.sum(acc, axis=1)


@triton.jit
def _bernoulli_fwd_kernel(l_ptr, x_ptr, out_ptr, R, N, D,
                          BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    total = bernoulli_rows(l_ptr, x_ptr, rows, rmask, N, D, BLOCK_R, BLOCK_D)
    tl.store(out_ptr + rows, total, mask=rmask)


@triton.jit
def _bernoulli_bwd_kernel(g_ptr, gl_ptr, lw_ptr, bound_ptr, l_ptr, x_ptr, dl_ptr, R, N, D,
                          BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, IW: tl.constexpr,
                          HAS_GB: tl.constexpr, HAS_GL: tl.constexpr):
    """``dl = g (x - sigmoid(l))`` per row; ``g`` is ``grad [R]``, or with ``IW`` the
    importance-weighted gradient of :func:`iw_grad` (``g_ptr`` then holds the bound's
    gradient)."""
    acc_ty = x_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    if IW:
        g = iw_grad(rows, rows % N, rmask, g_ptr, gl_ptr, lw_ptr, bound_ptr, R // N, HAS_GB,
                    HAS_GL)[:, None]
    else:
        g = tl.load(g_ptr + rows, mask=rmask, other=0.0)[:, None]
    l_row = rows.to(tl.int64)[:, None] * D
    x_row = (rows % N).to(tl.int64)[:, None] * D
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)[None, :]
        mask = rmask[:, None] & (cols < D)
        l = tl.load(l_ptr + l_row + cols, mask=mask, other=0.0).to(acc_ty)
        x = tl.load(x_ptr + x_row + cols, mask=mask, other=0.0)
        s_pos, s_neg = sigmoid_pair(l)
        # x - sigmoid(l), written so that 1 - sigmoid(l) does not cancel for large l
        dl = g * (x * s_neg - (1.0 - x) * s_pos)
        tl.store(dl_ptr + l_row + cols, dl.to(dl_ptr.dtype.element_ty), mask=mask)


@on_input_device
def bernoulli_log_prob_fwd(logits, x):
    """``logits [M, N, D]``, ``x [N, D]`` -> ``[M, N]`` in x's dtype (the accumulation dtype)."""
    M, N, D = logits.shape
    out = torch.empty((M, N), dtype=x.dtype, device=logits.device)
    R = M * N
    if R == 0:
        return out
    BLOCK_R, BLOCK_D = row_blocks(R, D, programs=min_programs(logits))
    _bernoulli_fwd_kernel[(triton.cdiv(R, BLOCK_R),)](
        logits, x, out, R, N, D, BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D)
    return out


@on_input_device
def bernoulli_log_prob_bwd(grad, logits, x):
    """``grad [M, N]``, ``logits [M, N, D]``, ``x [N, D]`` -> ``dlogits [M, N, D]`` (in the
    logits' dtype)."""
    return bernoulli_log_prob_bwd_launch(logits, x, grad)


def bernoulli_log_prob_bwd_launch(logits, x, grad, iw=None):
    """``dlogits [M, N, D]`` for ``grad [M, N]``, or with ``iw = (grad_bound [N] or None,
    grad_log_w [M, N] or None, log_w [M, N], bound [N])`` for the importance-weighted gradient
    formed in the kernel (:func:`iw_grad`)."""
    M, N, D = logits.shape
    dlogits = torch.empty((M, N, D), dtype=logits.dtype, device=logits.device)
    R = M * N
    if R == 0 or D == 0:
        return dlogits
    BLOCK_R, BLOCK_D = row_blocks(R, D, programs=min_programs(logits))
    ptrs, has_gb, has_gl = iw_pointers(iw, x)
    if iw is None:
        ptrs = (grad,) + ptrs[1:]
    _bernoulli_bwd_kernel[(triton.cdiv(R, BLOCK_R),)](
        *ptrs, logits, x, dlogits, R, N, D, BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D,
        IW=iw is not None, HAS_GB=has_gb, HAS_GL=has_gl)
    return dlogits
