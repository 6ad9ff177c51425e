"""The public ops: argument checks, canonical shapes, and the choice of backend.

Dtypes: float32 and float64 inputs compute and return in their own dtype (float64 if any input
is float64). float16/bfloat16 inputs are read as they are and accumulated in float32; the
results of these ops (all reductions) are then float32, and gradients come back in each
input's own dtype.
"""
import math

import torch

from fastair import ops
from fastair._checks import (
    check_bernoulli_targets,
    check_broadcasts_to,
    check_same_device,
    check_shape,
    check_tensor,
    shape_str,
)
from fastair.backends import backend_setting, reference, resolve
from fastair.backends.reference import accumulation_dtype
from fastair.precision import native_bf16

__all__ = ["bernoulli_log_prob", "gaussian_log_prob", "iwae_bound", "iwae_bernoulli_gaussian",
           "capped_weight_norm", "linear_bernoulli_log_prob", "continuous_bernoulli_log_prob",
           "linear_continuous_bernoulli_log_prob", "linear_gaussian_log_prob"]

_REDUCED = (torch.float16, torch.bfloat16)


def _backend_for(t):
    return resolve(backend_setting(), t.device.type)


def _logits_in(logits, acc):
    """Keep float16/bfloat16 logits as they are (the kernels widen them); else cast to ``acc``."""
    if logits.dtype in _REDUCED and acc == torch.float32:
        return logits
    return logits.to(acc)


def _rows_of(p, shape):
    """View ``p`` (broadcastable to ``shape`` = [..., C]) as rows [N, C] such that the data of
    ``shape`` reads as [M, N, C] and row ``r`` of it pairs with row ``r % N`` of ``p``.

    Returns ``(p_rows, M, N)``. Where ``p`` broadcasts in a way this cannot express (a size-1
    dim between full ones), it is expanded and copied; autograd sums its gradient back.
    """
    nd = len(shape)
    padded = (1,) * (nd - p.dim()) + tuple(p.shape)
    j = nd
    while j > 0 and padded[j - 1] == shape[j - 1]:
        j -= 1
    if j < nd and all(s == 1 for s in padded[:j]):
        n = math.prod(shape[j:-1])
        return p.reshape(n, shape[-1]), math.prod(shape[:j]), n
    return p.expand(shape).reshape(-1, shape[-1]), 1, math.prod(shape[:-1])


def bernoulli_log_prob(logits, x):
    """Bernoulli log-likelihood from logits, summed over the last dim.

    ``log p(x|l) = sum_d x_d * l_d - softplus(l_d)``, never through ``sigmoid`` then ``log``.

    Args:
        logits: [..., D] floating tensor.
        x: data broadcastable to ``logits`` (e.g. [B, D] against [k, B, D]); float or bool.
            It gets no gradient.
    Returns:
        [...] (``logits.shape[:-1]``), float32 for float16/bfloat16 logits.
    """
    check_tensor("logits", logits)
    check_tensor("x", x, allow_bool=True)
    if logits.dim() == 0:
        raise ValueError("logits: expected shape [..., D] with at least one dim, got []")
    check_same_device(logits=logits, x=x)
    check_broadcasts_to("x", x, logits.shape, "logits")
    backend = _backend_for(logits)
    if backend == "reference" or logits.numel() == 0:
        return reference.bernoulli_log_prob(logits, x)
    x_dtype = x.dtype if x.is_floating_point() else torch.float32
    acc = accumulation_dtype(logits.dtype, x_dtype)
    shape = logits.shape
    x_rows, m, n = _rows_of(x.detach().to(acc), shape)
    logits3 = _logits_in(logits, acc).reshape(m, n, shape[-1]).contiguous()
    out = ops.bernoulli_log_prob(logits3, x_rows.contiguous(), backend)
    return out.reshape(shape[:-1])


