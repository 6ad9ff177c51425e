"""Modules built on the fused ops: capped weight norm (WNI) as a parametrization and a layer."""
from fastair.nn.capped_weight_norm import CappedWeightNorm, CappedWeightNormLinear, capped_weight_norm_

__all__ = ["CappedWeightNorm", "CappedWeightNormLinear", "capped_weight_norm_"]
