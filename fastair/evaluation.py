"""Test log-likelihood by importance-weighted SVI (IW-SVI), and the amortized bound.

``iwsvi_log_likelihood`` starts each test point's Gaussian ``q`` at the encoder's output,
optimizes its ``mu, logvar`` (decoder frozen) with Adam on the ``k_svi``-sample IWAE bound, all
points of a batch at once, then estimates ``ln p(x)`` with ``k_eval`` importance samples from the
optimized ``q``, drawn ``chunk`` at a time and combined by a running log-sum-exp, so memory does
not grow with ``k_eval``. ``gap = log_px - elbo`` is the inference gap of DESIGN.md §1.
"""
import math
from dataclasses import dataclass

import torch

from fastair.functional import (bernoulli_log_prob, gaussian_log_prob, iwae_bernoulli_gaussian,
                                linear_bernoulli_log_prob)

__all__ = ["IWSVIResult", "amortized_bound", "decoder_log_prob", "iwsvi_log_likelihood",
           "streamed_log_mean_weight"]


@dataclass
class IWSVIResult:
    """Per-example results, each ``[N]`` float64 on the CPU: ``log_px`` (the IW-SVI estimate of
    ``ln p(x)``), ``elbo`` (the amortized bound ``L_k`` of the encoder at the model's own k) and
    ``gap = log_px - elbo``."""
    log_px: torch.Tensor
    elbo: torch.Tensor
    gap: torch.Tensor

    def summary(self):
        """Means of ``-log_px``, ``gap`` and ``-elbo`` (the paper's columns), in nats."""
        return {"-ln p(x)": -self.log_px.mean().item(), "gap": self.gap.mean().item(),
                "-L(x)": -self.elbo.mean().item(), "n": int(self.log_px.numel())}

    def per_example_csv(self):
        """The per-example values as CSV text: ``index,log_px,elbo,gap``, one row per example."""
        rows = ["index,log_px,elbo,gap"] + [
            f"{i},{a:.6f},{b:.6f},{c:.6f}" for i, (a, b, c) in
            enumerate(zip(self.log_px.tolist(), self.elbo.tolist(), self.gap.tolist()))]
        return "\n".join(rows) + "\n"


def decoder_log_prob(model, z, x):
    """``log p(x|z)`` ``[..., B]`` for ``z [..., B, Z]``, ``x [B, D]``; through the fused decoder
    head (no [..., D] logits stored) when the decoder ends in a Linear ``out`` after a ``trunk``."""
    decoder = model.decoder
    out = getattr(decoder, "out", None)
    if isinstance(out, torch.nn.Linear) and hasattr(decoder, "trunk"):
        return linear_bernoulli_log_prob(decoder.trunk(z), out.weight, out.bias, x)
    return bernoulli_log_prob(model.decode_logits(z), x)


def _log_weights(model, x, mu, logvar, n, generator):
    """``log w`` ``[n, B]`` of ``n`` draws ``z ~ N(mu, exp(logvar))``: ``log p(x|z) + log p(z) -
    log q(z)``, the decoder term through :func:`decoder_log_prob`."""
    z = mu + torch.exp(0.5 * logvar) * torch.randn((n,) + tuple(mu.shape), generator=generator,
                                                   device=mu.device, dtype=mu.dtype)
    return (decoder_log_prob(model, z, x) + gaussian_log_prob(z)
            - gaussian_log_prob(z, mu, logvar)).to(mu.dtype)


def streamed_log_mean_weight(model, x, mu, logvar, k, chunk, generator):
    """``log (1/k) sum_i w_i`` ``[B]`` with ``z_i ~ N(mu, exp(logvar))``, drawn ``chunk`` at a
    time; a running max and a rescaled running sum keep memory independent of ``k``."""
    run_max = torch.full(mu.shape[:1], -math.inf, dtype=mu.dtype, device=mu.device)
    run_sum = torch.zeros_like(run_max)
    for start in range(0, k, chunk):
        log_w = _log_weights(model, x, mu, logvar, min(chunk, k - start), generator)
        new_max = torch.maximum(run_max, log_w.max(0).values)
        shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        run_sum = run_sum * torch.exp(run_max - shift) + torch.exp(log_w - shift).sum(0)
        run_max = new_max
    shift = torch.where(torch.isfinite(run_max), run_max, torch.zeros_like(run_max))
    return torch.log(run_sum) + shift - math.log(k)


