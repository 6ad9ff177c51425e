"""``fastair.kernels`` and ``fastair.csrc`` from a plain checkout.

An install maps the repository's ``kernels/`` and ``csrc/`` into the package (``package_dir`` in
setup.py). Run from a checkout without installing (``PYTHONPATH=.``), those names would not
exist and ``auto`` would fall back to the reference; this finder, last on ``sys.meta_path`` so
that an install always wins, maps them to the folders beside ``fastair/`` when the folder above
is a fastair checkout (it holds ``setup.py`` and the folder).
"""
import importlib.abc
import importlib.util
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
_MAPPED = {"fastair.kernels": "kernels", "fastair.csrc": "csrc"}


class CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds ``fastair.kernels`` and ``fastair.csrc`` in a checkout's ``kernels/`` and ``csrc/``."""

    def find_spec(self, fullname, path=None, target=None):
        name = _MAPPED.get(fullname)
        if name is None:
            return None
        init = _ROOT / name / "__init__.py"
        if not (init.is_file() and (_ROOT / "setup.py").is_file()):
            return None
        return importlib.util.spec_from_file_location(
            fullname, init, submodule_search_locations=[str(init.parent)])


def install():
    """Append :class:`CheckoutFinder` to ``sys.meta_path`` (once; done on import)."""
    if not any(isinstance(f, CheckoutFinder) for f in sys.meta_path):
        sys.meta_path.append(CheckoutFinder())


install()