def continuous_bernoulli_log_prob(logits, x, *, check_x=False):
    """Continuous Bernoulli log-density (Loaiza-Ganem and Cunningham, NeurIPS 2019) from logits,
    summed over the last dim: the density on [0, 1] of data that is not binary.

    ``log p(x|l) = sum_d x_d * l_d - softplus(l_d) + log C(l_d)``, ``C(l) = l / tanh(l / 2)``
    (``C(0) = 2``), evaluated as ``(x - 1/2) l - log(sinh(l/2) / (l/2))``: a series near
    ``l = 0``, a form that cannot overflow elsewhere, accurate to float64 rounding for every
    finite ``l`` (docs/design.md §1.13). Its gradient ``x - E[x | l]`` is finite everywhere
    and exactly ``x - 1/2`` at ``l = 0``.

    Args:
        logits: [..., D] floating tensor.
        x: data in [0, 1] broadcastable to ``logits`` (e.g. [B, D] against [k, B, D]); float or
            bool. It gets no gradient.
        check_x: also check that ``x`` is finite and in [0, 1] (a ValueError naming ``x``
            otherwise, as the losses and the trainer raise for Bernoulli targets). Off by
            default, like every op: the check reads ``x`` on the host, which synchronizes with
            a GPU.
    Returns:
        [...] (``logits.shape[:-1]``), float32 for float16/bfloat16 logits.
    """
    check_tensor("logits", logits)
    check_tensor("x", x, allow_bool=True)
    if logits.dim() == 0:
        raise ValueError("logits: expected shape [..., D] with at least one dim, got []")
    check_same_device(logits=logits, x=x)
    check_broadcasts_to("x", x, logits.shape, "logits")
    if check_x:
        check_bernoulli_targets("x", x)
    backend = _backend_for(logits)
    if backend == "reference" or logits.numel() == 0:
        return reference.continuous_bernoulli_log_prob(logits, x)
    x_dtype = x.dtype if x.is_floating_point() else torch.float32
    acc = accumulation_dtype(logits.dtype, x_dtype)
    shape = logits.shape
    x_rows, m, n = _rows_of(x.detach().to(acc), shape)
    logits3 = _logits_in(logits, acc).reshape(m, n, shape[-1]).contiguous()
    out = ops.continuous_bernoulli_log_prob(logits3, x_rows.contiguous(), backend)
    return out.reshape(shape[:-1])


def gaussian_log_prob(z, mu=None, logvar=None):
    """Diagonal Gaussian log-density summed over the last dim.

    ``log N(z; mu, exp(logvar)) = -1/2 sum_j (z_j - mu_j)^2 exp(-logvar_j) + logvar_j + log 2 pi``;
    the standard normal where ``mu`` and ``logvar`` are None (a missing one counts as zeros).

    Args:
        z: [..., Z].
        mu: None or broadcastable to ``z`` (e.g. [B, Z] against [k, B, Z]).
        logvar: None or broadcastable to ``z``, as ``mu``.
    Returns:
        [...] (``z.shape[:-1]``); gradients flow to ``z``, ``mu`` and ``logvar``.
    """
    check_tensor("z", z)
    if z.dim() == 0:
        raise ValueError("z: expected shape [..., Z] with at least one dim, got []")
    params = {"mu": mu, "logvar": logvar}
    for name, p in params.items():
        if p is not None:
            check_tensor(name, p)
            check_broadcasts_to(name, p, z.shape, "z")
    check_same_device(z=z, mu=mu, logvar=logvar)
    backend = _backend_for(z)
    if backend == "reference" or z.numel() == 0:
        return reference.gaussian_log_prob(z, mu, logvar)
    given = [p for p in (mu, logvar) if p is not None]
    acc = accumulation_dtype(z.dtype, *[p.dtype for p in given])
    pshape = torch.broadcast_shapes(*[p.shape for p in given]) if given else z.shape[-1:]
    rows = []
    for p in (mu, logvar):
        full = z.new_zeros(pshape, dtype=acc) if p is None else p.to(acc).expand(pshape)
        rows.append(_rows_of(full, z.shape))
    (mu_rows, m, n), (logvar_rows, _, _) = rows
    z3 = z.to(acc).reshape(m, n, z.shape[-1]).contiguous()
    out = ops.gaussian_log_prob(z3, mu_rows.contiguous(), logvar_rows.contiguous(), backend)
    return out.reshape(z.shape[:-1])


