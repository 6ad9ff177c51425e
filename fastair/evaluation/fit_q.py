"""Fit each example's Gaussian ``q(z) = N(mu, exp(logvar))`` to the ``k``-sample IWAE bound of
a frozen decoder, until it stops improving (the optimization step of IW-SVI).

**Optimizer.** Adam written out per row, so that each example of a batch has its own step size,
stops on its own, and the batch shrinks to the examples still running (the decoder is evaluated
only on those). All running rows have taken the same number of steps, so Adam's bias correction
is shared.

**Stopping rule.** Every ``check_every`` steps each running example is scored on a *fixed* set of
``k`` draws ``eps`` (``z = mu + exp(logvar / 2) eps`` with the same ``eps`` at every check:
common random numbers). With fresh draws one example's k-sample bound scatters by about a nat
from draw to draw, far more than the changes to detect; with the draws fixed, the difference
between two checks is the change the updates made, and nothing else. Two scores come from the
same log weights: the k-sample bound ``log mean w`` (the objective) and the ELBO ``mean log w =
ln p(x) - KL(q || p(z|x))`` (up to the draws). The ELBO is the one that still moves once the
16-sample bound has saturated: a ``q`` too broad or slightly off-centre costs the bound almost
nothing but the final importance weights a factor of several in effective sample size. A check
*gains* when either score beats its best by more than ``tol`` nats. A check that does not gain
halves that example's step size (the noisy gradient leaves Adam's iterates jittering at a
distance that scales with it); after ``patience`` checks in a row without a gain the example
stops. So an example stops when its step size has fallen by ``2 ** patience`` and even then
neither score moved by ``tol``; or at ``max_steps``, which is then reported.
"""
import math
from dataclasses import dataclass

import torch

from fastair.evaluation.protocol import log_weights, model_likelihood, resolve_path
from fastair.evaluation.settings import IWSVISettings
from fastair.functional import iwae_bernoulli_gaussian

__all__ = ["QFit", "fit_gaussian_q"]

_D = IWSVISettings()  # IW-SVI's defaults: the fit's own


@dataclass
class QFit:
    """The fitted ``mu, logvar`` ``[B, Z]``, the steps each example took ``[B]`` (int64, CPU)
    and whether it stopped at the cap ``[B]`` (bool, CPU)."""
    mu: torch.Tensor
    logvar: torch.Tensor
    steps: torch.Tensor
    hit_cap: torch.Tensor


def _draw(params, eps):
    mu, logvar = params.chunk(2, dim=1)
    return mu, logvar, mu + torch.exp(0.5 * logvar) * eps


@torch.no_grad()
def _scores(model, x, params, eps, path):
    """``[2, B]``: the k-sample bound and the ELBO of the fixed draws ``eps`` ``[k, B, Z]``."""
    mu, logvar, z = _draw(params, eps)
    log_w = log_weights(model, x, mu, logvar, z, path=path)
    return torch.stack([torch.logsumexp(log_w, 0) - math.log(eps.shape[0]), log_w.mean(0)])


