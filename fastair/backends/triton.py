"""Triton backend: the raw fused functions of :mod:`fastair.backends`, from :mod:`fastair.kernels`.

Kernels for CUDA tensors (CPU tensors only under ``TRITON_INTERPRET=1``). Every public module of
``fastair.kernels`` is imported and the launchers named in its ``__all__`` become attributes of
this module, so adding a kernel module edits nothing here. Importing this module raises
``ImportError`` when the ``triton`` package is not installed.
"""
import importlib
import pkgutil

try:
    import triton  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fastair.backends.triton needs the 'triton' package (pip install 'fastair[gpu]'); "
        "use the 'native' or 'reference' backend without it") from exc

from fastair import kernels

__all__ = []
for _info in pkgutil.iter_modules(kernels.__path__):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{kernels.__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
