"""Evaluation: the bounds of a model and the IW-SVI estimate of ``ln p(x)``.

Every function takes any ``nn.Module`` with ``encode(x [B, D]) -> (mu, logvar)`` and
``decode_logits(z [..., B, Z]) -> logits [..., B, D]`` (:mod:`~fastair.evaluation.protocol`:
:func:`check_model`, :func:`log_weights`), using a model's own ``log_weights`` or a fused decoder
head where it has them.

- :func:`evaluate_bound`, :func:`split_bounds`: the clean ``L_k(x)`` of fixed draws (``bound``).
- :func:`amortized_bound`: ``L_k(x)`` of the encoder, averaged over many draws (``bound``).
- :func:`iwsvi_log_likelihood`: IW-SVI with a stopping rule, per-example ESS and standard errors
  (``iwsvi``, built on ``fit_q`` and ``weights``); :func:`sharded_iwsvi_log_likelihood` the
  same over the ranks of a ``torchrun`` process group (``sharded``); :class:`IWSVISettings` its
  settings and their defaults (``settings``), read by ``fastair evaluate`` and
  ``fastair reproduce`` too.
"""
from fastair.evaluation.ais import (
    AIS_INITS,
    AISResult,
    BDMCResult,
    ais_log_likelihood,
    bdmc,
    sigmoid_schedule,
)
from fastair.evaluation.bound import (
                                      EVAL_SEED,
                                      amortized_bound,
                                      bounds_table,
                                      evaluate_bound,
                                      split_bounds,
)
from fastair.evaluation.fit_q import QFit, fit_gaussian_q
from fastair.evaluation.iwsvi import INITS, iwsvi_log_likelihood
from fastair.evaluation.protocol import PATHS, check_model, log_weights
from fastair.evaluation.quadrature import quadrature_log_likelihood
from fastair.evaluation.result import ESS_WARN, SE_WARN, IWSVIResult
from fastair.evaluation.settings import IWSVISettings
from fastair.evaluation.sharded import sharded_iwsvi_log_likelihood
from fastair.evaluation.weights import (
                                      WeightStats,
                                      gaussian_log_weights,
                                      streamed_log_mean_weight,
                                      streamed_weight_stats,
)

__all__ = ["AIS_INITS", "AISResult", "BDMCResult", "ais_log_likelihood", "bdmc",
           "sigmoid_schedule", "ESS_WARN", "EVAL_SEED", "INITS", "IWSVIResult", "IWSVISettings",
           "PATHS", "QFit",
           "SE_WARN",
           "WeightStats", "amortized_bound", "bounds_table", "check_model", "evaluate_bound",
           "fit_gaussian_q", "log_weights",
           "gaussian_log_weights", "iwsvi_log_likelihood", "sharded_iwsvi_log_likelihood",
           "quadrature_log_likelihood", "split_bounds",
           "streamed_log_mean_weight", "streamed_weight_stats"]
