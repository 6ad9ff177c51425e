"""Turn a backend name and a device into the backend module that runs the raw kernels."""
import importlib
import os
import sys
import warnings

import torch

_warned = set()


def _warn_once(key, message):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _triton_usable(device_type):
    """Import the Triton kernels; on CPU tensors they run through the Triton interpreter."""
    if device_type == "cpu":
        if "fastair.kernels" not in sys.modules:
            # triton.jit reads TRITON_INTERPRET when the kernels are decorated, at import.
            os.environ.setdefault("TRITON_INTERPRET", "1")
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                "backend 'triton' on CPU tensors needs the Triton interpreter: set "
                "TRITON_INTERPRET=1 before fastair's Triton kernels are first used")
    elif device_type != "cuda":
        raise RuntimeError(f"backend 'triton' supports CUDA and CPU tensors, not {device_type!r}")
    importlib.import_module("fastair.backends.triton")
    return True


def _native_usable(device_type):
    if device_type != "cpu":
        raise RuntimeError(
            f"backend 'native' has C++ kernels for CPU tensors only, got {device_type!r} tensors; "
            "use 'triton' or 'auto' for CUDA tensors")
    from fastair.backends import native
    native.load()
    return True


def _resolve(name, device_type):
    if name == "reference":
        return "reference"
    if name == "triton":
        _triton_usable(device_type)
        return "triton"
    if name == "native":
        _native_usable(device_type)
        return "native"
    # auto: the fastest backend that works here, else the reference with one warning.
    choice = "triton" if device_type == "cuda" else "native"
    try:
        (_triton_usable if choice == "triton" else _native_usable)(device_type)
        return choice
    except Exception as err:  # a missing Triton, a failed build: degrade, never crash
        _warn_once((choice, device_type),
                   f"fastair: backend '{choice}' is unavailable on {device_type} ({err}); "
                   "using the pure-torch reference instead")
        return "reference"


try:  # under torch.compile, run the resolution once at trace time and keep its answer
    resolve = torch._dynamo.assume_constant_result(_resolve)
except AttributeError:  # pragma: no cover - older torch without the helper
    resolve = _resolve


def module(name):
    """The module holding the raw functions of backend ``name`` (``native`` or ``triton``)."""
    if name == "native":
        from fastair.backends import native
        return native
    if name == "triton":
        from fastair.backends import triton
        return triton
    raise ValueError(f"backend: {name!r} has no raw kernels")
