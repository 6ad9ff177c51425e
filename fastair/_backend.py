"""Which implementation the ops run: ``auto`` (default), ``triton``, ``native`` or ``reference``.

``auto`` picks ``triton`` for CUDA tensors and ``native`` (the C++ CPU kernels) for CPU tensors,
and falls back to ``reference`` with one warning where a fused backend cannot be used (no
Triton installed, a C++ build failure). The default comes from the ``FASTAIR_BACKEND``
environment variable.
"""
import contextlib
import os

BACKENDS = ("auto", "triton", "native", "reference")


def _check(name):
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    return name.strip().lower()


# A plain module global (not thread-local) so that torch.compile can read it and guard on it.
_current = _check(os.environ.get("FASTAIR_BACKEND", "auto") or "auto")


def get_backend():
    """The backend name in force (``auto`` unless set)."""
    return _current


def set_backend(name):
    """Set the backend for the process: one of ``auto``, ``triton``, ``native``, ``reference``."""
    global _current
    _current = _check(name)


@contextlib.contextmanager
def use_backend(name):
    """Context manager: run the ops with backend ``name`` inside the ``with`` block."""
    global _current
    previous, _current = _current, _check(name)
    try:
        yield
    finally:
        _current = previous
