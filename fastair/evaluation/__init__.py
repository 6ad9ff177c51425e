"""Evaluation: the encoder's amortized bound and the IW-SVI estimate of ``ln p(x)``.

- :func:`amortized_bound`: ``L_k(x)`` of the encoder, averaged over many draws (``bound``).
- :func:`iwsvi_log_likelihood`: IW-SVI with a stopping rule, per-example ESS and standard errors
  (``iwsvi``, built on ``fit_q`` and ``weights``).
"""
from fastair.evaluation.bound import amortized_bound
from fastair.evaluation.fit_q import QFit, fit_gaussian_q
from fastair.evaluation.iwsvi import INITS, iwsvi_log_likelihood
from fastair.evaluation.result import ESS_WARN, SE_WARN, IWSVIResult
from fastair.evaluation.weights import (WeightStats, gaussian_log_weights,
                                        streamed_log_mean_weight, streamed_weight_stats)

__all__ = ["ESS_WARN", "INITS", "IWSVIResult", "QFit", "SE_WARN", "WeightStats",
           "amortized_bound", "fit_gaussian_q", "gaussian_log_weights",
           "iwsvi_log_likelihood", "streamed_log_mean_weight", "streamed_weight_stats"]
