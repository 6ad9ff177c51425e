"""Diagonal Gaussian log-density summed over the last dim, and its gradients.

``out[m, n] = -1/2 sum_j (z - mu)^2 exp(-logvar) + logvar + log(2 pi)`` for ``z [M, N, Z]``,
``mu, logvar [N, Z]``, with the quadratic term formed as ``s^2``, ``s = (z - mu) exp(-logvar / 2)``
(finite for ``z - mu`` of the scale of the std where ``(z - mu)^2`` or ``exp(-logvar)`` alone
overflows, as for float32 ``logvar`` of +-100). With ``g = grad[m, n]`` and
``t = g s exp(-logvar / 2)``: ``dz = -t``, ``dmu = sum_m t``, ``dlogvar = sum_m g (s^2 - 1) / 2``.
The forward is row-parallel (rows of the flattened ``[M * N, Z]``); the backward is
column-parallel over ``[N * Z]`` and loops over m, so the sums over m need no atomics.
"""
import math
import struct

import torch
import triton
import triton.language as tl

from .common import TILE, iw_grad, iw_pointers, min_programs, on_input_device, row_blocks

# The launchers; fastair.backends.triton collects them.
__all__ = ["gaussian_log_prob_fwd", "gaussian_log_prob_bwd"]

# log(2 pi) as an exact float32 part plus a remainder: scalar constants may be rounded to
# float32 by Triton, and the sum keeps float64 kernels exact (float32 ones just see the first).
_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2PI_F32 = struct.unpack("f", struct.pack("f", _LOG_2PI))[0]
LOG_2PI_HI = tl.constexpr(_LOG_2PI_F32)
LOG_2PI_LO = tl.constexpr(_LOG_2PI - _LOG_2PI_F32)

@triton.jit
def gaussian_rows(z_ptr, mu_ptr, lv_ptr, rows, rmask, N, Z, IWAE: tl.constexpr,
                  BLOCK_R: tl.constexpr, BLOCK_Z: tl.constexpr):
    """Per row of ``z [R, Z]`` (mu/logvar row = row % N), a ``[BLOCK_R]`` vector of
    ``log N(z; mu, exp(logvar))``, or with ``IWAE`` ``log N(z; 0, I) - log N(z; mu, exp(logvar))
    = -1/2 sum_j z^2 - (z - mu)^2 exp(-logvar) - logvar`` (log 2 pi cancels)."""
    acc_ty = z_ptr.dtype.element_ty
    z_row = rows.to(tl.int64)[:, None] * Z
    p_row = (rows % N).to(tl.int64)[:, None] * Z
    acc = tl.zeros([BLOCK_R, BLOCK_Z], dtype=acc_ty)
    for j0 in range(0, Z, BLOCK_Z):
        cols = j0 + tl.arange(0, BLOCK_Z)[None, :]
        mask = rmask[:, None] & (cols < Z)
        z = tl.load(z_ptr + z_row + cols, mask=mask, other=0.0)
        mu = tl.load(mu_ptr + p_row + cols, mask=mask, other=0.0)
        lv = tl.load(lv_ptr + p_row + cols, mask=mask, other=0.0)
        s = (z - mu) * tl.exp(-0.5 * lv)
        quad = s * s
        if IWAE:
            term = z * z - quad - lv
        else:
            term = quad + lv + LOG_2PI_HI + LOG_2PI_LO
        acc += tl.where(mask, term, 0.0)
    return -0.5 * tl.sum(acc, axis=1)


