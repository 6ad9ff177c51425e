"""Capped weight norm (WNI) over the rows of ``v [O, I]``, and its gradient.

With ``n_i = ||v_i||`` and ``c_i = H sigmoid(u_i)``: ``w_i = s_i v_i``, ``s_i = c_i / n_i`` where
the cap is active (``n_i > c_i``) and 1 elsewhere, so a zero row stays zero without an epsilon.
Backward, where active: ``dv_i = s_i (dw_i - v_i (v_i.dw_i) / n_i^2)`` and
``du_i = (v_i.dw_i / n_i) c_i sigmoid(-u_i)``; elsewhere (the tie included) ``dv_i = dw_i``,
``du_i = 0``.

Row-parallel: a program takes ``BLOCK_R`` rows. A row of up to ``ONE_PASS_MAX`` elements is held
in registers, so the forward reads ``v`` once and the backward reads ``(v, dw)`` once; longer rows
are swept twice in ``BLOCK_I`` tiles (reduction, then scaling). The backward does not read ``v``
for inactive rows.
"""
import struct

import torch
import triton
import triton.language as tl

from .common import MIN_PROGRAMS, TILE, min_programs, on_input_device, sigmoid_pair

# The launchers; fastair.backends.triton collects them.
__all__ = ["capped_weight_norm_fwd", "capped_weight_norm_bwd"]

ONE_PASS_MAX = 8192  # longest row kept in registers (16 elements a thread with 16 warps)
LOOP_BLOCK = 2048  # tile of the two-sweep kernels for longer rows


@triton.jit
def _cap(u_ptr, rows, rmask, H_bits):
    """``(c, sigmoid(-u))`` for ``rows``, with ``c = H sigmoid(u)`` in u's dtype. ``H_bits`` is the
    float64 bit pattern of H (Triton passes float scalars as float32), so float64 sees H exactly."""
    acc_ty = u_ptr.dtype.element_ty
    H = H_bits.to(tl.int64).to(tl.float64, bitcast=True).to(acc_ty)
    u = tl.load(u_ptr + rows, mask=rmask, other=0.0)
    sig, sig_neg = sigmoid_pair(u)
    return H * sig, sig_neg


@triton.jit(do_not_specialize=["H_bits"])
def _cwn_fwd_kernel(v_ptr, u_ptr, w_ptr, norm_ptr, O, I, H_bits,
                    BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr, ONE_PASS: tl.constexpr):
    """Rows ``pid * BLOCK_R ...``: ``norm = ||v_i||`` and ``w_i = s_i v_i``."""
    acc_ty = u_ptr.dtype.element_ty
    out_ty = w_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < O
    base = rows.to(tl.int64)[:, None] * I
    if ONE_PASS:
        cols = tl.arange(0, BLOCK_I)[None, :]
        mask = rmask[:, None] & (cols < I)
        v = tl.load(v_ptr + base + cols, mask=mask, other=0.0).to(acc_ty)
        n = tl.sqrt(tl.sum(v * v, axis=1))
    else:
        acc = tl.zeros([BLOCK_R, BLOCK_I], dtype=acc_ty)
        for i0 in range(0, I, BLOCK_I):
            cols = i0 + tl.arange(0, BLOCK_I)[None, :]
            mask = rmask[:, None] & (cols < I)
            x = tl.load(v_ptr + base + cols, mask=mask, other=0.0).to(acc_ty)
            acc += x * x
        n = tl.sqrt(tl.sum(acc, axis=1))
    c, _ = _cap(u_ptr, rows, rmask, H_bits)
    active = n > c  # false for a zero row (c >= 0) and for a NaN norm, as in the reference
    s = tl.where(active, c / tl.where(active, n, 1.0), 1.0)[:, None]
    tl.store(norm_ptr + rows, n, mask=rmask)
    if ONE_PASS:
        tl.store(w_ptr + base + cols, (s * v).to(out_ty), mask=mask)
    else:
        for i0 in range(0, I, BLOCK_I):
            cols = i0 + tl.arange(0, BLOCK_I)[None, :]
            mask = rmask[:, None] & (cols < I)
            x = tl.load(v_ptr + base + cols, mask=mask, other=0.0).to(acc_ty)
            tl.store(w_ptr + base + cols, (s * x).to(out_ty), mask=mask)