def iwae_bound(log_w, dim=0):
    """The k-sample bound from log importance weights: ``logsumexp(log_w, dim) - log n``.

    Its gradient with respect to ``log_w`` is the softmax over ``dim``: the normalized weights.

    Args:
        log_w: [..., n, ...] with the ``n`` samples along ``dim``.
    Returns:
        ``log_w`` without ``dim``, float32 for float16/bfloat16 input.
    """
    check_tensor("log_w", log_w)
    if log_w.dim() == 0:
        raise ValueError("log_w: expected at least one dim (the samples), got shape []")
    if not isinstance(dim, int) or not -log_w.dim() <= dim < log_w.dim():
        raise ValueError(f"dim: expected an int in [{-log_w.dim()}, {log_w.dim() - 1}] for log_w "
                         f"of shape {shape_str(log_w.shape)}, got {dim!r}")
    n = log_w.shape[dim]
    if n == 0:
        raise ValueError(f"log_w: expected at least one sample along dim {dim}, "
                         f"got shape {shape_str(log_w.shape)}")
    backend = _backend_for(log_w)
    if backend == "reference" or log_w.numel() == 0:
        return reference.iwae_bound(log_w, dim)
    v = log_w.to(accumulation_dtype(log_w.dtype)).movedim(dim, 0)
    bound, _ = ops.iwae_bound(v.reshape(n, -1).contiguous(), backend)
    return bound.reshape(v.shape[1:])


def iwae_bernoulli_gaussian(x, logits, z, mu, logvar, *, return_log_w=False):
    """The k-sample IWAE bound for a Bernoulli decoder and a Gaussian encoder, per example.

    ``log w[k, b] = log p(x_b | z[k, b]) + log N(z[k, b]; 0, I)
    - log N(z[k, b]; mu_b, exp(logvar_b))`` and ``L_k(x_b) = logsumexp_k log w[:, b] - log k``
    (``k = 1`` is the ELBO), in one fused pass over the logits. ``z`` is taken as given (sample
    it as ``mu + exp(logvar/2) * eps`` so that the reparameterization gradient reaches ``mu`` and
    ``logvar`` through it too).

    Args:
        x: [B, D] binary data (no gradient).
        logits: [k, B, D] decoder logits.
        z: [k, B, Z] latent samples.
        mu: [B, Z] encoder output, the mean.
        logvar: [B, Z] encoder output, the log-variance.
        return_log_w: also return the log weights ``log w`` [k, B] (differentiable too, from
            the same fused pass), for estimators that weight the samples themselves.
    Returns:
        [B], float32 for float16/bfloat16 logits; gradients for logits, z, mu and logvar.
        With ``return_log_w``: ``(bound [B], log_w [k, B])``.
    """
    names = {"x": x, "logits": logits, "z": z, "mu": mu, "logvar": logvar}
    for name, t in names.items():
        check_tensor(name, t, allow_bool=(name == "x"))
    if logits.dim() != 3:
        raise ValueError(f"logits: expected shape [k, B, D], got {shape_str(logits.shape)}")
    k, b, d = logits.shape
    if k == 0:
        raise ValueError("logits: expected at least one sample (k >= 1) in shape [k, B, D], "
                         f"got {shape_str(logits.shape)}")
    check_shape("x", x, (b, d), "[B, D] (B, D from logits [k, B, D])")
    if z.dim() != 3:
        raise ValueError(f"z: expected shape [k, B, Z] = [{k}, {b}, Z], got {shape_str(z.shape)}")
    zdim = z.shape[-1]
    check_shape("z", z, (k, b, zdim), "[k, B, Z] (k, B from logits [k, B, D])")
    check_shape("mu", mu, (b, zdim), "[B, Z] (B from logits, Z from z)")
    check_shape("logvar", logvar, (b, zdim), "[B, Z] (B from logits, Z from z)")
    check_same_device(**names)
    backend = _backend_for(logits)
    if backend == "reference" or logits.numel() == 0 or z.numel() == 0:
        log_w = reference.log_weights(x, logits, z, mu, logvar)
        bound = reference.iwae_bound(log_w, dim=0)
    else:
        acc = accumulation_dtype(x.dtype, logits.dtype, z.dtype, mu.dtype, logvar.dtype)
        log_w, bound = ops.iwae_bernoulli_gaussian(
            x.detach().to(acc).contiguous(), _logits_in(logits, acc).contiguous(),
            z.to(acc).contiguous(), mu.to(acc).contiguous(), logvar.to(acc).contiguous(),
            backend)
    return (bound, log_w) if return_log_w else bound


