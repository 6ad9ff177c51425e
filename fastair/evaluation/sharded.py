"""IW-SVI over the ranks of a process group: the examples' blocks of ``batch_size`` shared out
round-robin (block ``b`` to rank ``b mod size``), each rank fitting and scoring its own, and the
per-example results gathered in the original order on every rank.

Each block's draws come from its own generator (seeded by the block), so the per-example values
are the same for any number of ranks, one included.
"""
import torch

from fastair import distributed
from fastair.evaluation.iwsvi import iwsvi_log_likelihood
from fastair.evaluation.result import IWSVIResult
from fastair.evaluation.settings import IWSVISettings

__all__ = ["sharded_iwsvi_log_likelihood"]

_FIELDS = ("log_px", "elbo", "gap", "steps", "hit_cap", "ess", "se", "elbo_enc", "elbo_fit",
           "approx_gap", "amort_gap", "khat", "n_eval")


def sharded_iwsvi_log_likelihood(model, x, batch_size=IWSVISettings.batch_size, progress=True,
                                  **kwargs):
    """:func:`~fastair.evaluation.iwsvi.iwsvi_log_likelihood` on this rank's blocks of ``x``
    ``[N, D]``, gathered: every rank returns the whole :class:`IWSVIResult` (``[N]`` fields;
    ``q_mu``, ``q_logvar`` ``[N, Z]`` too with ``keep_q=True``). Only rank 0 shows a progress
    bar. ``model``: any model of :mod:`fastair.evaluation.protocol` (``encode`` and
    ``decode_logits``), checked on every rank before any work starts. Keyword arguments as for
    ``iwsvi_log_likelihood``; a ``batch_size`` that is not an int >= 1 is a ValueError."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    w = distributed.world()
    n_blocks = -(-x.shape[0] // batch_size)
    mine = list(range(w.rank, n_blocks, w.size))
    part = iwsvi_log_likelihood(model, x, batch_size=batch_size, blocks=mine,
                                progress=progress and w.main, **kwargs)
    if w.size == 1:
        return part
    fields = _FIELDS + (("q_mu", "q_logvar") if kwargs.get("keep_q") else ())
    shards = distributed.gather((mine, {f: getattr(part, f) for f in fields}))
    pieces = {}
    for blocks, values in shards:
        start = 0
        for b in blocks:
            n = min(batch_size, x.shape[0] - b * batch_size)
            pieces[b] = {f: t[start:start + n] for f, t in values.items()}
            start += n
    merged = {f: torch.cat([pieces[b][f] for b in range(n_blocks)]) for f in fields}
    return IWSVIResult(**merged, max_steps=part.max_steps, k_eval=part.k_eval)
