"""The Pareto-smoothed importance sampling diagnostic k-hat, streamed over the samples.

An importance-sampling estimate of ``ln p(x)`` averages ``k`` weights ``w = p(x, z) / q(z|x)``,
``z ~ q``: ``ln p_hat = ln(mean w)``. How well that works depends on the right tail of the
distribution of ``w``. Above a high threshold ``u`` the excesses ``w - u`` are close to a
generalized Pareto distribution (GPD) of shape ``k_hat``, and ``w`` then has finite moments of
order ``< 1 / k_hat`` only. Following Vehtari, Simpson, Gelman, Yao and Gabry, "Pareto Smoothed
Importance Sampling" (JMLR 2024, arXiv:1507.02646), Sec. 3:

- ``k_hat < 0.5``: ``w`` has finite variance; the central limit theorem holds and the estimate
  converges at the usual ``1 / sqrt(k)`` rate.
- ``0.5 <= k_hat <= 0.7``: the variance is infinite but the mean is finite; the estimate is still
  usable, with a somewhat slower pre-asymptotic convergence.
- ``k_hat > 0.7`` (:data:`KHAT_WARN`): the convergence is too slow for any practical ``k``; the
  estimate (and its standard error or ESS) is unreliable. Above 1 the mean itself does not exist.

The fit uses the ``M = tail_size(k)`` largest weights (:func:`tail_size`, the paper's
``M = min(S / 5, 3 sqrt(S))``), so :class:`StreamedKhat` keeps only each example's top ``M + 1``
log weights across chunks: memory ``O(M B)``, not ``O(k B)``.

k-hat is NaN where it cannot be fit: a NaN or ``+inf`` log weight in the example, fewer than
:data:`MIN_TAIL` finite log weights above the threshold, or a degenerate tail (all tail weights
equal, or at least a quarter of them tied with the threshold). Treat NaN as unreliable.
"""
import math
from typing import Optional

import torch

__all__ = ["KHAT_WARN", "MIN_TAIL", "StreamedKhat", "pareto_khat", "tail_size"]

KHAT_WARN = 0.7
"""k-hat above this marks an importance-sampling estimate as unreliable. Vehtari et al. (JMLR
2024, Sec. 3) show that past 0.7 the pre-asymptotic convergence of the plain IS and the PSIS
estimate becomes impractically slow: the sample size needed for a small error grows so fast that
no feasible ``k`` reaches it. (Their sample-size-dependent threshold ``min(1 - 1 / log10 k, 0.7)``
equals 0.7 from ``k ~ 2200`` on.)"""

MIN_TAIL = 5
"""Fewest exceedances a GPD fit is attempted on; with fewer the example's k-hat is NaN."""

_PRIOR_N = 10.0  # the PSIS paper's weakly informative prior: 10 pseudo-observations at k = 0.5
_PRIOR_K = 0.5


