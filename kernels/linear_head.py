"""A decoder's output layer fused with a likelihood term, and its gradients: the kernels shared
by the three fused heads (no launchers of its own).

For ``h [R, H]``, ``weight [D, H]``, ``bias [D]`` (or None) and ``x [N, D]`` (row r of h pairs
with row ``r % N`` of x), with the logits ``l = h @ weight^T + bias``:
``out[r] = sum_d term(l[r, d], x[r % N, d])``, e.g. the Bernoulli ``x l - softplus(l)``. With
``dl = grad[r] dterm/dl`` (Bernoulli: ``x - sigmoid(l)``): ``dh = dl @ weight``,
``dweight = dl^T @ h``, ``dbias = sum_r dl``.

The kernels are generic over the likelihood, a ``tl.constexpr`` ``LIK``: :data:`BERNOULLI` (the
launchers of :mod:`.linear_bernoulli_log_prob`), :data:`CONTINUOUS_BERNOULLI`
(:mod:`.linear_continuous_bernoulli_log_prob`) and :data:`GAUSSIAN`
(:mod:`.linear_gaussian_log_prob`, which adds the log-variance's gradient), each a per-element
term of the logits and ``x`` (and the log-variance ``logvar [N, D]``, paired like x) and its
derivative ``dl``; the tiling below is the same for all three.

The ``[R, D]`` logits are never stored: every kernel remakes the ``[BLOCK_R, BLOCK_D]`` tile it
needs from ``h`` and ``weight`` (a matmul over H in ``BLOCK_H`` chunks) and uses it at once.

* Forward: a program per ``BLOCK_R`` rows loops over D tiles and sums the Bernoulli term per row.
* ``dh``: a program per (``BLOCK_R`` rows, ``BLOCK_HO`` columns of H) loops over D tiles,
  accumulating ``dl @ weight[tile, cols]``. For ``H > BLOCK_HO`` the logits are remade once per
  H block.
* ``dweight``, ``dbias``: reductions over rows, done without atomics (deterministic). A program
  per (``BLOCK_D`` rows of weight, ``BLOCK_HO`` columns, split s) sweeps the row blocks
  ``s, s + S, s + 2S, ...`` and writes its partial sums to ``[S, D, H]`` and ``[S, D]``, which
  torch sums over s afterwards (S = 1 writes dweight and dbias directly). S is chosen to give
  about :func:`min_programs` programs (two per SM on CUDA), so the temporary holds at most about
  ``max(2 D H, programs * BLOCK_D * BLOCK_HO)`` elements, whatever R.

float32 matmuls are ``tl.dot`` with ``input_precision="ieee"`` (exact float32 products, FMA
units) unless the user allows TF32 (``torch.set_float32_matmul_precision("high")`` or
``"medium"``, as for torch's own matmuls): then ``"tf32"``, on the tensor cores, at about 1e-3
relative error in the logits. Block dims are at least 16, the minimum of
``tl.dot`` in Triton 3.0 (padding is masked). float64 takes a broadcast product summed over K,
since ``tl.dot`` has no float64 support on NVIDIA before recent Triton releases; its tiles are
smaller to keep the ``[M, K, N]`` product in registers.
"""
import torch
import triton
import triton.language as tl

from .common import MIN_PROGRAMS, bernoulli_term, min_programs, sigmoid_pair
from .continuous_bernoulli_log_prob import cb_grad, cb_term
from .gaussian_log_prob import LOG_2PI_HI, LOG_2PI_LO

# LIK, the likelihood of the kernels' term: sum_d term(l, x) per row
BERNOULLI = 0  # x l - softplus(l), dl = x - sigmoid(l)
CONTINUOUS_BERNOULLI = 1  # (x - 1/2) l - log(sinh(l/2) / (l/2)), dl = x - mean(l)
GAUSSIAN = 2  # log N(x; l, exp(lv)) = -(t^2 + lv + log 2 pi) / 2, t = (x - l) exp(-lv/2),
#               dl = t exp(-lv/2) (the log-variance's gradient: .linear_gaussian_log_prob)


@triton.jit
def _mm(a, b, acc, DOT: tl.constexpr):
    """``acc + a @ b`` for ``a [M, K]``, ``b [K, N]`` by ``DOT``: ``3``: ``tl.dot`` of bfloat16/
    float16 operands as they are (tensor cores, float32 ``acc``); ``2``: in TF32; ``1``: in exact
    float32 (operands widened first: bfloat16 products are exact in float32, and this is how the
    interpreter runs them); ``0`` (float64): ``sum_k a[:, k, None] * b[None, k, :]``."""
    if DOT == 0:
        return acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    elif DOT == 3:
        return tl.dot(a, b, acc)
    elif DOT == 2:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="tf32")
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")