def capped_weight_norm(v, u, H):
    """Capped weight norm (WNI, AIR eq. 17-18) of the rows of a Linear weight.

    ``w_i = v_i / ||v_i|| * min(||v_i||, H sigmoid(u_i))``: ``||w_i|| <= H`` and ``w_i = v_i`` where
    the cap is inactive. Computed as ``w_i = s_i v_i``, ``s_i = 1`` if ``||v_i|| <= H sigmoid(u_i)``
    else ``H sigmoid(u_i) / ||v_i||``, so no epsilon is needed: a zero row gives a zero row and
    finite gradients. At the tie ``||v_i|| = H sigmoid(u_i)`` the gradient is that of the inactive
    cap (``dv = dw``, ``du = 0``), a valid one-sided derivative.

    Args:
        v: [out, in] direction parameters (float16/bfloat16 allowed: norms in float32).
        u: [out] cap parameters.
        H: float > 0, the largest row norm.
    Returns:
        w: [out, in] in ``v``'s dtype; gradients flow to ``v`` and ``u``.
    """
    check_tensor("v", v)
    check_tensor("u", u)
    if v.dim() != 2:
        raise ValueError(f"v: expected shape [out, in], got {shape_str(v.shape)}")
    check_shape("u", u, v.shape[:1], "[out] (out from v [out, in])")
    check_same_device(v=v, u=u)
    if isinstance(H, bool) or not isinstance(H, (int, float)):
        raise TypeError(f"H: expected a float > 0, got {type(H).__name__}")
    if not (math.isfinite(H) and H > 0):
        raise ValueError(f"H: expected a finite float > 0, got {H!r}")
    backend = _backend_for(v)
    if backend == "reference" or v.numel() == 0:
        return reference.capped_weight_norm(v, u, H)
    acc = accumulation_dtype(v.dtype)
    w, _ = ops.capped_weight_norm(_logits_in(v, acc).contiguous(), u.to(acc).contiguous(),
                                  float(H), backend)
    return w


def _autocast_cast(t, dtype):
    """``t`` as autocast casts an input of a reduced-precision op: floating tensors other than
    float64 to ``dtype``."""
    return t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t


def _reduced_gemm(backend, h):
    """Whether the fused head multiplies ``h``'s bfloat16/float16 values as they are: always on
    Triton (``tl.dot``, float32 sums); on the C++ kernels for bfloat16 where the CPU multiplies
    it natively (AVX512-BF16, AMX), where the widened float32 GEMM would be 2-8x slower."""
    if h.dtype not in _REDUCED:
        return False
    if backend == "triton":
        return True
    return backend == "native" and h.dtype == torch.bfloat16 and native_bf16(h.device)


def _check_linear_head(h, weight, bias, x, **params):
    """The checks of the fused heads; ``params``: the likelihood's own tensors (the Gaussian's
    ``logvar``), each broadcastable to ``[..., D]``. Returns ``[..., D]``."""
    check_tensor("h", h)
    check_tensor("weight", weight)
    check_tensor("x", x, allow_bool=True)
    if bias is not None:
        check_tensor("bias", bias)
    for name, t in params.items():
        check_tensor(name, t)
    if h.dim() == 0:
        raise ValueError("h: expected shape [..., H] with at least one dim, got []")
    if weight.dim() != 2 or weight.shape[1] != h.shape[-1]:
        raise ValueError(f"weight: expected shape [D, H] with H = {h.shape[-1]} from h, "
                         f"got {shape_str(weight.shape)}")
    if bias is not None:
        check_shape("bias", bias, weight.shape[:1], "[D] (D from weight [D, H])")
    check_same_device(h=h, weight=weight, bias=bias, x=x, **params)
    out_shape = tuple(h.shape[:-1]) + (weight.shape[0],)
    check_broadcasts_to("x", x, out_shape, "h @ weight.T")
    for name, t in params.items():
        check_broadcasts_to(name, t, out_shape, "h @ weight.T")
    return out_shape