def fit_gaussian_q(model, x, mu, logvar, *, k=_D.k_svi, lr=_D.lr, max_steps=_D.max_steps,
                   check_every=_D.check_every, patience=_D.patience, tol=_D.tol,
                   decay=_D.decay, generator=None, betas=(0.9, 0.999), eps=1e-8, on_check=None,
                   path=None):
    """Maximize ``L_k(x; q)`` over ``mu, logvar`` of each example, decoder frozen.

    Args:
        model: any model of :mod:`fastair.evaluation.protocol` (an ``nn.Module`` with
            ``encode(x) -> (mu, logvar)`` and ``decode_logits(z [..., B, Z]) -> [..., B, D]``);
            its parameters should not require gradients (the caller freezes them). Each step's
            bound is ``iwae_bernoulli_gaussian`` on ``decode_logits(z)`` (``[k, B, D]`` logits,
            ``k`` small) for a Bernoulli decoder, and the model's own ``log_weights`` for a
            model whose ``likelihood`` attribute names another (``fastair.models.VAE``'s
            continuous Bernoulli and Gaussian decoders); the checks' scores use the protocol's
            log weights (the model's own ``log_weights`` or a fused decoder head where present).
        x: ``[B, D]`` data; mu, logvar: ``[B, Z]`` starting point (not modified).
        k: samples of the bound optimized (and of the fixed check draws).
        lr: Adam's learning rate, each example's starting step size.
        betas: Adam's ``betas``.
        eps: Adam's ``eps``.
        max_steps: the cap on steps per example.
        check_every: the stopping rule of the module docstring, with ``patience``, ``tol``
            and ``decay`` (``decay = 1`` keeps the step size fixed). Each default is IW-SVI's
            (:class:`~fastair.evaluation.settings.IWSVISettings`, ``k`` its ``k_svi``).
        generator: the torch.Generator of every draw.
        on_check: optional ``f(step, n_running)`` after each check (progress reporting).
        path: the log-weights path of the checks (:data:`~fastair.evaluation.protocol.PATHS`);
            None: :func:`~fastair.evaluation.protocol.check_model` checks the model first.

    Returns:
        :class:`QFit`.
    Raises:
        TypeError: the model does not follow the protocol (before any step).
    """
    if min(k, check_every, patience) < 1 or max_steps < 0 or not tol >= 0 or not lr > 0 \
            or not 0 < decay <= 1:
        raise ValueError("k, check_every and patience must be >= 1, max_steps >= 0, tol >= 0, "
                         f"lr > 0 and decay in (0, 1]; got k={k}, check_every={check_every}, "
                         f"patience={patience}, max_steps={max_steps}, tol={tol}, lr={lr}, "
                         f"decay={decay}")
    path = resolve_path(model, x, path)
    bernoulli = model_likelihood(model)[0] == "bernoulli"
    n, z_dim = mu.shape
    device, dtype = mu.device, mu.dtype
    params = torch.cat([mu, logvar], 1).detach().clone()           # [B, 2Z]
    m1, m2 = torch.zeros_like(params), torch.zeros_like(params)    # Adam's moments
    rate = torch.full((n, 1), float(lr), dtype=dtype, device=device)
    fixed = torch.randn((k, n, z_dim), generator=generator, device=device, dtype=dtype)
    best = _scores(model, x, params, fixed, path)                         # [2, B]
    stale = torch.zeros(n, dtype=torch.int64, device=device)
    steps = torch.zeros(n, dtype=torch.int64)
    running = torch.arange(n, device=device)
    beta1, beta2 = betas
    step = 0
    while running.numel() and step < max_steps:
        xr = x.index_select(0, running)
        p = params.index_select(0, running).requires_grad_(True)
        draw = torch.randn((k, running.numel(), z_dim), generator=generator, device=device,
                           dtype=dtype)
        mu_r, logvar_r, z = _draw(p, draw)
        if bernoulli:
            loss = -iwae_bernoulli_gaussian(xr, model.decode_logits(z), z, mu_r, logvar_r).sum()
        else:  # the model's own likelihood, through the protocol's log weights
            log_w = log_weights(model, xr, mu_r, logvar_r, z, path=path)
            loss = -torch.logsumexp(log_w, 0).sum()
        (grad,) = torch.autograd.grad(loss, p)
        step += 1
        with torch.no_grad():
            g1 = m1.index_select(0, running).mul_(beta1).add_(grad, alpha=1 - beta1)
            g2 = m2.index_select(0, running).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            m1.index_copy_(0, running, g1)
            m2.index_copy_(0, running, g2)
            update = (g1 / (1 - beta1 ** step)) / (g2.div(1 - beta2 ** step).sqrt_().add_(eps))
            r = rate.index_select(0, running)
            params.index_copy_(0, running, p.detach() - r * update)
            if step % check_every:
                continue
            value = _scores(model, xr, params.index_select(0, running),
                            fixed.index_select(1, running), path)
            old = best.index_select(1, running)
            gained = (value > old + tol).any(0)
            best.index_copy_(1, running, torch.maximum(old, value))
            rate.index_copy_(0, running, torch.where(gained[:, None], r, r * decay))
            s = torch.where(gained, torch.zeros_like(stale[:1]), stale.index_select(0, running) + 1)
            stale.index_copy_(0, running, s)
            done = s >= patience
        steps[running[done].cpu()] = step
        running = running[~done]
        if on_check is not None:
            on_check(step, int(running.numel()))
    hit_cap = torch.zeros(n, dtype=torch.bool)
    hit_cap[running.cpu()] = True
    steps[running.cpu()] = step
    mu_fit, logvar_fit = params.chunk(2, dim=1)
    return QFit(mu=mu_fit.contiguous(), logvar=logvar_fit.contiguous(), steps=steps,
                hit_cap=hit_cap)