def tail_size(k: int) -> int:
    """``M = max(1, min(floor(k / 5), ceil(3 sqrt(k))))``: how many of the largest of ``k``
    importance weights the Pareto fit uses (Vehtari et al. 2024, Sec. 3.1)."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    k = int(k)
    return max(1, min(k // 5, math.ceil(3.0 * math.sqrt(k))))


def _clean(log_w: torch.Tensor):
    """``log_w`` in float64 with NaN and +inf set to -inf, and a bool mask of those entries."""
    lw = log_w.to(torch.float64)
    bad = torch.isnan(lw) | torch.isposinf(lw)
    return torch.where(bad, torch.full_like(lw, -math.inf), lw), bad


def _khat_from_top(top: torch.Tensor, tail: int, bad: torch.Tensor) -> torch.Tensor:
    """k-hat ``[B]`` (float64) from each column's largest log weights ``top`` ``[T, B]``, sorted
    in descending order (``T <= tail + 1``), and a per-column flag ``bad`` ``[B]`` (NaN result).

    With ``f`` finite values in a column the fit uses ``n = min(tail, f - 1)`` exceedances over the
    threshold ``u = top[n]``: ``y_i = exp(top_i - top_0) - exp(u - top_0)``, ``i < n``.
    """
    T, B = top.shape
    out_nan = torch.full((B,), math.nan, dtype=torch.float64, device=top.device)
    if T < 2:
        return out_nan
    n = (torch.isfinite(top).sum(0) - 1).clamp(0, tail)  # [B] int64
    valid = (n >= MIN_TAIL) & ~bad
    nf = n.to(torch.float64).clamp(min=1.0)
    lw_max = top[0]
    shift = torch.where(torch.isfinite(lw_max), lw_max, torch.zeros_like(lw_max))
    u = top.gather(0, n[None]).squeeze(0)
    rows = torch.arange(T - 1, device=top.device)[:, None]
    in_tail = rows < n[None]
    y = torch.exp(top[:-1] - shift) - torch.exp(u - shift)[None]
    y = torch.where(in_tail, y, torch.zeros_like(y))  # [T - 1, B]; 0 contributes log1p(0) = 0

    # Zhang & Stephens (2009): theta_j = 1 / y_(n) + (1 - sqrt(m / (j - 1/2))) / (3 y_(q)),
    # j = 1..m, m = 30 + floor(sqrt(n)), y_(q) the floor(n / 4 + 1/2)-th smallest exceedance.
    y_max = y[0]
    q_rank = torch.floor(nf / 4.0 + 0.5).to(torch.int64)  # 1-based rank in ascending order
    q_idx = torch.clamp(n - q_rank, 0, T - 2)  # the same element in descending order
    y_q = y.gather(0, q_idx[None]).squeeze(0)
    valid &= (y_max > 0) & (y_q > 0)
    y_max = torch.where(valid, y_max, torch.ones_like(y_max))
    y_q = torch.where(valid, y_q, torch.ones_like(y_q))
    y = torch.where(valid[None], y, torch.zeros_like(y))
    m = 30.0 + torch.floor(torch.sqrt(nf))  # [B]
    m_max = 30 + math.isqrt(tail)
    j = torch.arange(1, m_max + 1, dtype=torch.float64, device=top.device)[:, None]  # [m_max, 1]
    theta = 1.0 / y_max + (1.0 - torch.sqrt(m / (j - 0.5))) / (3.0 * y_q)  # [m_max, B]

    # Profile log likelihood of theta (k = mean log1p(-theta y), sigma = -k / theta):
    # l(theta) = n (log(-theta / k) - k - 1); one grid point at a time keeps memory O(T B).
    y_mean = y.sum(0) / nf
    log_lik = torch.empty_like(theta)
    for i in range(m_max):
        th = theta[i]
        k_th = torch.log1p(-th[None] * y).sum(0) / nf
        ratio = torch.where(k_th != 0, -th / k_th, 1.0 / y_mean)  # theta -> 0 limit: 1 / mean y
        log_lik[i] = nf * (torch.log(ratio) - k_th - 1.0)
    log_lik = torch.where(j <= m, log_lik, torch.full_like(log_lik, -math.inf))
    theta_hat = (torch.softmax(log_lik, dim=0) * theta).sum(0)  # posterior mean of theta
    k_hat = torch.log1p(-theta_hat[None] * y).sum(0) / nf
    k_hat = (nf * k_hat + _PRIOR_N * _PRIOR_K) / (nf + _PRIOR_N)  # the PSIS paper's prior
    return torch.where(valid & torch.isfinite(k_hat), k_hat, out_nan)


def _check_tail(tail) -> int:
    if isinstance(tail, bool) or int(tail) != tail or tail < 1:
        raise ValueError(f"tail must be an integer >= 1, got {tail!r}")
    return int(tail)


def pareto_khat(log_w: torch.Tensor, dim: int = 0, tail: Optional[int] = None) -> torch.Tensor:
    """Pareto k-hat of importance weights ``exp(log_w)``, per batch element.

    Args:
        log_w: log weights with the ``k`` samples along ``dim`` (typically ``[k, B]``; any other
            dims are batch dims). ``-inf`` entries are zero weights and allowed.
        dim: the sample dim.
        tail: ``M``, how many of the largest weights the fit uses; default ``tail_size(k)``.

    Returns:
        k-hat, float64, of ``log_w``'s shape with ``dim`` removed. With ``u`` the ``(M+1)``-th
        largest log weight (the smallest finite one if fewer are finite) the ``M`` exceedances
        ``y = exp(lw - max lw) - exp(u - max lw)`` are fitted by a generalized Pareto
        distribution with Zhang and Stephens' (Technometrics 2009) empirical-Bayes estimate, then
        shrunk as in Vehtari et al. (2024): ``k_hat = (M k + 10 * 0.5) / (M + 10)``. NaN where
        it cannot be fit (see the module docstring).
    """
    if log_w.dim() == 0:
        raise ValueError("log_w must have a sample dim, got a scalar")
    lw = log_w.movedim(dim, 0)
    k = lw.shape[0]
    if k < 1:
        raise ValueError(f"log_w has no samples along dim {dim}")
    tail = tail_size(k) if tail is None else _check_tail(tail)
    batch = lw.shape[1:]
    lw, bad = _clean(lw.reshape(k, -1))
    top = torch.topk(lw, min(tail + 1, k), dim=0).values
    return _khat_from_top(top, tail, bad.any(0)).reshape(batch)


class StreamedKhat:
    """:func:`pareto_khat` of ``k_total`` log weights that arrive in chunks ``[n, B]``.

    Keeps each example's ``M + 1`` largest log weights (``M = tail_size(k_total)`` unless
    ``tail`` is given), so memory is ``O(M B)`` whatever ``k_total``; :meth:`khat` equals
    ``pareto_khat(torch.cat(chunks), tail=M)`` exactly.
    """

    def __init__(self, k_total: int, tail: Optional[int] = None):
        if isinstance(k_total, bool) or int(k_total) != k_total or k_total < 1:
            raise ValueError(f"k_total must be an integer >= 1, got {k_total!r}")
        self.k_total = int(k_total)
        self.tail = tail_size(self.k_total) if tail is None else _check_tail(tail)
        self.count = 0  # samples seen so far
        self._top: Optional[torch.Tensor] = None  # [<= M + 1, B] float64, descending
        self._bad: Optional[torch.Tensor] = None  # [B] bool: a NaN or +inf log weight was seen

    @property
    def top(self) -> Optional[torch.Tensor]:
        """The largest log weights kept so far, ``[<= M + 1, B]`` (float64, descending): all
        that the estimate holds in memory. None before the first :meth:`update`."""
        return self._top

    def update(self, log_w_chunk: torch.Tensor) -> None:
        """Merge a chunk ``[n, B]`` (samples along dim 0) into the kept top ``M + 1``."""
        if log_w_chunk.dim() != 2:
            raise ValueError(f"log_w_chunk must be [n, B], got shape {tuple(log_w_chunk.shape)}")
        if self._top is not None and log_w_chunk.shape[1] != self._top.shape[1]:
            raise ValueError(f"log_w_chunk has B = {log_w_chunk.shape[1]}, but the first chunk "
                             f"had B = {self._top.shape[1]}")
        lw, bad = _clean(log_w_chunk)
        if self._top is None:
            self._bad = bad.any(0)
        else:
            lw = torch.cat([self._top, lw.to(self._top.device)])
            self._bad = self._bad | bad.any(0).to(self._bad.device)
        if lw.shape[0] > 0:
            lw = torch.topk(lw, min(self.tail + 1, lw.shape[0]), dim=0).values
        self._top = lw
        self.count += log_w_chunk.shape[0]

    def khat(self, tail: Optional[int] = None) -> torch.Tensor:
        """k-hat ``[B]`` (float64) of all the log weights seen so far; ``tail``: a smaller ``M``
        than the one kept (e.g. ``tail_size(n)`` of an example that stopped after ``n`` draws)."""
        if self._top is None:
            raise RuntimeError("StreamedKhat.khat() called before any update()")
        tail = self.tail if tail is None else _check_tail(tail)
        if tail > self.tail:
            raise ValueError(f"tail: at most the {self.tail} kept, got {tail}")
        return _khat_from_top(self._top[:tail + 1], tail, self._bad)