def _linear_head(name, h, weight, bias, x, logvar=None):
    """The fused head ``name`` (``linear_bernoulli_log_prob``, ...) on checked arguments: autocast
    as ``nn.Linear`` has it, then the reference or the backend's op on canonical shapes (h rows
    ``[M * N, H]``, x rows ``[N, D]``, and for the Gaussian logvar rows ``[N, D]`` paired with
    x's, or, on the C++ kernels, one row ``[1, D]`` where logvar is shared by every row (``[]``,
    ``[D]``); a broadcast of x and logvar that these cannot express is expanded)."""
    out_shape = tuple(h.shape[:-1]) + (weight.shape[0],)
    extra = () if logvar is None else (logvar,)
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type):
        low = torch.get_autocast_dtype(device_type)
        h, weight, bias = (None if t is None else _autocast_cast(t, low) for t in (h, weight, bias))
        with torch.autocast(device_type, enabled=False):  # the op's own casts stay as written
            return _linear_head(name, h, weight, bias, x, logvar)
    backend = _backend_for(h)
    if backend == "reference" or h.numel() == 0 or weight.numel() == 0:
        return getattr(reference, name)(h, weight, bias, x, *extra)
    acc = accumulation_dtype(h.dtype, weight.dtype, x.dtype, *[t.dtype for t in extra],
                             bias.dtype if bias is not None else torch.float32)
    x = x.detach().to(acc)
    if logvar is not None:  # x and logvar rows that pair alike with the rows of h
        pshape = torch.broadcast_shapes(x.shape, logvar.shape)
        x = x.expand(pshape)
        shared = logvar.dim() <= 1 or all(s == 1 for s in logvar.shape[:-1])
        if backend == "native" and shared:  # one row for all: the C++ kernel reads [1, D]
            d = out_shape[-1]
            extra = (logvar.to(acc).reshape(-1).expand(d).reshape(1, d).contiguous(),)
        else:
            (lv_rows, _, _) = _rows_of(logvar.to(acc).expand(pshape), out_shape)
            extra = (lv_rows.contiguous(),)
    x_rows, m, n = _rows_of(x, out_shape)
    same = h.dtype == weight.dtype and (bias is None or bias.dtype == h.dtype)
    wdt = h.dtype if same and _reduced_gemm(backend, h) else acc
    h_rows = h.to(wdt).reshape(m * n, h.shape[-1]).contiguous()
    out = getattr(ops, name)(
        h_rows, weight.to(wdt).contiguous(), None if bias is None else bias.to(wdt).contiguous(),
        x_rows.contiguous(), *extra, backend)
    return out.reshape(out_shape[:-1])


def linear_bernoulli_log_prob(h, weight, bias, x):
    """A decoder's output layer fused with the Bernoulli log-likelihood:
    ``bernoulli_log_prob(h @ weight.T + bias, x)`` without storing the logits.

    The logits are made a tile of rows at a time and reduced at once (and remade in the backward),
    so memory does not grow with ``D`` times the number of rows: the op for large-k evaluation.

    Args:
        h: [..., H] last hidden layer (e.g. [k, B, H]).
        weight: [D, H] and bias: [D] or None, as in ``torch.nn.Linear(H, D)``.
        x: data broadcastable to [..., D] (e.g. [B, D]); no gradient.
    Returns:
        [...] (``h.shape[:-1]``); gradients for ``h``, ``weight`` and ``bias``. float16/bfloat16
        inputs give a float32 result: the Triton kernels multiply them as they are (float32
        sums; the gradient products take the logits' gradient in the inputs' dtype, as autocast
        does), and so do the C++ kernels for bfloat16 on a CPU with native bf16 (AVX512-BF16,
        AMX; each tile's logits rounded to bfloat16 as autocast's ``Linear`` rounds them, the
        weight gradient summed over tiles in float32); elsewhere the C++ kernels widen them to
        float32.

    Under ``torch.autocast`` the layer is what ``torch.nn.Linear`` would be there: ``h``,
    ``weight`` and ``bias`` (float32 or float16/bfloat16, not float64) are cast to the autocast
    dtype, and the tiles of logits are made from those values with float32 sums, never stored
    (in that dtype as above; where the C++ kernels widen them to float32 the products are
    exact, so each logit is the autocast one before its final rounding to the reduced dtype). The
    result is float32; the gradients of ``weight`` and ``bias`` pass through the cast as
    under autocast (rounded to the autocast dtype, then widened to the parameters' dtype).
    """
    _check_linear_head(h, weight, bias, x)
    return _linear_head("linear_bernoulli_log_prob", h, weight, bias, x)


