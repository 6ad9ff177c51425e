"""Log importance weights of a Gaussian ``q`` and their streamed statistics.

``log w = log p(x|z) + log p(z) - log q(z|x)`` with ``z ~ q = N(mu, exp(logvar))``, formed through
the model protocol (:func:`fastair.evaluation.protocol.log_weights`: the model's own
``log_weights`` such as :meth:`fastair.models.VAE.log_weights`, a fused decoder head, or
``decode_logits``). The streamed statistics keep, per example, a running max ``m``, the rescaled
sums ``s1 = sum exp(log w - m)`` and ``s2 = sum exp(2 (log w - m))`` and the plain sum of
``log w``, so memory does not grow with the number of samples ``k``:

    log p_hat = log s1 + m - log k          (the k-sample estimate of ln p(x))
    ESS       = s1^2 / s2                   (Kish's effective sample size, in [1, k])
    SE        = sqrt(1 / ESS - 1 / k)       (delta-method standard error of log p_hat)
    ELBO_hat  = sum log w / k               (the ELBO of q, E_q[log w], from the same draws)

The SE line is ``sd(w) / (sqrt(k) mean(w))`` with the sample moments written through the ESS.
Each example also keeps its largest ``M + 1`` log weights (:class:`~fastair.evaluation.psis.
StreamedKhat`, ``M = min(k / 5, 3 sqrt(k))``) for the PSIS diagnostic k-hat: memory ``O(M B)``.

With ``se_target`` an example stops drawing once its SE is at most the target (checked every
``check`` chunks from ``min_samples`` on, the SE of so few draws being optimistic when the
weights are heavy-tailed): ``k`` is then a cap, and each example reports the draws it used.
"""
import math
from dataclasses import dataclass

import torch

from fastair.evaluation.protocol import log_weights, resolve_path
from fastair.evaluation.psis import StreamedKhat, tail_size

__all__ = ["WeightStats", "gaussian_log_weights", "streamed_log_mean_weight",
           "streamed_weight_stats"]


def gaussian_log_weights(model, x, mu, logvar, n, generator, *, path=None):
    """Log weights ``[n, B]`` of ``n`` fresh draws ``z ~ N(mu, exp(logvar))`` (``mu, logvar``
    ``[B, Z]``, ``x`` ``[B, D]``) for any model of the protocol
    (:func:`~fastair.evaluation.protocol.log_weights`; ``path=None``:
    :func:`~fastair.evaluation.protocol.check_model` chooses the path)."""
    path = resolve_path(model, x, path)
    z = mu + torch.exp(0.5 * logvar) * torch.randn((n,) + tuple(mu.shape), generator=generator,
                                                   device=mu.device, dtype=mu.dtype)
    return log_weights(model, x, mu, logvar, z, path=path)


@dataclass
class WeightStats:
    """Per-example statistics of ``k`` importance weights, each ``[B]`` float64: ``log_mean``
    (the estimate of ``ln p(x)``), ``ess`` (effective sample size), ``se`` (its standard error)
    and ``mean_log_w`` (``mean log w``, the estimate of the ELBO of ``q`` from the same draws;
    ``log_mean >= mean_log_w`` for every example, by Jensen's inequality on the same draws),
    ``khat`` (the PSIS Pareto shape of the largest weights, NaN where it cannot be fitted) and
    ``n`` (int64, the draws each example used: ``k`` unless ``se_target`` stopped it earlier)."""
    log_mean: torch.Tensor
    ess: torch.Tensor
    se: torch.Tensor
    mean_log_w: torch.Tensor
    k: int
    khat: torch.Tensor = None
    n: torch.Tensor = None


