"""Bounds of a trained model: the clean ``L_k(x)`` of one fixed set of draws per example
(:func:`evaluate_bound`, the trainer's validation; :func:`split_bounds` on each split), the
encoder's amortized bound averaged over many independent draws (:func:`amortized_bound`, what
IW-SVI's gap is measured against), and a small table to print them (:func:`bounds_table`)."""
import math

import torch

from fastair.evaluation.weights import gaussian_log_weights

__all__ = ["EVAL_SEED", "amortized_bound", "at_least_float32", "batches", "block_generator",
           "bounds_table", "evaluate_bound", "split_bounds"]

BLOCK_STRIDE = 1_000_003
"""Seeds of consecutive blocks of examples differ by this much (a prime far above any seed
the protocol uses), so block ``b`` of a call with ``seed`` draws from ``seed + BLOCK_STRIDE b``."""


def at_least_float32(t):
    """``t`` in float32 if it is float16/bfloat16 (an encoder run under autocast), else as it
    is: the Gaussian ``q``, its draws and their densities are kept in full precision."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def batches(x, batch_size, blocks=None):
    """Consecutive slices of ``x`` ``[N, ...]`` of at most ``batch_size`` rows, as ``(b, slice)``
    with the block's index ``b``; only the blocks in ``blocks`` (an iterable of indices) where
    given."""
    n_blocks = -(-x.shape[0] // batch_size)
    for b in (range(n_blocks) if blocks is None else blocks):
        yield b, x[b * batch_size:(b + 1) * batch_size]


def block_generator(device, seed, b):
    """The generator of block ``b``'s draws: seeded by the block, not by what ran before it, so
    that a block's values do not depend on which process evaluates it or on the blocks before
    (block 0 uses ``seed`` itself)."""
    return torch.Generator(device=device).manual_seed(seed + BLOCK_STRIDE * b)


@torch.no_grad()
def amortized_bound(model, x, k=None, n_samples=5000, chunk=100, batch_size=500, seed=0,
                    blocks=None):
    """The encoder's ``L_k(x)`` per example ``[N]`` (float64, CPU): the mean of
    ``n_samples // k`` independent k-sample bounds (``k`` defaults to the model's own).

    Args:
        model: a :class:`fastair.models.VAE` (or anything with ``encode``, ``decoder``).
        x: [N, D] data on the model's device.
        n_samples: samples in all per example (at least ``k``).
        blocks: only these blocks of ``batch_size`` examples (:func:`batches`), concatenated
            in the given order; each block's draws come from :func:`block_generator`.
    """
    k = k or model.k
    repeats = max(1, n_samples // k)
    was_training = model.training
    model.eval()
    try:
        parts = []
        for b, xb in batches(x, batch_size, blocks):
            generator = block_generator(x.device, seed, b)
            mu, logvar = (at_least_float32(t) for t in model.encode(xb))
            total = torch.zeros(xb.shape[0], dtype=torch.float64, device=x.device)
            per_chunk = max(1, chunk // k)
            for start in range(0, repeats, per_chunk):
                r = min(per_chunk, repeats - start)
                log_w = gaussian_log_weights(model, xb, mu, logvar, r * k,
                                             generator).reshape(r, k, -1)
                total += (torch.logsumexp(log_w, 1) - math.log(k)).double().sum(0)
            parts.append((total / repeats).cpu())
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    finally:
        model.train(was_training)


EVAL_SEED = 1234


@torch.no_grad()
def evaluate_bound(model, x, k=None, *, batch_size=500, seed=EVAL_SEED, device=None):
    """The clean bound ``L_k`` of every example, in eval mode, without touching the global RNG.

    Args:
        model: a :class:`fastair.models.VAE` (its train/eval mode is restored afterwards).
        x: ``[N, D]`` data (any device; batches are moved to the model's device).
        k: importance samples (None: the model's ``k``).
        batch_size: examples per batch.
        seed: seed of the private generator of the draws, so that repeated calls (each epoch's
            validation) use the same noise.
    Returns:
        ``[N]`` float64 CPU tensor of per-example bounds (nats).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        out = [model.bound(x[i:i + batch_size].to(device), k, generator=generator).double().cpu()
               for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def split_bounds(model, splits, k=None, *, batch_size=500, seed=EVAL_SEED):
    """Mean bound on each split: ``{"train": ..., "valid": ..., "test": ...}`` (floats, nats).

    ``splits``: an object with ``.train``, ``.valid``, ``.test`` tensors (such as
    :func:`fastair.data.load_dataset`'s result) or a dict of name -> ``[N, D]`` tensor.
    """
    if not isinstance(splits, dict):
        splits = {"train": splits.train, "valid": splits.valid, "test": splits.test}
    return {name: evaluate_bound(model, x, k, batch_size=batch_size, seed=seed).mean().item()
            for name, x in splits.items()}


def bounds_table(rows, columns=("train", "valid", "test"), title="bound (nats, higher is better)"):
    """A plain-text table: ``rows`` maps a row name (a model) to a dict of column -> value
    (floats with two decimals, ints as they are, missing values as ``-``)."""
    names = list(rows)
    width = max([len("model")] + [len(n) for n in names])
    header = f"{'model':<{width}}  " + "  ".join(f"{c:>10}" for c in columns)
    lines = [title, header, "-" * len(header)]
    for name in names:
        lines.append(f"{name:<{width}}  " + "  ".join(_cell(rows[name].get(c)) for c in columns))
    return "\n".join(lines)


def _cell(v):
    if isinstance(v, bool) or v is None:
        return f"{'-' if v is None else str(v):>10}"
    if isinstance(v, int):
        return f"{v:>10d}"
    if isinstance(v, float):
        return f"{v:>10.2f}"
    return f"{str(v):>10}"