def linear_continuous_bernoulli_log_prob(h, weight, bias, x):
    """A decoder's output layer fused with the continuous Bernoulli log-density:
    ``continuous_bernoulli_log_prob(h @ weight.T + bias, x)`` without storing the logits
    (docs/design.md §1.7 and §1.13).

    The contract of :func:`linear_bernoulli_log_prob` (shapes, broadcasting, dtypes, autocast),
    with the continuous Bernoulli term ``(x - 1/2) l - log(sinh(l/2) / (l/2))`` per element and
    its derivative ``x - mean(l)`` (exactly ``x - 1/2`` at ``l = 0``).

    Args:
        h: [..., H] last hidden layer (e.g. [k, B, H]).
        weight: [D, H] and bias: [D] or None, as in ``torch.nn.Linear(H, D)``.
        x: data in [0, 1] broadcastable to [..., D] (e.g. [B, D]); float or bool; no gradient
            (not checked to lie in [0, 1]: :func:`continuous_bernoulli_log_prob` with
            ``check_x=True`` says why).
    Returns:
        [...] (``h.shape[:-1]``), float32 for float16/bfloat16 inputs; gradients for ``h``,
        ``weight`` and ``bias``.
    """
    _check_linear_head(h, weight, bias, x)
    return _linear_head("linear_continuous_bernoulli_log_prob", h, weight, bias, x)


def linear_gaussian_log_prob(h, weight, bias, x, logvar):
    """A decoder's output layer fused with the diagonal Gaussian log-density of the data:
    ``sum_d log N(x_d; m_d, exp(logvar_d))`` with the mean ``m = h @ weight.T + bias`` never
    stored, equal to ``gaussian_log_prob(x, m, logvar)`` (docs/design.md §1.7).

    ``log N(x; m, exp(lv)) = -1/2 ((x - m)^2 exp(-lv) + lv + log 2 pi)`` per element; with
    ``t = (x - m) exp(-lv / 2)`` and the upstream ``g`` per row, the mean's gradient is
    ``g t exp(-lv / 2)`` and the log-variance's ``g (t^2 - 1) / 2``, summed over the rows that
    share each entry of ``logvar``. The contract of :func:`linear_bernoulli_log_prob` otherwise
    (shapes, dtypes, autocast: ``h``, ``weight`` and ``bias`` are cast as for ``nn.Linear``,
    ``logvar`` is read as it is).

    Args:
        h: [..., H] last hidden layer (e.g. [k, B, H]).
        weight: [D, H] and bias: [D] or None, as in ``torch.nn.Linear(H, D)``.
        x: finite data broadcastable to [..., D] (e.g. [B, D]); no gradient.
        logvar: the log-variance, broadcastable to [..., D]: e.g. ``[]`` (one for all), ``[D]``
            (per pixel), ``[B, 1]`` or ``[B, D]``; it gets a gradient of its own shape.
    Returns:
        [...] (``h.shape[:-1]``), float32 for float16/bfloat16 inputs; gradients for ``h``,
        ``weight``, ``bias`` and ``logvar``.
    """
    _check_linear_head(h, weight, bias, x, logvar=logvar)
    return _linear_head("linear_gaussian_log_prob", h, weight, bias, x, logvar)
