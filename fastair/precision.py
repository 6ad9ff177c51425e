"""Precisions of the model's matmuls: one table for training, evaluation and the benchmarks.

``"fp32"`` runs everything in float32; ``"bf16"`` and ``"fp16"`` run the forward under
``torch.autocast`` in that dtype (the fused ops read the reduced-precision inputs and accumulate
in float32; parameters, their gradients and optimizer state stay float32).
"""
import contextlib

import torch

__all__ = ["PRECISIONS", "check_precision", "autocast"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Name -> autocast dtype (None: no autocast)."""


def check_precision(precision):
    """A ValueError unless ``precision`` is a key of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {tuple(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(device_type, precision):
    """``torch.autocast`` on ``device_type`` in ``precision``'s dtype, or a no-op for fp32."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)
