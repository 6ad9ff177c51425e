"""Precisions of the model's matmuls: one table for training, evaluation and the benchmarks.

``"fp32"`` runs everything in float32; ``"bf16"`` and ``"fp16"`` run the forward under
``torch.autocast`` in that dtype (the fused ops read the reduced-precision inputs and accumulate
in float32; parameters, their gradients and optimizer state stay float32).
"""
import contextlib
import functools

import torch

__all__ = ["PRECISIONS", "check_precision", "autocast", "flush_denormals", "flushing_denormals",
           "native_bf16", "cpu_flags"]

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


def flushing_denormals():
    """Whether the calling thread flushes denormal floats to zero (a probe: a float32 product
    whose exact result is denormal comes out as 0 under flush-to-zero or denormals-are-zero)."""
    tiny = torch.finfo(torch.float32).tiny
    return (torch.tensor([tiny / 4]) * 2).item() == 0.0


@contextlib.contextmanager
def flush_denormals(enabled=True):
    """``torch.set_flush_denormal(enabled)`` for the block, the previous mode restored after.

    fastair's own commands (``train``, ``evaluate``, ``sample``, ``reproduce``) run inside it,
    on by default (``--keep-denormals`` turns it off); importing fastair never changes the mode
    (docs/design.md section 1.12). The mode is per thread: set before the first parallel region,
    the intra-op thread pool inherits it; set later, only the calling thread changes (the fused
    kernels flush inside their own parallel regions either way).
    """
    before = flushing_denormals()
    changed = bool(enabled) != before and torch.set_flush_denormal(bool(enabled))
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(before)


@functools.lru_cache(maxsize=None)
def cpu_flags():
    """The CPU's feature flags (``avx512_bf16``, ``amx_bf16``, ...) from Linux's
    ``/proc/cpuinfo``, as a frozenset; empty where that file is missing."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device):
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CUDA device with bf16
    support, or a CPU with AVX512-BF16 or AMX-BF16 (Linux's ``/proc/cpuinfo``; elsewhere False).
    On such a CPU a bf16 matmul is about 2x (AVX512-BF16) to 8x (AMX) a float32 one; without,
    it is emulated and slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