@triton.jit
def _gaussian_fwd_kernel(z_ptr, mu_ptr, lv_ptr, out_ptr, R, N, Z,
                         BLOCK_R: tl.constexpr, BLOCK_Z: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    total = gaussian_rows(z_ptr, mu_ptr, lv_ptr, rows, rmask, N, Z, False, BLOCK_R, BLOCK_Z)
    tl.store(out_ptr + rows, total, mask=rmask)


@triton.jit
def gaussian_bwd_kernel(g_ptr, gl_ptr, lw_ptr, bound_ptr, z_ptr, mu_ptr, lv_ptr, dz_ptr, pmu_ptr,
                        plv_ptr, M, N, Z, M_PER, IWAE: tl.constexpr, HAS_GB: tl.constexpr,
                        HAS_GL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Program ``(c, s)``: columns ``c * BLOCK_C ...`` of the flattened ``[N * Z]`` and samples
    ``m`` in ``[s * M_PER, (s + 1) * M_PER)``, ``BLOCK_M`` at a time; writes ``dz`` there and its
    partial sums of ``dmu``/``dlogvar`` into row ``s`` of ``pmu``/``plv [S, N * Z]``.

    With ``IWAE`` the gradient ``G`` of ``log_w`` is formed here from the bound's (``g_ptr``)
    and ``log_w``'s (:func:`iw_grad`), the weight is ``g = -G`` (the term is ``-log q``) and the
    prior ``log N(z; 0, I)`` adds ``-G z`` to ``dz``.
    """
    acc_ty = z_ptr.dtype.element_ty
    NZ = N * Z
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < NZ
    n = (cols // Z)[None, :]
    mu = tl.load(mu_ptr + cols, mask=cmask, other=0.0)[None, :]
    inv_std = tl.exp(-0.5 * tl.load(lv_ptr + cols, mask=cmask, other=0.0))[None, :]
    acc_mu = tl.zeros([BLOCK_M, BLOCK_C], dtype=acc_ty)
    acc_lv = tl.zeros([BLOCK_M, BLOCK_C], dtype=acc_ty)
    s = tl.program_id(1)
    m0 = s * M_PER
    m_end = tl.minimum(m0 + M_PER, M)
    for i0 in range(0, M_PER, BLOCK_M):
        m = m0 + i0 + tl.arange(0, BLOCK_M)
        mask = (m < m_end)[:, None] & cmask[None, :]
        if IWAE:  # masked: g = 0, z = 0
            g = -iw_grad(m[:, None] * N + n, n, mask, g_ptr, gl_ptr, lw_ptr, bound_ptr, M,
                         HAS_GB, HAS_GL)
        else:
            g = tl.load(g_ptr + m[:, None] * N + n, mask=mask, other=0.0)
        z_off = m.to(tl.int64)[:, None] * NZ + cols[None, :]
        z = tl.load(z_ptr + z_off, mask=mask, other=0.0)
        scaled = (z - mu) * inv_std  # the s of the module docstring (s here: the split)
        t = g * scaled * inv_std
        dz = -t
        if IWAE:
            dz += g * z
        tl.store(dz_ptr + z_off, dz, mask=mask)
        acc_mu += t
        acc_lv += 0.5 * (g * scaled * scaled - g)
    out = s.to(tl.int64) * NZ + cols
    tl.store(pmu_ptr + out, tl.sum(acc_mu, axis=0), mask=cmask)
    tl.store(plv_ptr + out, tl.sum(acc_lv, axis=0), mask=cmask)


@triton.jit
def _sum_splits_kernel(pmu_ptr, plv_ptr, dmu_ptr, dlv_ptr, S, NZ, BLOCK: tl.constexpr):
    """``dmu = sum_s pmu[s]``, ``dlogvar = sum_s plv[s]`` for ``pmu, plv [S, NZ]``, in one
    launch."""
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < NZ
    acc_mu = tl.zeros([BLOCK], dtype=pmu_ptr.dtype.element_ty)
    acc_lv = tl.zeros([BLOCK], dtype=pmu_ptr.dtype.element_ty)
    for s in range(0, S):
        off = cols.to(tl.int64) + s * NZ
        acc_mu += tl.load(pmu_ptr + off, mask=mask, other=0.0)
        acc_lv += tl.load(plv_ptr + off, mask=mask, other=0.0)
    tl.store(dmu_ptr + cols, acc_mu, mask=mask)
    tl.store(dlv_ptr + cols, acc_lv, mask=mask)


def gaussian_log_prob_bwd_launch(grad, z, mu, logvar, iw=None):
    """Shared launcher of :func:`gaussian_bwd_kernel`:
    ``(dz [M, N, Z], dmu [N, Z], dlogvar [N, Z])`` for ``grad [M, N]`` of ``log N(z; mu,
    exp(logvar))``, or with ``iw = (grad_bound, grad_log_w, log_w, bound)`` for the IWAE log
    weights' ``log N(z; 0, I) - log N(z; mu, exp(logvar))`` (see :func:`iw_grad`).

    The samples are split over ``S`` programs per column block (about twice
    :func:`min_programs` in all); their partial sums ``[S, N, Z]`` are added by one more launch.
    """
    M, N, Z = z.shape
    NZ = N * Z
    dz = torch.empty((M, N, Z), dtype=z.dtype, device=z.device)
    BLOCK_C = min(triton.next_power_of_2(max(NZ, 1)), 128)
    BLOCK_M = min(triton.next_power_of_2(max(M, 1)), TILE // BLOCK_C)  # samples per step
    col_blocks = triton.cdiv(NZ, BLOCK_C)
    target = 2 * min_programs(z)
    S = max(min(triton.cdiv(M, BLOCK_M), triton.cdiv(target, max(col_blocks, 1))), 1)
    m_per = triton.cdiv(triton.cdiv(max(M, 1), S), BLOCK_M) * BLOCK_M
    S = max(triton.cdiv(M, m_per), 1)
    pmu = torch.empty((S, N, Z), dtype=z.dtype, device=z.device)
    plv = torch.empty((S, N, Z), dtype=z.dtype, device=z.device)
    ptrs, has_gb, has_gl = iw_pointers(iw, z)
    if iw is None:
        ptrs = (grad,) + ptrs[1:]
    if NZ > 0:
        gaussian_bwd_kernel[(col_blocks, S)](
            *ptrs, z, mu, logvar, dz, pmu, plv, M, N, Z, m_per, BLOCK_M=BLOCK_M,
            BLOCK_C=BLOCK_C, IWAE=iw is not None, HAS_GB=has_gb, HAS_GL=has_gl)
    if S == 1:
        return dz, pmu[0], plv[0]
    dmu = torch.empty((N, Z), dtype=z.dtype, device=z.device)
    dlogvar = torch.empty((N, Z), dtype=z.dtype, device=z.device)
    if NZ > 0:
        _sum_splits_kernel[(triton.cdiv(NZ, 1024),)](pmu, plv, dmu, dlogvar, S, NZ, BLOCK=1024)
    return dz, dmu, dlogvar


@on_input_device
def gaussian_log_prob_fwd(z, mu, logvar):
    """``z [M, N, Z]``, ``mu, logvar [N, Z]`` -> ``log N(z; mu, exp(logvar))`` ``[M, N]``."""
    M, N, Z = z.shape
    out = torch.empty((M, N), dtype=z.dtype, device=z.device)
    R = M * N
    if R == 0:
        return out
    BLOCK_R, BLOCK_Z = row_blocks(R, Z, max_cols=64, programs=min_programs(z))
    _gaussian_fwd_kernel[(triton.cdiv(R, BLOCK_R),)](
        z, mu, logvar, out, R, N, Z, BLOCK_R=BLOCK_R, BLOCK_Z=BLOCK_Z)
    return out


@on_input_device
def gaussian_log_prob_bwd(grad, z, mu, logvar):
    """``grad [M, N]`` -> ``(dz [M, N, Z], dmu [N, Z], dlogvar [N, Z])``."""
    return gaussian_log_prob_bwd_launch(grad, z, mu, logvar)