@triton.jit
def logits_tile(h_ptr, w_ptr, b_ptr, rows, rmask, cols, cmask, H, HAS_BIAS: tl.constexpr,
                 BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
                 DOT: tl.constexpr):
    """``l = h[rows] @ weight[cols]^T + bias[cols]``: ``[BLOCK_R, BLOCK_D]``, summing over H in
    ``BLOCK_H`` chunks (masked entries of h and weight load as 0)."""
    h_row = rows.to(tl.int64)[:, None] * H
    w_row = cols.to(tl.int64)[:, None] * H
    if DOT == 0:  # the accumulation dtype: float64, else float32 (bfloat16/float16 inputs too)
        acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_H):
        ks = k0 + tl.arange(0, BLOCK_H)[None, :]
        hk = tl.load(h_ptr + h_row + ks, mask=rmask[:, None] & (ks < H), other=0.0)
        wk = tl.load(w_ptr + w_row + ks, mask=cmask[:, None] & (ks < H), other=0.0)
        acc = _mm(hk, tl.trans(wk), acc, DOT)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=cmask, other=0.0).to(acc.dtype)[None, :]
    return acc


@triton.jit
def head_term(l, x, lv_ptr, offs, mask, LIK: tl.constexpr):
    """The likelihood's term per element of a logits tile ``l`` with its data ``x`` (the
    Gaussian reads its log-variance at ``offs``, the offsets of ``x``)."""
    if LIK == 0:
        return bernoulli_term(l, x)
    elif LIK == 1:
        return cb_term(l, x)
    else:
        lv = tl.load(lv_ptr + offs, mask=mask, other=0.0)
        t = (x - l) * tl.exp(-0.5 * lv)
        return -0.5 * (t * t + lv + LOG_2PI_HI + LOG_2PI_LO)


