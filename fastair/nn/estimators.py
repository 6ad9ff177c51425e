"""Gradient estimators: how a batch's k samples become the per-example objective that is
maximized (docs/design.md §1.5).

An estimator is a function ``(x [B, D], logits [k, B, D], z [k, B, Z], mu [B, Z], logvar [B, Z])
-> [B]`` whose value is the bound ``L_k`` and whose gradient is the estimator's. ``z`` is
``mu + exp(logvar / 2) * eps``, so the reparameterization path runs through it, and ``logits``
are the decoder's output on that ``z``. A :class:`~fastair.models.VAE` takes one by name
(``VAE(..., estimator="dreg")``); :class:`fastair.nn.IWAELoss` too.

With ``w_k = p(x, z_k) / q(z_k|x)`` and the normalized weights ``w~_k = w_k / sum_j w_j``:

- ``iwae``: the plain gradient of ``L_k`` (Burda et al., 2016): ``sum_k w~_k grad log w_k``
  along every path; one fused :func:`fastair.iwae_bernoulli_gaussian`.
- ``stl`` ("sticking the landing", Roeder et al., 2017): ``log q`` is taken with its
  parameters held fixed, so the encoder gets only the path derivative through ``z``; for
  ``k = 1`` an unbiased ELBO gradient with less variance near the optimum, for ``k > 1`` biased.
- ``dreg`` (doubly reparameterized, Tucker et al., 2019): the encoder's gradient is
  ``sum_k w~_k^2 d log w_k / d z_k  d z_k / d phi`` (``log q`` with fixed parameters), unbiased
  for the IWAE gradient, whose signal-to-noise ratio grows with k; the decoder's is IWAE's.
  Done as ``stl`` plus a hook on ``z`` that multiplies its gradient by ``w~`` (the decoder's
  parameters get theirs before that point), so the cost is one forward and one backward, as
  for ``iwae``.

The decoder's gradient is the same under all three on the same draws.

:func:`importance_bound` applies the same three rules to any decoder likelihood (Gaussian,
categorical, ...): the user gives ``log p(x|z_k)`` ``[k, B]`` and it adds the prior and
``log q`` (fused Gaussian densities and log-sum-exp, not the one-pass Bernoulli kernel).
"""
import torch

from fastair.functional import gaussian_log_prob, iwae_bernoulli_gaussian, iwae_bound

__all__ = ["ESTIMATORS", "get_estimator", "importance_bound", "iwae", "stl", "dreg",
           "normalized_weights"]


def iwae(x, logits, z, mu, logvar):
    """``L_k`` per example ``[B]`` with its plain gradient (all paths through ``z``, ``mu`` and
    ``logvar``); ``k = 1`` is the ELBO with the usual reparameterization gradient."""
    return iwae_bernoulli_gaussian(x, logits, z, mu, logvar)


def stl(x, logits, z, mu, logvar):
    """``L_k`` per example ``[B]``; the gradient with ``log q(z; mu, logvar)`` taken at fixed
    ``mu, logvar`` (the path derivative through ``z`` only)."""
    return iwae_bernoulli_gaussian(x, logits, z, mu.detach(), logvar.detach())


def dreg(x, logits, z, mu, logvar):
    """``L_k`` per example ``[B]``; the encoder's gradient through ``z`` weighted by the squared
    normalized weights, the decoder's as in ``iwae``."""
    bound, log_w = iwae_bernoulli_gaussian(x, logits, z, mu.detach(), logvar.detach(),
                                           return_log_w=True)
    _weight_z_gradient(z, log_w)
    return bound


def normalized_weights(log_w):
    """``w~ = softmax(log_w)`` over the samples: ``[k, B] -> [k, B]``, detached; 0 (not NaN) for
    an example whose log weights are all ``-inf`` (its bound is ``-inf``, its gradient 0)."""
    log_w = log_w.detach()
    w = torch.softmax(log_w, dim=0)
    return torch.where(torch.isneginf(log_w).all(0, keepdim=True), torch.zeros_like(w), w)


def _weight_z_gradient(z, log_w):
    """DReG's hook: ``z``'s gradient ``[k, B, Z]`` times the detached ``w~ = softmax(log_w)``."""
    if z.requires_grad:
        weights = normalized_weights(log_w).unsqueeze(-1).to(z.dtype)
        z.register_hook(lambda grad: grad * weights)


def importance_bound(log_lik, z, mu, logvar, estimator="iwae"):
    """``L_k`` per example ``[B]`` for any decoder likelihood, with ``estimator``'s gradient.

    ``log w_k = log_lik_k + log N(z_k; 0, I) - log N(z_k; mu, exp(logvar))``,
    ``L_k = logsumexp_k log w_k - log k``. For ``"stl"`` and ``"dreg"`` ``log q`` is taken at
    detached ``mu, logvar``, and ``"dreg"`` scales ``z``'s gradient by the normalized weights,
    as the Bernoulli estimators do.

    Args:
        log_lik: ``[k, B]`` ``log p(x|z_k)`` computed by the user from ``z`` (so its graph runs
            through ``z`` to the encoder and to the decoder's parameters).
        z: ``[k, B, Z]`` the draws ``mu + exp(logvar / 2) * eps`` that ``log_lik`` used.
        mu: ``[B, Z]`` the encoder's output, the mean.
        logvar: ``[B, Z]`` the encoder's output, the log-variance.
        estimator: ``"iwae"``, ``"stl"`` or ``"dreg"``.
    Returns:
        ``[B]``; float32 for float16/bfloat16 inputs.
    """
    get_estimator(estimator)
    if z.dim() != 3 or tuple(log_lik.shape) != tuple(z.shape[:2]):
        raise ValueError(f"log_lik, z: expected [k, B] and [k, B, Z], got {list(log_lik.shape)} "
                         f"and {list(z.shape)}")
    if estimator != "iwae":
        mu, logvar = mu.detach(), logvar.detach()
    log_w = log_lik + gaussian_log_prob(z) - gaussian_log_prob(z, mu, logvar)
    if estimator == "dreg":
        _weight_z_gradient(z, log_w)
    return iwae_bound(log_w)


ESTIMATORS = {"iwae": iwae, "stl": stl, "dreg": dreg}
"""Name -> estimator; the names :class:`~fastair.models.VAE` accepts."""


def get_estimator(name):
    """The estimator called ``name`` (a ValueError listing the choices otherwise)."""
    if not isinstance(name, str) or name not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {tuple(ESTIMATORS)}, got {name!r}")
    return ESTIMATORS[name]
