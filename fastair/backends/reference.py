"""Pure-torch reference implementations: the executable specification.

Every fused backend is tested against these functions. They are short, differentiable by
autograd and exact in float64. Shapes follow docs/design.md §1.1: ``x`` [B, D], ``logits``
[k, B, D], ``z`` [k, B, Z], ``mu`` and ``logvar`` [B, Z].
"""
import math
from fractions import Fraction

import torch

LOG_2PI = math.log(2.0 * math.pi)


def accumulation_dtype(*dtypes):
    """float64 if any dtype is float64, else float32 (float16/bfloat16 accumulate in float32)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def bernoulli_log_prob(logits, x):
    """``sum_d x_d * l_d - softplus(l_d)`` over the last dim: [..., D] -> [...].

    Computed in the accumulation dtype; ``x`` is data and gets no gradient.
    """
    acc = accumulation_dtype(logits.dtype, x.dtype)
    logits = logits.to(acc)
    x = x.detach().to(acc)
    # softplus(l) = log(e^l + e^0), computed stably by logaddexp and exact everywhere with the
    # gradient sigmoid(l) (F.softplus returns l itself above l = 20, an error of up to 2e-9).
    softplus = torch.logaddexp(logits, torch.zeros_like(logits))
    return (x * logits - softplus).sum(-1)


def _bernoulli_numbers(n):
    """``[B_0, ..., B_n]`` as exact fractions (``B_1 = -1/2``), from
    ``sum_{k <= m} binomial(m + 1, k) B_k = 0``."""
    b = [Fraction(1)]
    for m in range(1, n + 1):
        b.append(-sum(math.comb(m + 1, k) * b[k] for k in range(m)) / (m + 1))
    return b


_B = _bernoulli_numbers(24)
CB_VALUE_SERIES = tuple(float(_B[2 * n] / (2 * n * math.factorial(2 * n))) for n in range(1, 12))
"""``d_n = B_2n / (2n (2n)!)``, n = 1..11: ``log(sinh(l/2) / (l/2)) = sum_n d_n l^2n``
(1/24, -1/2880, 1/181440, ...; docs/design.md §1.13)."""
CB_GRAD_SERIES = tuple(float(_B[2 * n] / math.factorial(2 * n)) for n in range(1, 12))
"""``c_n = 2n d_n = B_2n / (2n)!``: ``coth(l/2)/2 - 1/l = sum_n c_n l^(2n-1)`` (1/12, -1/720,
...), the derivative."""
CB_SWITCH = {torch.float64: (1.0, 11), torch.float32: (2.0, 8)}
"""Per accumulation dtype: ``(s, terms)``, the series for ``|l| < s`` with that many terms (its
first dropped term is below 0.2 ulp at ``|l| = s``), the closed form for ``|l| >= s``."""


def continuous_bernoulli_log_prob(logits, x):
    """Continuous Bernoulli log-density (Loaiza-Ganem and Cunningham, 2019) over the last dim:
    ``sum_d x_d l_d - softplus(l_d) + log C(l_d)``, ``C(l) = l / tanh(l / 2)`` (``C(0) = 2``),
    [..., D] -> [...].

    Written as ``(x - 1/2) l - log(sinh(l/2) / (l/2))``, since ``log C(l) - softplus(l) =
    -l/2 - log(sinh(l/2) / (l/2))`` exactly (no ``log 2 - log 2`` cancelling near ``l = 0``):
    for ``|l| < s`` the series of :data:`CB_VALUE_SERIES`, else ``x l - max(l, 0) + log|l| -
    log1p(-exp(-|l|))`` (no overflow: ``exp(-|l|) <= e^-s``).
    Autograd gives ``x - 1/2 - sum_n c_n l^(2n-1)`` (exactly ``x - 1/2`` at ``l = 0``) and
    ``x - [l >= 0] + sign(l) (1/|l| - e / (1 - e))`` with ``e = exp(-|l|)``: the gradient
    ``x - mean(l)``. Computed in the accumulation dtype; ``x`` gets no gradient.
    """
    acc = accumulation_dtype(logits.dtype, x.dtype)
    s, terms = CB_SWITCH[acc]
    l = logits.to(acc)
    x = x.detach().to(acc)
    a = l.abs()
    small = a < s
    ls = torch.where(small, l, 0.0)  # each branch sees only arguments where it is finite
    l2 = ls * ls
    p = torch.full_like(l2, CB_VALUE_SERIES[terms - 1])
    for c in reversed(CB_VALUE_SERIES[:terms - 1]):
        p = p * l2 + c
    series = (x - 0.5) * ls - l2 * p
    ac = torch.where(small, s, a)
    # log|l| - log1p(-e) rather than log of a ratio or log(-expm1(-|l|)), so that autograd forms
    # 1/|l| - e / (1 - e) from e itself (expm1's backward would take e as expm1(-|l|) + 1)
    closed = x * l - l.clamp(min=0) + (torch.log(ac) - torch.log1p(-torch.exp(-ac)))
    return torch.where(small, series, closed).sum(-1)


def gaussian_log_prob(z, mu=None, logvar=None):
    """``-1/2 sum_j (z_j - mu_j)^2 exp(-logvar_j) + logvar_j + log 2 pi``: [..., Z] -> [...].

    Standard normal where ``mu``/``logvar`` are None. The quadratic term is formed as
    ``((z - mu) exp(-logvar / 2))^2``, so that ``z - mu`` of the scale ``exp(logvar / 2)`` gives a
    finite term even where ``(z - mu)^2`` or ``exp(-logvar)`` alone leaves the float range
    (float32 ``logvar`` of +-100).
    """
    dtypes = [t.dtype for t in (z, mu, logvar) if t is not None]
    acc = accumulation_dtype(*dtypes)
    z = z.to(acc)
    diff = z if mu is None else z - mu.to(acc)
    if logvar is None:
        quad = diff * diff
        logvar_term = torch.zeros((), dtype=acc, device=z.device)
    else:
        logvar = logvar.to(acc)
        scaled = diff * torch.exp(-0.5 * logvar)
        quad = scaled * scaled
        logvar_term = logvar
    return -0.5 * (quad + logvar_term + LOG_2PI).sum(-1)


def logsumexp(v, dim):
    """``torch.logsumexp(v, dim)`` (``v`` [..., n, ...] -> ``v`` without ``dim``), except that a
    slice of all ``-inf`` gives ``-inf`` with gradient exactly 0, as the fused backends do
    (torch's own gives NaN there: ``exp(-inf - -inf)``).

    Elsewhere it is torch's, values and gradient ``exp(v - lse)`` alike: such a slice is
    replaced by zeros before torch's logsumexp and its result by ``-inf`` after, so no gradient
    reaches it. NaN propagates, and a ``+inf`` entry gives ``+inf``.
    """
    empty = torch.isneginf(v).all(dim, keepdim=True)
    out = torch.logsumexp(torch.where(empty, torch.zeros_like(v), v), dim)
    return torch.where(empty.squeeze(dim), torch.full_like(out, -math.inf), out)


def iwae_bound(log_w, dim=0):
    """``logsumexp(log_w, dim) - log n`` with ``n = log_w.shape[dim]`` (:func:`logsumexp`)."""
    acc = accumulation_dtype(log_w.dtype)
    return logsumexp(log_w.to(acc), dim) - math.log(log_w.shape[dim])


def log_weights(x, logits, z, mu, logvar):
    """``log w[k, b] = log p(x_b|z) + log p(z) - log q(z|x_b)``: [k, B]."""
    return bernoulli_log_prob(logits, x) + gaussian_log_prob(z) - gaussian_log_prob(z, mu, logvar)


def iwae_bernoulli_gaussian(x, logits, z, mu, logvar):
    """The k-sample bound ``L_k`` per example: [B], with ``k = logits.shape[0]``."""
    return iwae_bound(log_weights(x, logits, z, mu, logvar), dim=0)


def capped_weight_norm(v, u, H):
    """Capped weight norm (WNI): ``w_i = v_i / ||v_i|| * min(||v_i||, H sigmoid(u_i))``.

    ``v`` [out, in], ``u`` [out], ``H > 0`` -> ``w`` [out, in] in ``v``'s dtype; norms and ``u`` in
    float64 for float64 ``v``, else float32. Written as ``w_i = s_i v_i`` with ``s_i = 1`` where
    ``||v_i|| <= cap_i`` and ``cap_i / ||v_i||`` otherwise: no epsilon is needed, a zero row
    stays zero, and at the tie ``||v_i|| = cap_i`` the gradient is that of the inactive cap
    (``dv = dw``, ``du = 0``).
    """
    acc = accumulation_dtype(v.dtype)
    v_acc = v.to(acc)
    norm = torch.linalg.vector_norm(v_acc, dim=1)
    cap = H * torch.sigmoid(u.to(acc))
    active = norm > cap
    scale = torch.where(active, cap / torch.where(active, norm, 1.0), 1.0)
    return (v_acc * scale[:, None]).to(v.dtype)


def linear_bernoulli_log_prob(h, weight, bias, x):
    """``bernoulli_log_prob(h @ weight.T + bias, x)``: h [..., H], weight [D, H], bias [D] or
    None, x broadcastable to [..., D] -> [...]."""
    return bernoulli_log_prob(torch.nn.functional.linear(h, weight, bias), x)


def linear_continuous_bernoulli_log_prob(h, weight, bias, x):
    """``continuous_bernoulli_log_prob(h @ weight.T + bias, x)``: h [..., H], weight [D, H], bias
    [D] or None, x in [0, 1] broadcastable to [..., D] -> [...]."""
    return continuous_bernoulli_log_prob(torch.nn.functional.linear(h, weight, bias), x)


def linear_gaussian_log_prob(h, weight, bias, x, logvar):
    """``sum_d log N(x_d; m_d, exp(logvar_d))`` with the mean ``m = h @ weight.T + bias``:
    ``gaussian_log_prob(m, x, logvar)`` (the density is symmetric in ``x`` and ``m``), h [..., H],
    weight [D, H], bias [D] or None, x and logvar broadcastable to [..., D] -> [...]; ``x``
    gets no gradient."""
    return gaussian_log_prob(torch.nn.functional.linear(h, weight, bias), x.detach(), logvar)
