"""Pieces shared by the kernels: the stable Bernoulli term and sigmoid, block sizes, device guard.

The accumulation dtype of a kernel is the element type of a pointer that is always in it
(float32, or float64 for float64 inputs); only logits may be float16/bfloat16.
"""
import functools

import torch
import triton
import triton.language as tl

# Elements of one program's [BLOCK_R, BLOCK_C] tile: 8 per thread with the default 4 warps keeps
# the float32 kernels near 50 registers on sm_90 (4096 needed ~230 and float64 spilled).
TILE = 1024
MIN_PROGRAMS = 128  # off CUDA (the interpreter): shrink BLOCK_R until a launch has about this many
PROGRAMS_PER_SM = 2  # on CUDA: about this many programs per streaming multiprocessor


@functools.lru_cache(maxsize=None)
def _sm_count(index):
    return torch.cuda.get_device_properties(index).multi_processor_count


def min_programs(t):
    """How many programs a launch on ``t``'s device should have at least: ``PROGRAMS_PER_SM``
    per SM of its GPU (264 on a 132-SM H100), ``MIN_PROGRAMS`` elsewhere."""
    if t.device.type == "cuda":
        index = t.device.index if t.device.index is not None else torch.cuda.current_device()
        return PROGRAMS_PER_SM * _sm_count(index)
    return MIN_PROGRAMS


def row_blocks(rows, cols, max_cols=128, programs=MIN_PROGRAMS):
    """``(BLOCK_R, BLOCK_C)`` for a row-parallel kernel over a ``[rows, cols]`` matrix.

    ``BLOCK_C`` is a power of two capped at ``max_cols`` (the kernel loops over the columns);
    ``BLOCK_R`` fills a tile of ``TILE`` elements but leaves about ``programs`` programs
    (:func:`min_programs` of the device).
    """
    block_c = min(triton.next_power_of_2(max(cols, 1)), max_cols)
    want = triton.next_power_of_2(max(triton.cdiv(rows, programs), 1))
    return max(min(TILE // block_c, want), 1), block_c


def on_input_device(launcher):
    """Run ``launcher`` with the current CUDA device set to that of its first tensor argument
    (Triton launches on the current device and stream)."""
    @functools.wraps(launcher)
    def wrapper(*args):
        dev = args[0].device
        if dev.type == "cuda" and dev.index != torch.cuda.current_device():
            with torch.cuda.device(dev):
                return launcher(*args)
        return launcher(*args)
    return wrapper


@triton.jit
def log1p_small(e):
    """``log(1 + e)`` for ``0 <= e <= 1``, accurate for tiny ``e``.

    float32: ``2 atanh(s)`` with ``s = e / (2 + e) <= 1/3``, the series ``2 s (1 + s^2/3 + ...
    + s^12/13)``: its first dropped term is under 2e-8 relative, and the division is the fast
    one (``div.full``, 2 ulp), so there is no accurate ``log`` and no IEEE division in the
    loop. float64: ``log(u) * e / (u - 1)``, ``u = 1 + e`` (Goldberg), and ``e`` itself where
    ``u`` rounds to 1.
    """
    if e.dtype == tl.float64:
        u = 1.0 + e
        d = u - 1.0
        tiny = d == 0.0
        return tl.where(tiny, e, tl.log(u) * (e / tl.where(tiny, 1.0, d)))
    else:
        s = tl.fdiv(e, 2.0 + e)
        s2 = s * s
        p = s2 * (1.0 / 13.0) + (1.0 / 11.0)
        p = p * s2 + (1.0 / 9.0)
        p = p * s2 + (1.0 / 7.0)
        p = p * s2 + (1.0 / 5.0)
        p = p * s2 + (1.0 / 3.0)
        p = p * s2 + 1.0
        return 2.0 * s * p


@triton.jit
def bernoulli_term(l, x):
    """``x l - softplus(l)`` with ``softplus(l) = max(l, 0) + log1p(exp(-|l|))``;
    ``x l - max(l, 0)`` is taken as ``(x - [l >= 0]) l``, exact for binary x, so ``l = 30, x = 1``
    gives ``-exp(-30)``."""
    return tl.where(l >= 0.0, (x - 1.0) * l, x * l) - log1p_small(tl.exp(-tl.abs(l)))


@triton.jit
def sigmoid_pair(l):
    """``(sigmoid(l), sigmoid(-l))`` from ``e = exp(-|l|) <= 1``: no overflow, no ``inf * 0``."""
    e = tl.exp(-tl.abs(l))
    big = 1.0 / (1.0 + e)
    small = e * big
    pos = l >= 0.0
    return tl.where(pos, big, small), tl.where(pos, small, big)


def iw_pointers(iw, fallback):
    """``((gb, gl, lw, bound), HAS_GB, HAS_GL)`` for :func:`iw_grad` from ``iw = (grad_bound or
    None, grad_log_w or None, log_w, bound)``: an absent gradient passes ``log_w`` as an unused
    pointer. ``iw=None`` (no importance weighting): ``fallback`` for every pointer."""
    if iw is None:
        return (fallback,) * 4, False, False
    gb, gl, lw, bound = iw
    return (lw if gb is None else gb, lw if gl is None else gl, lw, bound), gb is not None, \
        gl is not None


@triton.jit
def iw_grad(offs, n, mask, gb_ptr, gl_ptr, lw_ptr, bound_ptr, K,
            HAS_GB: tl.constexpr, HAS_GL: tl.constexpr):
    """``G = dL/dlog_w`` at ``offs`` of ``log_w [K, N]`` (``n``: the example of each entry)
    from the gradients of the bound ``[N]`` and of ``log_w``: ``G = grad_log_w + grad_bound[n]
    * exp(log_w - lse[n])`` with ``lse = bound + log K``, the weight 0 where ``bound`` is not
    finite (a column of -inf); the normalized importance weights, formed in the kernel."""
    lw = tl.load(lw_ptr + offs, mask=mask, other=0.0)
    g = tl.zeros_like(lw)
    if HAS_GB:
        bound = tl.load(bound_ptr + n, mask=mask, other=0.0)
        finite = tl.abs(bound) < float("inf")
        log_k = tl.log(tl.full([1], 1.0, lw.dtype) * K)
        shift = tl.where(finite, bound + log_k, 0.0)
        w = tl.exp(lw - shift) * finite.to(lw.dtype)
        g = w * tl.load(gb_ptr + n, mask=mask, other=0.0)
    if HAS_GL:
        g += tl.load(gl_ptr + offs, mask=mask, other=0.0)
    return g
