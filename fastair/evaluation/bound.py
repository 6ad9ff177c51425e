"""Bounds of a trained model: the clean ``L_k(x)`` of one fixed set of draws per example
(:func:`evaluate_bound`, the trainer's validation; :func:`split_bounds` on each split), the
encoder's amortized bound averaged over many independent draws (:func:`amortized_bound`, what
IW-SVI's gap is measured against), and a small table to print them (:func:`bounds_table`).

Every function takes any model of :mod:`fastair.evaluation.protocol` (an ``nn.Module`` with
``encode`` and ``decode_logits``) and checks it before any work starts."""
import math

import torch

from fastair.evaluation.protocol import _accepts, check_model, log_weights, resolve_path
from fastair.evaluation.weights import gaussian_log_weights

__all__ = ["EVAL_SEED", "amortized_bound", "at_least_float32", "batches", "block_generator",
           "bounds_table", "evaluate_bound", "model_k", "split_bounds"]

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


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected an int >= 1 (or None: the model's k, else 1), got {k!r}")
    return k


def model_k(model, k=None):
    """``k`` itself where given, else the model's ``k`` attribute, else 1 (the ELBO)."""
    return _check_k(getattr(model, "k", 1) if k is None else k)


@torch.no_grad()
def amortized_bound(model, x, k=None, n_samples=5000, chunk=100, batch_size=500, seed=0,
                    blocks=None, *, return_elbo=False, path=None):
    """The encoder's ``L_k(x)`` per example ``[N]`` (float64, CPU): the mean of
    ``n_samples // k`` independent k-sample bounds.

    Args:
        model: any model of :mod:`fastair.evaluation.protocol`: an ``nn.Module`` with
            ``encode(x [B, D]) -> (mu, logvar)`` and ``decode_logits(z [..., B, Z]) -> [..., B,
            D]``; its own ``log_weights(x, mu=, logvar=, z=)`` or a fused decoder head
            (``model.decoder.trunk`` + ``model.decoder.out``) are used where present. It is run
            in eval mode (restored afterwards).
        x: [N, D] data on the model's device.
        k: samples of each bound; None: the model's ``k`` attribute, or 1 (the ELBO) for a model
            without one.
        n_samples: samples in all per example (at least ``k``), drawn ``max(chunk, k)`` at a
            time.
        blocks: only these blocks of ``batch_size`` examples (:func:`batches`), concatenated
            in the given order; each block's draws come from :func:`block_generator`.
        return_elbo: also return the encoder's ELBO ``L_1`` per example, the mean of the same
            ``(n_samples // k) k`` log weights (free: no further draws; equal to ``L_k`` for
            ``k = 1``).
        path: the log-weights path (:data:`~fastair.evaluation.protocol.PATHS`); None:
            :func:`~fastair.evaluation.protocol.check_model` checks the model and chooses.
    Returns:
        ``[N]`` float64; with ``return_elbo``: ``(L_k [N], elbo [N])``.
    Raises:
        TypeError: the model does not follow the protocol (before any draw).
    """
    path = resolve_path(model, x, path)
    k = model_k(model, k)
    repeats = max(1, n_samples // k)
    was_training = model.training
    model.eval()
    try:
        parts, elbos = [], []
        for b, xb in batches(x, batch_size, blocks):
            generator = block_generator(x.device, seed, b)
            mu, logvar = (at_least_float32(t) for t in model.encode(xb))
            total = torch.zeros(xb.shape[0], dtype=torch.float64, device=x.device)
            sum_log_w = torch.zeros_like(total)
            per_chunk = max(1, chunk // k)
            for start in range(0, repeats, per_chunk):
                r = min(per_chunk, repeats - start)
                log_w = gaussian_log_weights(model, xb, mu, logvar, r * k, generator,
                                             path=path).reshape(r, k, -1)
                total += (torch.logsumexp(log_w, 1) - math.log(k)).double().sum(0)
                sum_log_w += log_w.double().sum((0, 1))
            parts.append((total / repeats).cpu())
            elbos.append((sum_log_w / (repeats * k)).cpu())
        empty = torch.zeros(0, dtype=torch.float64)
        bound = torch.cat(parts) if parts else empty
        return (bound, torch.cat(elbos) if elbos else empty) if return_elbo else bound
    finally:
        model.train(was_training)


EVAL_SEED = 1234


def _has_bound(model):
    """Whether the model brings its own clean bound ``bound(x, k, generator=)`` (fastair's
    models, whose ``bound`` in eval mode is the clean ``L_k``)."""
    return _accepts(getattr(model, "bound", None), "k", "generator")


def _protocol_bound(model, x, k, generator, path):
    """``L_k`` ``[B]`` of one batch through the protocol: ``k`` draws ``[k, B, Z]`` from the
    encoder's ``q`` (one ``randn`` of ``generator``, as ``VAE.clean_bound`` draws them)."""
    mu, logvar = (at_least_float32(t) for t in model.encode(x))
    eps = torch.randn((k,) + tuple(mu.shape), generator=generator, device=mu.device,
                      dtype=mu.dtype)
    log_w = log_weights(model, x, mu, logvar, mu + torch.exp(0.5 * logvar) * eps, path=path)
    return torch.logsumexp(log_w.double(), 0) - math.log(k)


@torch.no_grad()
def evaluate_bound(model, x, k=None, *, batch_size=500, seed=EVAL_SEED, device=None):
    """The clean bound ``L_k`` of every example, in eval mode, without touching the global RNG.

    Args:
        model: a :class:`fastair.models.VAE`, or any model of
            :mod:`fastair.evaluation.protocol` (``encode`` and ``decode_logits``; its train/eval
            mode is restored afterwards). A model whose ``bound(x, k, generator=)`` names ``k``
            and ``generator`` computes the bound itself (fastair's models: ``clean_bound`` in
            eval mode); for any other the bound is ``logsumexp_k log w - log k`` of ``k`` draws
            ``[k, B, Z]`` from the encoder's ``q``, the log weights through the protocol (its
            faster paths where the model offers them), checked before any work starts.
        x: ``[N, D]`` data (any device; batches are moved to the model's device).
        k: importance samples (None: the model's ``k``, or 1 for a model without one).
        batch_size: examples per batch.
        seed: seed of the private generator of the draws, so that repeated calls (each epoch's
            validation) use the same noise.
    Returns:
        ``[N]`` float64 CPU tensor of per-example bounds (nats).
    """
    if device is None:
        first = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        device = first.device if first is not None else x.device
    device = torch.device(device)
    own = _has_bound(model)
    path = None if own else check_model(model, x[:2].to(device) if len(x) else None)
    if not own:
        k = model_k(model, k)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            value = (model.bound(xb, k, generator=generator) if own
                     else _protocol_bound(model, xb, k, generator, path))
            out.append(value.double().cpu())
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
