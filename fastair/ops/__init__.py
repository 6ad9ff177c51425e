"""torch.library registrations: one file per op, each with its fake (meta) implementation and
autograd formula, so that ``torch.compile(fullgraph=True)`` sees the fused kernels as single ops.

Every op takes the backend name (``native`` or ``triton``) as its last argument and canonical,
contiguous shapes (see :mod:`fastair.backends`). Each module of this package registers its ops
when imported; this file imports them all and re-exports what each names in its ``__all__``
(``fastair.ops.bernoulli_log_prob`` ...), so a new op module needs no edit here.
"""
import importlib
import pkgutil

__all__ = []
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
