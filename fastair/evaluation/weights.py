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

The last line is ``sd(w) / (sqrt(k) mean(w))`` with the sample moments written through the ESS.
"""
import math
from dataclasses import dataclass

import torch

from fastair.evaluation.protocol import log_weights, resolve_path

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
    ``log_mean >= mean_log_w`` for every example, by Jensen's inequality on the same draws)."""
    log_mean: torch.Tensor
    ess: torch.Tensor
    se: torch.Tensor
    mean_log_w: torch.Tensor
    k: int


def streamed_weight_stats(model, x, mu, logvar, k, chunk, generator, *, path=None):
    """:class:`WeightStats` of ``k`` draws ``z ~ N(mu, exp(logvar))``, drawn ``chunk`` at a time
    (memory follows ``chunk``, not ``k``, on every path of the protocol).

    Args:
        model: a model of :mod:`fastair.evaluation.protocol`.
        x: ``[B, D]``; mu, logvar: ``[B, Z]``.
        path: the log-weights path (:data:`~fastair.evaluation.protocol.PATHS`); None:
            :func:`~fastair.evaluation.protocol.check_model` chooses.
    """
    path = resolve_path(model, x, path)
    run_max = torch.full(mu.shape[:1], -math.inf, dtype=torch.float64, device=mu.device)
    s1 = torch.zeros_like(run_max)
    s2 = torch.zeros_like(run_max)
    total = torch.zeros_like(run_max)  # sum of log w: the ELBO of q
    for start in range(0, k, chunk):
        log_w = gaussian_log_weights(model, x, mu, logvar, min(chunk, k - start),
                                     generator, path=path).double()
        total += log_w.sum(0)
        new_max = torch.maximum(run_max, log_w.max(0).values)
        shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        scale = torch.exp(run_max - shift)
        rel = torch.exp(log_w - shift)
        s1 = s1 * scale + rel.sum(0)
        s2 = s2 * scale * scale + (rel * rel).sum(0)
        run_max = new_max
    shift = torch.where(torch.isfinite(run_max), run_max, torch.zeros_like(run_max))
    log_mean = torch.log(s1) + shift - math.log(k)
    ess = torch.where(s2 > 0, s1 * s1 / s2, torch.zeros_like(s1))
    se = torch.sqrt(torch.clamp(1.0 / ess - 1.0 / k, min=0.0))
    return WeightStats(log_mean=log_mean, ess=ess, se=se, mean_log_w=total / k, k=k)


def streamed_log_mean_weight(model, x, mu, logvar, k, chunk, generator, *, path=None):
    """``log (1/k) sum_i w_i`` ``[B]`` (``mu``'s dtype): :func:`streamed_weight_stats`'s
    ``log_mean``."""
    return streamed_weight_stats(model, x, mu, logvar, k, chunk, generator,
                                 path=path).log_mean.to(mu.dtype)
