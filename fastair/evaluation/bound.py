"""The amortized bound ``L_k(x)`` of the encoder, averaged over many independent draws."""
import math

import torch

from fastair.evaluation.weights import gaussian_log_weights

__all__ = ["amortized_bound", "batches"]


def batches(x, batch_size):
    """Consecutive slices of ``x`` ``[N, ...]`` of at most ``batch_size`` rows."""
    for start in range(0, x.shape[0], batch_size):
        yield x[start:start + batch_size]


@torch.no_grad()
def amortized_bound(model, x, k=None, n_samples=5000, chunk=100, batch_size=500, seed=0):
    """The encoder's ``L_k(x)`` per example ``[N]`` (float64, CPU): the mean of
    ``n_samples // k`` independent k-sample bounds (``k`` defaults to the model's own).

    Args:
        model: a :class:`fastair.models.VAE` (or anything with ``encode``, ``decoder``).
        x: [N, D] data on the model's device.
        n_samples: samples in all per example (at least ``k``).
    """
    k = k or model.k
    repeats = max(1, n_samples // k)
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=x.device).manual_seed(seed)
    try:
        parts = []
        for xb in batches(x, batch_size):
            mu, logvar = model.encode(xb)
            total = torch.zeros(xb.shape[0], dtype=torch.float64, device=x.device)
            per_chunk = max(1, chunk // k)
            for start in range(0, repeats, per_chunk):
                r = min(per_chunk, repeats - start)
                log_w = gaussian_log_weights(model, xb, mu, logvar, r * k,
                                             generator).reshape(r, k, -1)
                total += (torch.logsumexp(log_w, 1) - math.log(k)).double().sum(0)
            parts.append((total / repeats).cpu())
        return torch.cat(parts)
    finally:
        model.train(was_training)
