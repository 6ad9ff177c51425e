"""Continuous Bernoulli log-density from logits, summed over the last dim.

``out[m, n] = sum_d x l - softplus(l) + log C(l)`` with ``C(l) = l / tanh(l / 2)`` for
``logits [M, N, D]``, ``x [N, D]``, evaluated as ``(x - 1/2) l - log(sinh(l/2) / (l/2))``
(docs/design.md §1.13); its gradient is ``dl = grad[m, n] * (x - mean(l))`` with the mean
``1 / (1 - exp(-l)) - 1 / l``. The layout is that of :mod:`.bernoulli_log_prob`: a program takes
``BLOCK_R`` rows of the flattened ``[M * N, D]`` logits and loops over D in ``BLOCK_D`` tiles.

Per element, with ``a = |l|`` and ``e = exp(-a)``: for ``a < s`` the series
``(x - 1/2) l - sum_n d_n l^2n`` and ``(x - 1/2) - sum_n c_n l^(2n-1)``
(``d_n = B_2n / (2n (2n)!)``, ``c_n = 2n d_n``); for ``a >= s``
``x l - max(l, 0) + log(a / (1 - e))`` and ``x - [l >= 0] + sign(l) (1/a - e / (1 - e))``.
``s = 1`` with 11 terms in float64, ``s = 2`` with 8 terms in float32 (``CB_SWITCH`` of
fastair/backends/reference.py, whose ``CB_VALUE_SERIES``/``CB_GRAD_SERIES`` the literals below
repeat).
"""
import torch
import triton
import triton.language as tl

from .common import min_programs, on_input_device, row_blocks

# The launchers; fastair.backends.triton collects them.
__all__ = ["continuous_bernoulli_log_prob_fwd", "continuous_bernoulli_log_prob_bwd"]


@triton.jit
def _value_series(t):
    """``sum_n d_n t^(n-1)``, ``t = l^2``: 11 terms in float64, 8 in float32."""
    if t.dtype == tl.float64:
        p = t * 2.5040921947091955e-19 - 1.087434349279031e-17
        p = p * t + 4.770034475709914e-16
        p = p * t - 2.1185501852016142e-14
        p = p * t + 9.55895466477477e-13
    else:
        p = t * -2.1185501852016142e-14 + 9.55895466477477e-13
    p = p * t - 4.403491782239578e-11
    p = p * t + 2.08767569878681e-09
    p = p * t - 1.033399470899471e-07
    p = p * t + 5.5114638447971785e-06
    p = p * t - 0.00034722222222222224
    p = p * t + 0.041666666666666664
    return p


@triton.jit
def _grad_series(t):
    """``sum_n c_n t^(n-1)``, ``t = l^2``: 11 terms in float64, 8 in float32."""
    if t.dtype == tl.float64:
        p = t * 5.5090028283602295e-18 - 2.174868698558062e-16
        p = p * t + 8.586062056277845e-15
        p = p * t - 3.3896802963225827e-13
        p = p * t + 1.3382536530684679e-11
    else:
        p = t * -3.3896802963225827e-13 + 1.3382536530684679e-11
    p = p * t - 5.284190138687493e-10
    p = p * t + 2.08767569878681e-08
    p = p * t - 8.267195767195768e-07
    p = p * t + 3.306878306878307e-05
    p = p * t - 0.001388888888888889
    p = p * t + 0.08333333333333333
    return p


@triton.jit
def _branches(l):
    """``(small, ls, ac, e)``: where the series is used, ``l`` there (0 elsewhere), ``|l|``
    clamped to ``>= s`` for the closed form, and ``exp(-ac) <= exp(-s)``."""
    a = tl.abs(l)
    if l.dtype == tl.float64:
        small = a < 1.0
        ac = tl.maximum(a, 1.0)
    else:
        small = a < 2.0
        ac = tl.maximum(a, 2.0)
    ls = tl.where(small, l, 0.0)
    return small, ls, ac, tl.exp(-ac)


