"""Test log-likelihood by importance-weighted SVI (IW-SVI).

Each example's Gaussian ``q`` starts at the encoder's output (or at the prior), its ``mu,
logvar`` are fitted with the decoder frozen to the ``k_svi``-sample IWAE bound until that bound
stops improving (:func:`~fastair.evaluation.fit_q.fit_gaussian_q`), then ``ln p(x)`` is estimated
with ``k_eval`` importance samples from the fitted ``q``, drawn ``chunk`` at a time, with the
effective sample size and standard error of each estimate
(:func:`~fastair.evaluation.weights.streamed_weight_stats`). ``gap = log_px - elbo`` is the
inference gap of the amortized encoder, split (Cremer et al. 2018) into ``approx_gap = log_px -
elbo_fit`` and ``amort_gap = elbo_fit - elbo_enc`` by the ELBOs of the fitted and the encoder's
``q``, each the mean of log weights already drawn (no further samples).

The model is any ``nn.Module`` of :mod:`fastair.evaluation.protocol` (``encode`` and
``decode_logits``), checked before any work starts.
"""
import warnings

import torch

from fastair.evaluation.bound import amortized_bound, at_least_float32, batches, block_generator
from fastair.evaluation.fit_q import fit_gaussian_q
from fastair.evaluation.protocol import check_model
from fastair.evaluation.result import IWSVIResult
from fastair.evaluation.settings import IWSVISettings
from fastair.evaluation.weights import streamed_weight_stats
from fastair.io import progress_bar
from fastair.precision import PRECISIONS, autocast, native_bf16

__all__ = ["iwsvi_log_likelihood", "INITS", "resolve_precision", "resolve_fit_precision"]

INITS = ("encoder", "prior")
"""Where ``q`` starts: the encoder's ``mu, logvar``, or the prior ``N(0, I)``."""


FIT_PRECISIONS = ("auto",) + tuple(PRECISIONS)
"""The values of ``precision`` and ``fit_precision``: ``"auto"`` or one of
:data:`fastair.precision.PRECISIONS`."""

_D = IWSVISettings()  # the defaults of iwsvi_log_likelihood