@triton.jit
def _dlogits_tile(g_ptr, h_ptr, w_ptr, b_ptr, x_ptr, lv_ptr, rows, rmask, cols, cmask, N, D, H,
                  HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
                  BLOCK_H: tl.constexpr, DOT: tl.constexpr, LIK: tl.constexpr):
    """``dl = grad[rows] dterm/dl`` of the remade logits tile (Bernoulli: ``x - sigmoid(l)``):
    ``[BLOCK_R, BLOCK_D]``, 0 outside ``rmask x cmask``."""
    l = logits_tile(h_ptr, w_ptr, b_ptr, rows, rmask, cols, cmask, H, HAS_BIAS,
                     BLOCK_R, BLOCK_D, BLOCK_H, DOT)
    mask = rmask[:, None] & cmask[None, :]
    offs = (rows % N).to(tl.int64)[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    g = tl.load(g_ptr + rows, mask=rmask, other=0.0)[:, None]
    if LIK == 0:
        s_pos, s_neg = sigmoid_pair(l)
        # x - sigmoid(l), written so that 1 - sigmoid(l) does not cancel for large l
        dl = x * s_neg - (1.0 - x) * s_pos
    elif LIK == 1:
        dl = cb_grad(l, x)
    else:
        inv_std = tl.exp(-0.5 * tl.load(lv_ptr + offs, mask=mask, other=0.0))
        dl = (x - l) * inv_std * inv_std
    return tl.where(mask, g * dl, 0.0)


@triton.jit
def _lb_fwd_kernel(h_ptr, w_ptr, b_ptr, x_ptr, lv_ptr, out_ptr, R, N, D, H,
                   HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_H: tl.constexpr, DOT: tl.constexpr, LIK: tl.constexpr):
    """Rows ``pid * BLOCK_R ...``: ``out[r] = sum_d term(l, x)`` (Bernoulli: ``x l -
    softplus(l)``), one D tile at a time."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    x_row = (rows % N).to(tl.int64)[:, None] * D
    total = tl.zeros([BLOCK_R], dtype=out_ptr.dtype.element_ty)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        cmask = cols < D
        l = logits_tile(h_ptr, w_ptr, b_ptr, rows, rmask, cols, cmask, H, HAS_BIAS,
                         BLOCK_R, BLOCK_D, BLOCK_H, DOT)
        mask = rmask[:, None] & cmask[None, :]
        offs = x_row + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        total += tl.sum(tl.where(mask, head_term(l, x, lv_ptr, offs, mask, LIK), 0.0), axis=1)
    tl.store(out_ptr + rows, total, mask=rmask)


@triton.jit
def _lb_dh_kernel(g_ptr, h_ptr, w_ptr, b_ptr, x_ptr, lv_ptr, dh_ptr, R, N, D, H,
                  HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_HO: tl.constexpr, DOT: tl.constexpr,
                  LIK: tl.constexpr):
    """Program ``(i, j)``: ``dh[rows, hs] = sum_d dl[rows, d] weight[d, hs]`` for rows
    ``i * BLOCK_R ...`` and H columns ``hs = j * BLOCK_HO ...``."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    hs = tl.program_id(1) * BLOCK_HO + tl.arange(0, BLOCK_HO)
    hmask = hs < H
    acc = tl.zeros([BLOCK_R, BLOCK_HO], dtype=g_ptr.dtype.element_ty)  # grad: float32/64
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        cmask = cols < D
        dl = _dlogits_tile(g_ptr, h_ptr, w_ptr, b_ptr, x_ptr, lv_ptr, rows, rmask, cols, cmask,
                           N, D, H, HAS_BIAS, BLOCK_R, BLOCK_D, BLOCK_H, DOT, LIK)
        w = tl.load(w_ptr + cols.to(tl.int64)[:, None] * H + hs[None, :],
                    mask=cmask[:, None] & hmask[None, :], other=0.0)
        acc = _mm(dl.to(w.dtype), w, acc, DOT)
    tl.store(dh_ptr + rows.to(tl.int64)[:, None] * H + hs[None, :], acc.to(dh_ptr.dtype.element_ty),
             mask=rmask[:, None] & hmask[None, :])


@triton.jit
def _lb_dw_kernel(g_ptr, h_ptr, w_ptr, b_ptr, x_ptr, lv_ptr, dw_ptr, db_ptr, R, N, D, H, SPLITS,
                  HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_HO: tl.constexpr, DOT: tl.constexpr,
                  LIK: tl.constexpr):
    """Program ``(i, j, s)``, for weight rows ``cols = i * BLOCK_D ...`` and columns
    ``hs = j * BLOCK_HO ...``: the partial sums over the row blocks ``s, s + SPLITS, ...``
    ``dw[s, cols, hs] = sum_r dl[r, cols] h[r, hs]`` and (if ``j = 0``)
    ``db[s, cols] = sum_r dl[r, cols]``."""
    acc_ty = dw_ptr.dtype.element_ty
    cols = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    hs = tl.program_id(1) * BLOCK_HO + tl.arange(0, BLOCK_HO)
    hmask = hs < H
    split = tl.program_id(2)
    acc = tl.zeros([BLOCK_D, BLOCK_HO], dtype=acc_ty)
    db = tl.zeros([BLOCK_D], dtype=acc_ty)
    for r0 in range(0, R, SPLITS * BLOCK_R):
        rows = r0 + split * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < R
        dl = _dlogits_tile(g_ptr, h_ptr, w_ptr, b_ptr, x_ptr, lv_ptr, rows, rmask, cols, cmask,
                           N, D, H, HAS_BIAS, BLOCK_R, BLOCK_D, BLOCK_H, DOT, LIK)
        hb = tl.load(h_ptr + rows.to(tl.int64)[:, None] * H + hs[None, :],
                     mask=rmask[:, None] & hmask[None, :], other=0.0)
        acc = _mm(tl.trans(dl).to(hb.dtype), hb, acc, DOT)
        db += tl.sum(dl, axis=0)
    base = split.to(tl.int64) * D
    tl.store(dw_ptr + (base + cols.to(tl.int64))[:, None] * H + hs[None, :], acc,
             mask=cmask[:, None] & hmask[None, :])
    if tl.program_id(1) == 0:
        tl.store(db_ptr + base + cols, db, mask=cmask)


def _warps(block_ho):
    """8 warps for the wide ``[*, BLOCK_HO]`` accumulators of the backward, else 4."""
    return 8 if block_ho >= 64 else 4


def dot_mode(dtype, on_gpu):
    """``DOT`` of :func:`_mm` for inputs of ``dtype``: 0 for float64; 3 for bfloat16/float16 on
    a GPU; else 2 where the user allows TF32 in float32 matmuls
    (``torch.get_float32_matmul_precision() != "highest"``) and 1 where not."""
    if dtype == torch.float64:
        return 0
    if dtype in (torch.bfloat16, torch.float16) and on_gpu:
        return 3
    return 1 if torch.get_float32_matmul_precision() == "highest" else 2


def _configs(R, D, H, dtype, programs=MIN_PROGRAMS, on_gpu=False):
    """Launch parameters ``(fwd, dh, dw)`` of the three kernels (``BLOCK_*``, ``DOT``,
    ``num_warps``, ``num_stages``).

    Block dims are powers of two of at least 16 (``tl.dot``'s minimum in Triton 3.0), no larger
    than the shape needs. float32 ``tl.dot`` with ``input_precision="ieee"`` runs on the FMA units
    and holds each thread's rows of A and columns of B in registers, so the tiles are small:
    with these (and one pipeline stage) the kernels take at most 128 registers on sm_90. float32
    ``BLOCK_R`` shrinks for small R to leave about ``programs`` row programs. float64 (no
    ``tl.dot``) keeps its ``[M, K, N]`` broadcast products at 16 x 16 x ``BLOCK_HO`` with
    ``BLOCK_HO <= 64`` (128 spilled in ``dweight`` on sm_90 once the JIT's alignment
    specialization is applied: ``bench/compiled_kernels.py``).
    """
    fit = lambda n, cap: min(max(triton.next_power_of_2(max(n, 1)), 16), cap)  # noqa: E731
    if dtype == torch.float64:
        block_r, d_fwd, d_dw, ho_dh, ho_dw = 16, 16, 16, fit(H, 64), fit(H, 64)
    else:
        block_r = fit(triton.cdiv(R, programs), 32)
        d_fwd, d_dw, ho_dh, ho_dw = fit(D, 32), fit(D, 32), fit(H, 128), fit(H, 128)
    dot = dot_mode(dtype, on_gpu)
    common = dict(BLOCK_H=16, DOT=dot, num_stages=1)
    fwd = dict(common, BLOCK_R=block_r, BLOCK_D=d_fwd, num_warps=4)
    dh = dict(common, BLOCK_R=block_r, BLOCK_D=16, BLOCK_HO=ho_dh, num_warps=_warps(ho_dh))
    dw = dict(common, BLOCK_R=16, BLOCK_D=d_dw, BLOCK_HO=ho_dw, num_warps=_warps(ho_dw))
    return fwd, dh, dw


def bias_args(bias, weight):
    """``(pointer, HAS_BIAS)``: an unused pointer (weight's) stands in for a missing bias."""
    return (weight, False) if bias is None else (bias, True)


def head_fwd(lik, h, weight, bias, x, logvar=None):
    """``out [R]``, ``sum_d term(l, x)`` of the likelihood ``lik`` (:data:`BERNOULLI`, ...) with
    ``l = h @ weight^T + bias``; ``logvar [N, D]`` for :data:`GAUSSIAN` (else None)."""
    R, H = h.shape
    D, N = weight.shape[0], x.shape[0]
    out = torch.empty((R,), dtype=x.dtype, device=h.device)
    if R == 0:
        return out
    cfg, _, _ = _configs(R, D, H, h.dtype, min_programs(h), h.is_cuda)
    b, has_bias = bias_args(bias, weight)
    lv = x if logvar is None else logvar  # an unused pointer stands in for a missing logvar
    _lb_fwd_kernel[(triton.cdiv(R, cfg["BLOCK_R"]),)](
        h, weight, b, x, lv, out, R, N, D, H, HAS_BIAS=has_bias, LIK=lik, **cfg)
    return out


def head_bwd(lik, grad, h, weight, bias, x, logvar=None):
    """``(dh [R, H], dweight [D, H], dbias [D])`` of :func:`head_fwd` for ``grad [R]``, with
    ``dl = grad[r] dterm/dl``: ``dh = dl @ weight``, ``dweight = dl^T @ h``, ``dbias = sum_r dl``
    (returned also when bias is None)."""
    R, H = h.shape
    D, N = weight.shape[0], x.shape[0]
    dh = torch.empty_like(h)
    if R == 0 or D == 0:
        return dh.zero_(), torch.zeros_like(weight), weight.new_zeros((D,))
    programs = min_programs(h)
    cfg_dh, cfg_dw = _configs(R, D, H, h.dtype, programs, h.is_cuda)[1:]
    b, has_bias = bias_args(bias, weight)
    args = (grad, h, weight, b, x, x if logvar is None else logvar)
    if H > 0:
        grid = (triton.cdiv(R, cfg_dh["BLOCK_R"]), triton.cdiv(H, cfg_dh["BLOCK_HO"]))
        _lb_dh_kernel[grid](*args, dh, R, N, D, H, HAS_BIAS=has_bias, LIK=lik, **cfg_dh)
    # dweight/dbias: split the row blocks S ways for about `programs` programs in all
    grid = (triton.cdiv(D, cfg_dw["BLOCK_D"]), max(triton.cdiv(H, cfg_dw["BLOCK_HO"]), 1))
    splits = min(triton.cdiv(R, cfg_dw["BLOCK_R"]), triton.cdiv(programs, grid[0] * grid[1]))
    # partial sums in the accumulation dtype (x's), cast once at the end for bf16/fp16 weights
    dw = torch.empty((splits, D, H), dtype=x.dtype, device=weight.device)
    db = torch.empty((splits, D), dtype=x.dtype, device=weight.device)
    _lb_dw_kernel[grid + (splits,)](*args, dw, db, R, N, D, H, splits, HAS_BIAS=has_bias,
                                    LIK=lik, **cfg_dw)
    dw, db = (dw[0], db[0]) if splits == 1 else (dw.sum(0), db.sum(0))
    return dh, dw.to(weight.dtype), db.to(weight.dtype)