@triton.jit
def cb_term(l, x):
    """The log-density of one element (``l``, ``x`` in the accumulation dtype)."""
    small, ls, ac, e = _branches(l)
    l2 = ls * ls
    series = (x - 0.5) * ls - l2 * _value_series(l2)
    closed = x * l - tl.maximum(l, 0.0) + tl.log(ac / (1.0 - e))
    return tl.where(small, series, closed)


@triton.jit
def cb_grad(l, x):
    """Its derivative with respect to ``l``: ``x - mean(l)``, exactly ``x - 1/2`` at 0."""
    small, ls, ac, e = _branches(l)
    series = (x - 0.5) - ls * _grad_series(ls * ls)
    m = 1.0 / ac - e / (1.0 - e)  # the mean at -|l|, in (0, 1/2)
    closed = tl.where(l >= 0.0, (x - 1.0) + m, x - m)
    return tl.where(small, series, closed)


@triton.jit
def _cb_fwd_kernel(l_ptr, x_ptr, out_ptr, R, N, D, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    acc_ty = x_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    l_row = rows.to(tl.int64)[:, None] * D
    x_row = (rows % N).to(tl.int64)[:, None] * D
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=acc_ty)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)[None, :]
        mask = rmask[:, None] & (cols < D)
        l = tl.load(l_ptr + l_row + cols, mask=mask, other=0.0).to(acc_ty)
        x = tl.load(x_ptr + x_row + cols, mask=mask, other=0.0)
        acc += tl.where(mask, cb_term(l, x), 0.0)
    tl.store(out_ptr + rows, tl.sum(acc, axis=1), mask=rmask)


@triton.jit
def _cb_bwd_kernel(g_ptr, l_ptr, x_ptr, dl_ptr, R, N, D,
                   BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """``dl = g (x - mean(l))`` per row, ``g`` from ``grad [R]``."""
    acc_ty = x_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    g = tl.load(g_ptr + rows, mask=rmask, other=0.0)[:, None]
    l_row = rows.to(tl.int64)[:, None] * D
    x_row = (rows % N).to(tl.int64)[:, None] * D
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)[None, :]
        mask = rmask[:, None] & (cols < D)
        l = tl.load(l_ptr + l_row + cols, mask=mask, other=0.0).to(acc_ty)
        x = tl.load(x_ptr + x_row + cols, mask=mask, other=0.0)
        dl = g * cb_grad(l, x)
        tl.store(dl_ptr + l_row + cols, dl.to(dl_ptr.dtype.element_ty), mask=mask)


@on_input_device
def continuous_bernoulli_log_prob_fwd(logits, x):
    """``logits [M, N, D]``, ``x [N, D]`` -> ``[M, N]`` in x's dtype (the accumulation dtype)."""
    M, N, D = logits.shape
    out = torch.empty((M, N), dtype=x.dtype, device=logits.device)
    R = M * N
    if R == 0:
        return out
    BLOCK_R, BLOCK_D = row_blocks(R, D, programs=min_programs(logits))
    _cb_fwd_kernel[(triton.cdiv(R, BLOCK_R),)](
        logits, x, out, R, N, D, BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D)
    return out


@on_input_device
def continuous_bernoulli_log_prob_bwd(grad, logits, x):
    """``grad [M, N]``, ``logits [M, N, D]``, ``x [N, D]`` -> ``dlogits [M, N, D]`` (in the
    logits' dtype)."""
    M, N, D = logits.shape
    dlogits = torch.empty((M, N, D), dtype=logits.dtype, device=logits.device)
    R = M * N
    if R == 0 or D == 0:
        return dlogits
    BLOCK_R, BLOCK_D = row_blocks(R, D, programs=min_programs(logits))
    _cb_bwd_kernel[(triton.cdiv(R, BLOCK_R),)](
        grad, logits, x, dlogits, R, N, D, BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D)
    return dlogits
