"""The k-sample bound of log weights over the first dim, and its gradient.

``bound[r] = lse[r] - log n`` with ``lse[r] = log sum_i exp(v[i, r])`` for ``v [n, R]``, the
log-sum-exp taken with a running max and a rescaled running sum;
``dv = grad[r] * exp(v - lse[r])``, 0 where ``lse = -inf`` (a column of -inf): the softmax over
the first dim. The log-sum-exp is column-parallel; long columns (``n > ROWS_PER_PROGRAM``) are
cut into chunks whose partial log-sum-exps ``[S, R]`` are reduced by a second launch of the same
kernel. :func:`logsumexp_launch` is also the bound of :mod:`.iwae_bernoulli_gaussian`.
"""
import math

import torch
import triton
import triton.language as tl

from .common import min_programs, on_input_device

# The launchers; fastair.backends.triton collects them.
__all__ = ["iwae_bound_fwd", "iwae_bound_bwd"]

_INF = tl.constexpr(float("inf"))
ROWS_PER_PROGRAM = 512
MIN_CHUNK = 32
TILE = 2048


@triton.jit
def _logsumexp_kernel(v_ptr, out_ptr, n, R, ROWS_PER, MEAN_OF, BLOCK_N: tl.constexpr,
                      BLOCK_R: tl.constexpr, LOG_MEAN: tl.constexpr):
    """Program ``(c, s)``: log-sum-exp of rows ``[s * ROWS_PER, (s + 1) * ROWS_PER) & [0, n)`` of
    columns ``c * BLOCK_R ...`` of ``v [n, R]``, written to ``out[s, cols]``; with ``LOG_MEAN``
    minus ``log MEAN_OF`` (the log-mean-exp of ``MEAN_OF`` values, the IWAE bound)."""
    acc_ty = v_ptr.dtype.element_ty
    cols = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cmask = cols < R
    s = tl.program_id(1)
    r0 = s * ROWS_PER
    r_end = tl.minimum(r0 + ROWS_PER, n)
    run_max = tl.full([BLOCK_R], -_INF, acc_ty)
    run_sum = tl.zeros([BLOCK_R], dtype=acc_ty)
    for i0 in range(0, ROWS_PER, BLOCK_N):
        rows = r0 + i0 + tl.arange(0, BLOCK_N)
        mask = (rows < r_end)[:, None] & cmask[None, :]
        v = tl.load(v_ptr + rows.to(tl.int64)[:, None] * R + cols[None, :], mask=mask, other=-_INF)
        new_max = tl.maximum(run_max, tl.max(v, axis=0))
        # shift by the max, or by 0 while the max is infinite (all -inf so far): no inf - inf
        shift = tl.where(tl.abs(new_max) == _INF, 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(v - shift[None, :]), axis=0)
        run_max = new_max
    empty = run_sum == 0.0  # a column of -inf (or past the last column): lse = -inf, no log(0)
    lse = tl.where(empty, -_INF, run_max + tl.log(tl.where(empty, 1.0, run_sum)))
    if LOG_MEAN:
        lse = lse - tl.log(MEAN_OF.to(acc_ty))
    tl.store(out_ptr + s.to(tl.int64) * R + cols, lse, mask=cmask)


@triton.jit
def _logsumexp_bwd_kernel(g_ptr, v_ptr, lse_ptr, out_ptr, numel, R, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    col = offs % R
    g = tl.load(g_ptr + col, mask=mask, other=0.0)
    lse = tl.load(lse_ptr + col, mask=mask, other=0.0)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0)
    empty = lse == -_INF
    w = tl.exp(v - tl.where(empty, 0.0, lse))
    tl.store(out_ptr + offs, tl.where(empty, 0.0, g * w), mask=mask)


@on_input_device
def iwae_bound_fwd(v):
    """``v [n, R]`` -> ``(bound [R], lse [R])``: ``lse = log sum_i exp(v[i, r])`` (``-inf`` for
    an all ``-inf`` column) and ``bound = lse - log n``, ``log n`` a Python float as torch
    subtracts it (the backward reads ``lse``)."""
    lse = logsumexp_launch(v)
    return lse - math.log(v.shape[0]), lse


def logsumexp_launch(v, mean_of=0):
    """``v [n, R]`` -> ``log sum_i exp(v[i, r])`` ``[R]`` (``-inf`` for an all ``-inf`` column),
    minus ``log mean_of`` (in the kernel) where ``mean_of > 0``. One launch for
    ``n <= ROWS_PER_PROGRAM``; above, the rows are cut into chunks of at most that many (and at
    least ``MIN_CHUNK``) so that the first launch has about :func:`min_programs` programs, and a
    second launch reduces the chunks."""
    n, R = v.shape
    if n <= ROWS_PER_PROGRAM:
        rows_per = n
    else:
        col_blocks = triton.cdiv(R, min(triton.next_power_of_2(max(R, 1)), 64))
        chunks = triton.cdiv(min_programs(v), col_blocks)
        rows_per = min(ROWS_PER_PROGRAM, max(MIN_CHUNK, triton.cdiv(n, chunks)))
    S = max(triton.cdiv(n, rows_per), 1) if n > 0 else 1
    out = torch.empty((S, R), dtype=v.dtype, device=v.device)
    if R > 0:
        BLOCK_R = min(triton.next_power_of_2(R), 64)
        BLOCK_N = min(triton.next_power_of_2(max(rows_per, 1)), TILE // BLOCK_R)
        last = S == 1 and mean_of > 0
        _logsumexp_kernel[(triton.cdiv(R, BLOCK_R), S)](
            v, out, n, R, rows_per, max(mean_of, 1), BLOCK_N=BLOCK_N, BLOCK_R=BLOCK_R,
            LOG_MEAN=last)
    return out[0] if S == 1 else logsumexp_launch(out, mean_of)


@on_input_device
def iwae_bound_bwd(grad, v, lse):
    """``grad [R]``, ``v [n, R]``, ``lse [R]`` -> ``grad * exp(v - lse)`` ``[n, R]``, 0 where
    ``lse = -inf``."""
    out = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    numel = v.numel()
    if numel == 0:
        return out
    BLOCK = min(triton.next_power_of_2(numel), 1024)
    _logsumexp_bwd_kernel[(triton.cdiv(numel, BLOCK),)](grad, v, lse, out, numel, v.shape[1],
                                                        BLOCK=BLOCK)
    return out