def _batches(x, batch_size):
    for start in range(0, x.shape[0], batch_size):
        yield x[start:start + batch_size]


def _progress(total, enabled, desc):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False)


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
        for xb in _batches(x, batch_size):
            mu, logvar = model.encode(xb)
            total = torch.zeros(xb.shape[0], dtype=torch.float64, device=x.device)
            per_chunk = max(1, chunk // k)
            for start in range(0, repeats, per_chunk):
                r = min(per_chunk, repeats - start)
                log_w = _log_weights(model, xb, mu, logvar, r * k, generator).reshape(r, k, -1)
                total += (torch.logsumexp(log_w, 1) - math.log(k)).double().sum(0)
            parts.append((total / repeats).cpu())
        return torch.cat(parts)
    finally:
        model.train(was_training)


def iwsvi_log_likelihood(model, x, k_svi=16, steps=100, lr=1e-2, k_eval=5000, chunk=100,
                         batch_size=500, elbo_samples=5000, seed=0, progress=True):
    """IW-SVI estimate of ``ln p(x)`` per example, with the amortized bound and the gap.

    Defaults: ``k_svi = 16`` and ``steps = 100`` cost 1600 decoder passes per example, of the
    order of the ``k_eval = 5000`` evaluation itself, and a 16-sample bound already pulls ``q``
    towards the mass-covering fit that importance sampling needs; Adam with ``lr = 1e-2`` moves
    each coordinate of ``mu, logvar`` by up to about 1 over 100 steps, enough to correct the
    encoder's amortization error and stable on the bound's noisy gradients. ``chunk = 100``
    samples of a 500-point batch keep each decoder activation at 100 x 500 x 200 floats (40 MB).

    Args:
        model: a :class:`fastair.models.VAE`; its parameters are frozen during the call and
            restored afterwards.
        x: [N, D] data on the model's device.
    Returns:
        :class:`IWSVIResult` with ``log_px``, ``elbo`` and ``gap``, each [N].
    """
    if k_svi < 1 or k_eval < 1 or chunk < 1 or batch_size < 1 or steps < 0:
        raise ValueError("k_svi, k_eval, chunk and batch_size must be >= 1 and steps >= 0, got "
                         f"{k_svi}, {k_eval}, {chunk}, {batch_size}, {steps}")
    elbo = amortized_bound(model, x, n_samples=elbo_samples, chunk=chunk,
                           batch_size=batch_size, seed=seed + 1)
    was_training = model.training
    model.eval()
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    n_batches = math.ceil(x.shape[0] / batch_size)
    bar = _progress(n_batches * (steps + math.ceil(k_eval / chunk)), progress, "IW-SVI")
    try:
        parts = []
        for xb in _batches(x, batch_size):
            with torch.no_grad():
                mu0, logvar0 = model.encode(xb)
            mu = mu0.clone().requires_grad_(True)
            logvar = logvar0.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([mu, logvar], lr=lr)
            for _ in range(steps):
                eps = torch.randn((k_svi,) + tuple(mu.shape), generator=generator,
                                  device=x.device, dtype=mu.dtype)
                z = mu + torch.exp(0.5 * logvar) * eps
                loss = -iwae_bernoulli_gaussian(xb, model.decode_logits(z), z, mu, logvar).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if bar is not None:
                    bar.update(1)
            with torch.no_grad():
                parts.append(streamed_log_mean_weight(model, xb, mu.detach(), logvar.detach(),
                                                      k_eval, chunk, generator).double().cpu())
            if bar is not None:
                bar.update(math.ceil(k_eval / chunk))
        log_px = torch.cat(parts)
        return IWSVIResult(log_px=log_px, elbo=elbo, gap=log_px - elbo)
    finally:
        if bar is not None:
            bar.close()
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