def streamed_weight_stats(model, x, mu, logvar, k, chunk, generator, *, path=None,
                          se_target=None, min_samples=1000, check=5):
    """:class:`WeightStats` of ``k`` draws ``z ~ N(mu, exp(logvar))``, drawn ``chunk`` at a time
    (memory follows ``chunk``, not ``k``, on every path of the protocol).

    Args:
        model: a model of :mod:`fastair.evaluation.protocol`.
        x: ``[B, D]``; mu, logvar: ``[B, Z]``.
        path: the log-weights path (:data:`~fastair.evaluation.protocol.PATHS`); None:
            :func:`~fastair.evaluation.protocol.check_model` chooses.
        se_target: None (every example draws ``k``), or stop an example once its SE is at most
            this many nats, after at least ``min_samples`` draws, looked at every ``check``
            chunks; the batch shrinks to the examples still drawing.
    """
    if se_target is not None and not se_target > 0:
        raise ValueError(f"se_target: expected a number > 0 or None, got {se_target!r}")
    path = resolve_path(model, x, path)
    B = mu.shape[0]
    run_max = torch.full((B,), -math.inf, dtype=torch.float64, device=mu.device)
    s1 = torch.zeros_like(run_max)
    s2 = torch.zeros_like(run_max)
    total = torch.zeros_like(run_max)  # sum of log w: the ELBO of q
    used = torch.zeros(B, dtype=torch.int64, device=mu.device)
    tail = StreamedKhat(k)
    rows = torch.arange(B, device=mu.device)  # the examples still drawing
    chunks = 0
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        sub = rows.numel() < B
        xr, mr, lr_ = (x[rows], mu[rows], logvar[rows]) if sub else (x, mu, logvar)
        log_w = gaussian_log_weights(model, xr, mr, lr_, n, generator, path=path).double()
        if sub:  # the stopped examples get weight 0 (log w = -inf) in the k-hat tail
            full = torch.full((n, B), -math.inf, dtype=torch.float64, device=mu.device)
            full[:, rows] = log_w
            tail.update(full)
        else:
            tail.update(log_w)
        total[rows] += log_w.sum(0)
        used[rows] += n
        new_max = torch.maximum(run_max[rows], log_w.max(0).values)
        shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        scale = torch.exp(run_max[rows] - shift)
        rel = torch.exp(log_w - shift)
        s1[rows] = s1[rows] * scale + rel.sum(0)
        s2[rows] = s2[rows] * scale * scale + (rel * rel).sum(0)
        run_max[rows] = new_max
        chunks += 1
        if se_target is not None and chunks % check == 0 and start + n < k:
            u = used[rows]
            ess = s1[rows] ** 2 / s2[rows]
            se = torch.sqrt(torch.clamp(1.0 / ess - 1.0 / u, min=0.0))
            rows = rows[~((u >= min_samples) & (se <= se_target))]
            if rows.numel() == 0:
                break
    shift = torch.where(torch.isfinite(run_max), run_max, torch.zeros_like(run_max))
    kf = used.double()
    log_mean = torch.log(s1) + shift - torch.log(kf)
    ess = torch.where(s2 > 0, s1 * s1 / s2, torch.zeros_like(s1))
    se = torch.sqrt(torch.clamp(1.0 / ess - 1.0 / kf, min=0.0))
    return WeightStats(log_mean=log_mean, ess=ess, se=se, mean_log_w=total / kf, k=k,
                       khat=_khat_per_count(tail, used), n=used)


def _khat_per_count(tail, used):
    """k-hat of each example with the tail size of the draws it used (:func:`tail_size`)."""
    out = torch.empty(used.shape, dtype=torch.float64, device=used.device)
    for count in torch.unique(used).tolist():
        cols = used == count
        out[cols] = tail.khat(tail=min(tail.tail, tail_size(count))).to(out.device)[cols]
    return out


def streamed_log_mean_weight(model, x, mu, logvar, k, chunk, generator, *, path=None):
    """``log (1/k) sum_i w_i`` ``[B]`` (``mu``'s dtype): :func:`streamed_weight_stats`'s
    ``log_mean``."""
    return streamed_weight_stats(model, x, mu, logvar, k, chunk, generator,
                                 path=path).log_mean.to(mu.dtype)