def resolve_precision(precision, device):
    """The precision of the evaluation's matmuls: ``"auto"`` is bf16 where ``device`` multiplies
    bf16 matrices natively (:func:`fastair.precision.native_bf16`), else fp32."""
    if precision not in FIT_PRECISIONS:
        raise ValueError(f"precision: expected one of {FIT_PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def resolve_fit_precision(fit_precision, precision, device):
    """The precision the fit of ``q`` runs in (see :func:`iwsvi_log_likelihood`)."""
    if fit_precision not in FIT_PRECISIONS:
        raise ValueError(f"fit_precision: expected one of {FIT_PRECISIONS}, got "
                         f"{fit_precision!r}")
    if fit_precision != "auto":
        return fit_precision
    precision = resolve_precision(precision, device)
    if precision != "fp32":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def iwsvi_log_likelihood(model, x, k_svi=_D.k_svi, max_steps=_D.max_steps, lr=_D.lr,
                         k_eval=_D.k_eval, chunk=_D.chunk, batch_size=_D.batch_size,
                         elbo_samples=_D.elbo_samples, seed=_D.seed, progress=True, *,
                         check_every=_D.check_every, patience=_D.patience, tol=_D.tol,
                         init=_D.init, warn=True, decay=_D.decay, precision=_D.precision,
                         fit_precision=_D.fit_precision, se_target=_D.se_target, blocks=None,
                         keep_q=False):
    """IW-SVI estimate of ``ln p(x)`` per example, with the amortized bound, the gap, its split
    and the diagnostics of :class:`~fastair.evaluation.result.IWSVIResult`.

    The settings that change the numbers, every argument but ``model``, ``x``, ``progress``,
    ``warn``, ``blocks`` and ``keep_q``, are the fields of
    :class:`~fastair.evaluation.settings.IWSVISettings`, which documents each and holds its
    default; ``iwsvi_log_likelihood(model, x, **settings.kwargs())`` runs with an
    ``IWSVISettings``. The fit: Adam from ``lr`` on a ``k_svi``-sample bound, checked every
    ``check_every`` steps on fixed draws; a check without a gain of ``tol`` nat multiplies the
    step size by ``decay``, ``patience`` such checks in a row stop the example, at most
    ``max_steps`` (:mod:`fastair.evaluation.fit_q`). Then ``k_eval`` importance samples from the
    fitted ``q``, ``chunk`` at a time.

    Args:
        model: any ``nn.Module`` of :mod:`fastair.evaluation.protocol`: ``encode(x [B, D]) ->
            (mu, logvar)`` (``[B, Z]`` each) and ``decode_logits(z [..., B, Z]) -> logits [...,
            B, D]`` are required (a :class:`fastair.models.VAE` has both). Used where present:
            its own ``log_weights(x, mu=, logvar=, z=)`` (fastair's models), else a fused
            decoder head (``model.decoder.trunk`` and the ``nn.Linear`` ``model.decoder.out``,
            when ``decode_logits`` is their composition), else ``decode_logits`` itself, always
            ``chunk`` draws at a time; ``k`` (int), the amortized bound's k (1, the ELBO,
            without it). It is checked before any work starts (a ``TypeError`` naming a missing
            or misbehaving method), run in eval mode, its parameters frozen during the call and
            restored afterwards.
        x: ``[N, D]`` data on the model's device.
        progress: a progress bar (tqdm, where installed).
        warn: emit a ``UserWarning`` naming examples that hit the cap or are unreliable.
        blocks: evaluate only these blocks of ``batch_size`` consecutive examples (block ``b``
            is ``x[b * batch_size:(b + 1) * batch_size]``), in the given order: a shard of a
            distributed evaluation (:mod:`fastair.evaluation.sharded`). Every block's draws come
            from its own generator (:func:`~fastair.evaluation.bound.block_generator`), so an
            example's values do not depend on how the blocks are shared out.
        keep_q: also return each example's fitted ``q`` (``q_mu``, ``q_logvar`` ``[N, Z]``),
            e.g. as AIS's ``fitted`` starting point.

    Returns:
        :class:`~fastair.evaluation.result.IWSVIResult`, every field ``[N]`` (the examples of
        ``blocks`` only, where given).
    """
    if k_svi < 1 or k_eval < 1 or chunk < 1 or batch_size < 1 or max_steps < 0:
        raise ValueError("k_svi, k_eval, chunk and batch_size must be >= 1 and max_steps >= 0, got "
                         f"{k_svi}, {k_eval}, {chunk}, {batch_size}, {max_steps}")
    if se_target is not None and not se_target > 0:
        raise ValueError(f"se_target: expected a number > 0 or None, got {se_target!r}")
    if init not in INITS:
        raise ValueError(f"init: expected one of {INITS}, got {init!r}")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x: expected a non-empty [N, D] tensor, got {tuple(x.shape)}")
    path = check_model(model, x)  # before any work: a TypeError for a model off the protocol
    fit_precision = resolve_fit_precision(fit_precision, precision, x.device)
    precision = resolve_precision(precision, x.device)
    amp = autocast(x.device.type, precision)  # the decoder's matmuls; q stays float32
    fit_amp = autocast(x.device.type, fit_precision)
    blocks = None if blocks is None else list(blocks)
    total = x.shape[0] if blocks is None else sum(
        x[b * batch_size:(b + 1) * batch_size].shape[0] for b in blocks)
    bar = progress_bar(progress, total=total, desc="IW-SVI", unit="ex")
    if bar is not None:  # from the first second: the amortized bound takes a while too
        bar.set_postfix_str(f"amortized bound, {elbo_samples} samples", refresh=True)
    try:
        with amp:
            elbo, elbo_enc = amortized_bound(model, x, n_samples=elbo_samples, chunk=chunk,
                                             batch_size=batch_size, seed=seed + 1, blocks=blocks,
                                             return_elbo=True, path=path)
    except BaseException:
        if bar is not None:
            bar.close()
        raise
    was_training = model.training
    model.eval()
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    parts, qs = [], []
    try:
        for b, xb in batches(x, batch_size, blocks):
            generator = block_generator(x.device, seed, b)
            with torch.no_grad(), fit_amp:  # the start of the fit, in the fit's precision
                mu0, logvar0 = (at_least_float32(t) for t in model.encode(xb))
            if init == "prior":
                mu0, logvar0 = torch.zeros_like(mu0), torch.zeros_like(logvar0)

            def on_check(step, running):
                if bar is not None:
                    bar.set_postfix(step=step, running=running, refresh=False)
                    bar.refresh()

            with fit_amp:
                fit = fit_gaussian_q(model, xb, mu0, logvar0, k=k_svi, lr=lr,
                                     max_steps=max_steps, check_every=check_every,
                                     patience=patience, tol=tol, decay=decay,
                                     generator=generator, on_check=on_check, path=path)
            with torch.no_grad(), amp:
                stats = streamed_weight_stats(model, xb, fit.mu, fit.logvar, k_eval, chunk,
                                              generator, path=path, se_target=se_target)
            parts.append((stats.log_mean.cpu(), stats.ess.cpu(), stats.se.cpu(), fit.steps,
                          fit.hit_cap, stats.mean_log_w.cpu(), stats.khat.cpu(),
                          stats.n.cpu()))
            if keep_q:
                qs.append((fit.mu.detach().cpu(), fit.logvar.detach().cpu()))
            if bar is not None:
                bar.update(xb.shape[0])
    finally:
        if bar is not None:
            bar.close()
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
    if not parts:  # a shard without blocks
        empty = torch.zeros(0, dtype=torch.float64)
        parts = [(empty, empty, empty, torch.zeros(0, dtype=torch.int64),
                  torch.zeros(0, dtype=torch.bool), empty, empty,
                  torch.zeros(0, dtype=torch.int64))]
    log_px, ess, se, steps, hit_cap, elbo_fit, khat, n_eval = (torch.cat(t) for t in zip(*parts))
    q_mu, q_logvar = (torch.cat(t) for t in zip(*qs)) if qs else (None, None)
    result = IWSVIResult(log_px=log_px, elbo=elbo, gap=log_px - elbo, steps=steps,
                         hit_cap=hit_cap, ess=ess, se=se, elbo_enc=elbo_enc, elbo_fit=elbo_fit,
                         approx_gap=log_px - elbo_fit, amort_gap=elbo_fit - elbo_enc,
                         khat=khat, n_eval=n_eval, max_steps=max_steps, k_eval=k_eval,
                         q_mu=q_mu, q_logvar=q_logvar)
    if warn:
        for message in result.warnings():
            warnings.warn(f"IW-SVI: {message}", stacklevel=2)
    return result
