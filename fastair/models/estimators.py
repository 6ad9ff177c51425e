"""The gradient estimators, where the models take them from: :mod:`fastair.nn.estimators`
(they need only the fused op, so they live below the models, beside
:class:`fastair.nn.IWAELoss`)."""
from fastair.nn.estimators import ESTIMATORS, dreg, get_estimator, iwae, stl

__all__ = ["ESTIMATORS", "get_estimator", "iwae", "stl", "dreg"]
