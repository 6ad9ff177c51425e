"""Gradient estimators: how a batch's k samples become the per-example objective that is
maximized (docs/design.md §1.5).

An estimator is a function ``(x [B, D], logits [k, B, D], z [k, B, Z], mu [B, Z], logvar [B, Z])
-> [B]`` whose value is the bound ``L_k`` and whose gradient is the estimator's. ``z`` is
``mu + exp(logvar / 2) * eps``, so the reparameterization path runs through it. A
:class:`~fastair.models.VAE` takes one by name (``VAE(..., estimator="iwae")``).

- ``iwae``: the standard gradient of ``L_k`` (Burda et al., 2016), the fused
  :func:`fastair.iwae_bernoulli_gaussian`.
"""
from fastair.functional import iwae_bernoulli_gaussian

__all__ = ["ESTIMATORS", "get_estimator", "iwae"]


def iwae(x, logits, z, mu, logvar):
    """``L_k`` per example ``[B]`` with its plain gradient (all paths through ``z``, ``mu`` and
    ``logvar``); ``k = 1`` is the ELBO with the usual reparameterization gradient."""
    return iwae_bernoulli_gaussian(x, logits, z, mu, logvar)


ESTIMATORS = {"iwae": iwae}
"""Name -> estimator; the names :class:`~fastair.models.VAE` accepts."""


def get_estimator(name):
    """The estimator called ``name`` (a ValueError listing the choices otherwise)."""
    if not isinstance(name, str) or name not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {tuple(ESTIMATORS)}, got {name!r}")
    return ESTIMATORS[name]
