"""A decoder's output layer fused with the Gaussian log-density of the data, and its gradients.

The kernels of :mod:`.linear_head` with ``LIK`` = :data:`~.linear_head.GAUSSIAN`, for
``h [R, H]``, ``weight [D, H]``, ``bias [D]`` (or None), ``x [N, D]`` and ``logvar [N, D]`` (row r
of h pairs with row ``r % N`` of x and logvar) and the mean ``l = h @ weight^T + bias``, never
stored: ``out[r] = -1/2 sum_d t^2 + logvar + log 2 pi`` with ``t = (x - l) exp(-logvar / 2)``,
``dl = grad[r] t exp(-logvar / 2)`` and ``dlogvar[n] = sum_{r % N = n} grad[r] (t^2 - 1) / 2``.

``dh``, ``dweight`` and ``dbias`` are those of :func:`.linear_head.head_bwd`. ``dlogvar``
is a reduction over the rows ``n, n + N, n + 2N, ...`` that share an x row, done without
atomics (deterministic) by :func:`_lg_dlogvar_kernel`: a program per (``BLOCK_N`` x rows,
``BLOCK_D`` columns, split s) remakes the mean tile of the rows ``n + j N`` for ``j = s, s + S,
...`` and sums ``grad (t^2 - 1) / 2`` over them into its slice of ``[S, N, D]``, which torch
sums over s afterwards (S = 1 writes dlogvar directly). S is chosen, as for ``dweight``, to give
about :func:`.common.min_programs` programs.
"""
import torch
import triton
import triton.language as tl

from .common import min_programs, on_input_device
from .linear_head import GAUSSIAN, bias_args, dot_mode, head_bwd, head_fwd, logits_tile

# The launchers; fastair.backends.triton collects them.
__all__ = ["linear_gaussian_log_prob_fwd", "linear_gaussian_log_prob_bwd"]


@triton.jit
def _lg_dlogvar_kernel(g_ptr, h_ptr, w_ptr, b_ptr, x_ptr, lv_ptr, dlv_ptr, M, N, D, H, SPLITS,
                       HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                       BLOCK_H: tl.constexpr, DOT: tl.constexpr):
    """Program ``(i, j, s)``, for x rows ``ns = i * BLOCK_N ...`` and columns
    ``cols = j * BLOCK_D ...``: ``dlv[s, ns, cols] = sum_m grad[r] (t^2 - 1) / 2`` over the rows
    ``r = m N + ns`` for ``m = s, s + SPLITS, ... < M``, each tile of means remade from h."""
    ns = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = ns < N
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    split = tl.program_id(2)
    mask = nmask[:, None] & cmask[None, :]
    offs = ns.to(tl.int64)[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    inv_std = tl.exp(-0.5 * tl.load(lv_ptr + offs, mask=mask, other=0.0))
    acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=dlv_ptr.dtype.element_ty)
    for m0 in range(0, M, SPLITS):
        rows = (m0 + split) * N + ns
        rmask = nmask & (rows < M * N)  # m0 + split < M
        mean = logits_tile(h_ptr, w_ptr, b_ptr, rows, rmask, cols, cmask, H, HAS_BIAS,
                            BLOCK_N, BLOCK_D, BLOCK_H, DOT)
        g = tl.load(g_ptr + rows, mask=rmask, other=0.0)[:, None]
        t = (x - mean) * inv_std
        acc += tl.where(rmask[:, None], g * (t * t - 1.0), 0.0)
    tl.store(dlv_ptr + split.to(tl.int64) * N * D + offs, 0.5 * acc, mask=mask)


def _dlogvar_config(N, D, dtype, on_gpu):
    """``BLOCK_N``, ``BLOCK_D`` (powers of two of at least 16, ``tl.dot``'s minimum, no larger
    than the shape needs; 16 x 16 in float64, whose broadcast product is ``[16, 16, BLOCK_H]``),
    ``BLOCK_H``, ``DOT`` and the launch options of :func:`_lg_dlogvar_kernel`."""
    fit = lambda n, cap: min(max(triton.next_power_of_2(max(n, 1)), 16), cap)  # noqa: E731
    cap = 16 if dtype == torch.float64 else 32
    return dict(BLOCK_N=fit(N, cap), BLOCK_D=fit(D, cap), BLOCK_H=16,
                DOT=dot_mode(dtype, on_gpu), num_warps=4, num_stages=1)


@on_input_device
def linear_gaussian_log_prob_fwd(h, weight, bias, x, logvar):
    """``h [R, H]``, ``weight [D, H]``, ``bias [D]`` or None, ``x [N, D]``, ``logvar [N, D]`` ->
    ``out [R]``: ``sum_d log N(x; m, exp(logvar))`` with the mean ``m = h @ weight^T + bias``."""
    return head_fwd(GAUSSIAN, h, weight, bias, x, logvar)


@on_input_device
def linear_gaussian_log_prob_bwd(grad, h, weight, bias, x, logvar):
    """``grad [R]`` and the forward's inputs -> ``(dh [R, H], dweight [D, H], dbias [D],
    dlogvar [N, D])`` (module docstring)."""
    dh, dweight, dbias = head_bwd(GAUSSIAN, grad, h, weight, bias, x, logvar)
    R, H = h.shape
    D, N = weight.shape[0], x.shape[0]
    if R == 0 or D == 0:
        return dh, dweight, dbias, torch.zeros_like(logvar)
    M = R // N  # R = M N: every x row pairs with M rows of h
    cfg = _dlogvar_config(N, D, h.dtype, h.is_cuda)
    grid = (triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(D, cfg["BLOCK_D"]))
    splits = max(min(M, triton.cdiv(min_programs(h), grid[0] * grid[1])), 1)
    dlv = torch.empty((splits, N, D), dtype=logvar.dtype, device=logvar.device)
    b, has_bias = bias_args(bias, weight)
    _lg_dlogvar_kernel[grid + (splits,)](grad, h, weight, b, x, logvar, dlv, M, N, D, H, splits,
                                         HAS_BIAS=has_bias, **cfg)
    return dh, dweight, dbias, dlv[0] if splits == 1 else dlv.sum(0)
