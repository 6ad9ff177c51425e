"""Modules: capped weight norm (WNI) as a parametrization and a layer; the VAE encoder and
decoder MLPs (each decoder, Bernoulli, continuous Bernoulli or Gaussian, with its own
``log_prob``); the gradient estimators and the drop-in :class:`IWAELoss`."""
from fastair.nn.capped_weight_norm import (
           CappedWeightNorm,
           CappedWeightNormLinear,
           capped_weight_norm_,
           row_norm_stats,
)
from fastair.nn.estimators import importance_bound
from fastair.nn.likelihoods import LIKELIHOODS, head_log_likelihood, log_likelihood
from fastair.nn.loss import IWAELoss, analytic_kl, iwae_loss
from fastair.nn.mlp import (
           DECODERS,
           BernoulliMLPDecoder,
           ContinuousBernoulliMLPDecoder,
           GaussianMLPDecoder,
           GaussianMLPEncoder,
           tanh_mlp,
)

__all__ = ["CappedWeightNorm", "CappedWeightNormLinear", "capped_weight_norm_",
           "GaussianMLPEncoder", "BernoulliMLPDecoder", "ContinuousBernoulliMLPDecoder",
           "GaussianMLPDecoder", "DECODERS", "LIKELIHOODS", "tanh_mlp", "IWAELoss", "iwae_loss",
           "analytic_kl", "importance_bound", "row_norm_stats", "log_likelihood",
           "head_log_likelihood"]