@triton.jit(do_not_specialize=["H_bits"])
def _cwn_bwd_kernel(g_ptr, v_ptr, u_ptr, norm_ptr, dv_ptr, du_ptr, O, I, H_bits,
                    BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr, ONE_PASS: tl.constexpr):
    """Rows ``pid * BLOCK_R ...``: ``dv_i = s_i dw_i - k_i v_i`` with
    ``k_i = s_i (v_i.dw_i) / n_i^2`` and ``du_i``; ``v`` is loaded only for active rows (0
    elsewhere gives ``dv_i = dw_i`` exactly)."""
    acc_ty = u_ptr.dtype.element_ty
    out_ty = dv_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < O
    base = rows.to(tl.int64)[:, None] * I
    n = tl.load(norm_ptr + rows, mask=rmask, other=0.0)
    c, sig_neg = _cap(u_ptr, rows, rmask, H_bits)
    active = n > c
    vmask = (rmask & active)[:, None]
    if ONE_PASS:
        cols = tl.arange(0, BLOCK_I)[None, :]
        mask = rmask[:, None] & (cols < I)
        g = tl.load(g_ptr + base + cols, mask=mask, other=0.0).to(acc_ty)
        v = tl.load(v_ptr + base + cols, mask=mask & vmask, other=0.0).to(acc_ty)
        dot = tl.sum(v * g, axis=1)
    else:
        acc = tl.zeros([BLOCK_R, BLOCK_I], dtype=acc_ty)
        for i0 in range(0, I, BLOCK_I):
            cols = i0 + tl.arange(0, BLOCK_I)[None, :]
            mask = vmask & (cols < I)
            x = tl.load(v_ptr + base + cols, mask=mask, other=0.0).to(acc_ty)
            y = tl.load(g_ptr + base + cols, mask=mask, other=0.0).to(acc_ty)
            acc += x * y
        dot = tl.sum(acc, axis=1)
    n_safe = tl.where(active, n, 1.0)
    s = tl.where(active, c / n_safe, 1.0)
    proj = dot / n_safe  # v.dw / n, 0 for inactive rows
    k = (s * proj / n_safe)[:, None]
    s = s[:, None]
    tl.store(du_ptr + rows, tl.where(active, proj * c * sig_neg, 0.0), mask=rmask)
    if ONE_PASS:
        tl.store(dv_ptr + base + cols, (s * g - k * v).to(out_ty), mask=mask)
    else:
        for i0 in range(0, I, BLOCK_I):
            cols = i0 + tl.arange(0, BLOCK_I)[None, :]
            mask = rmask[:, None] & (cols < I)
            y = tl.load(g_ptr + base + cols, mask=mask, other=0.0).to(acc_ty)
            x = tl.load(v_ptr + base + cols, mask=mask & vmask, other=0.0).to(acc_ty)
            tl.store(dv_ptr + base + cols, (s * y - k * x).to(out_ty), mask=mask)


def _launch_config(O, I, programs=MIN_PROGRAMS):
    """``(grid, BLOCK_R, BLOCK_I, ONE_PASS, num_warps)`` for ``v [O, I]``.

    Rows of up to ``ONE_PASS_MAX`` elements take one block; short rows are packed ``BLOCK_R`` to a
    tile of ``TILE`` elements while leaving about ``programs`` programs (:func:`min_programs`).
    Warps grow with the tile so that a thread holds at most 16 elements of each row.
    """
    if I <= ONE_PASS_MAX:
        block_i = triton.next_power_of_2(max(I, 1))
        want = triton.next_power_of_2(max(triton.cdiv(O, programs), 1))
        block_r = max(min(TILE // block_i, want), 1)
        one_pass = True
    else:
        block_r, block_i, one_pass = 1, LOOP_BLOCK, False
    num_warps = min(max(block_r * block_i // 512, 4), 16)
    return (triton.cdiv(O, block_r),), block_r, block_i, one_pass, num_warps


def _h_bits(H):
    """The float64 bit pattern of ``H`` as a Python int (see :func:`_cap`)."""
    return struct.unpack("<q", struct.pack("<d", float(H)))[0]


@on_input_device
def capped_weight_norm_fwd(v, u, H):
    """``v [O, I]``, ``u [O]``, float ``H > 0`` -> ``(w [O, I]`` in v's dtype, ``norm [O]`` in u's
    dtype): ``w_i = s_i v_i``, ``s_i = min(1, H sigmoid(u_i) / ||v_i||)``, ``norm_i = ||v_i||``."""
    O, I = v.shape
    w = torch.empty_like(v)
    norm = torch.empty((O,), dtype=u.dtype, device=v.device)
    if O == 0:
        return w, norm
    grid, block_r, block_i, one_pass, num_warps = _launch_config(O, I, min_programs(v))
    _cwn_fwd_kernel[grid](v, u, w, norm, O, I, _h_bits(H), BLOCK_R=block_r, BLOCK_I=block_i,
                          ONE_PASS=one_pass, num_warps=num_warps)
    return w, norm


@on_input_device
def capped_weight_norm_bwd(grad_w, v, u, norm, H):
    """``grad_w, v [O, I]``, ``u, norm [O]`` (norm from the forward) -> ``(dv [O, I]`` in v's dtype,
    ``du [O]`` in u's dtype); see the module docstring for the equations."""
    O, I = v.shape
    dv = torch.empty_like(v)
    du = torch.empty_like(u)
    if O == 0:
        return dv, du
    grid, block_r, block_i, one_pass, num_warps = _launch_config(O, I, min_programs(v))
    _cwn_bwd_kernel[grid](grad_w, v, u, norm, dv, du, O, I, _h_bits(H), BLOCK_R=block_r,
                          BLOCK_I=block_i, ONE_PASS=one_pass, num_warps=num_warps)
    return dv, du
