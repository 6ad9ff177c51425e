"""Rules of the layout that an edit could silently break (docs/layout.md):

- the tests, benchmarks and experiments use fastair's public names only: none imports a
  ``_private`` name or module of fastair, nor reads, patches or replaces a ``_private``
  attribute of a fastair module it imported (``trainer._adam``, ``monkeypatch.setattr(native,
  "_build", ...)``): make the name public, or test the public behaviour;
- no module re-exports another under an old name (``fastair.models.estimators`` was removed:
  the estimators are :mod:`fastair.nn.estimators`).
"""
import ast
import importlib.util
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = ("tests", "bench", "experiments")
"""The folders that use fastair from outside the package."""

REMOVED = ("fastair/models/estimators.py",)
"""Re-export shims removed, which must not come back."""


def _private(name):
    """``_x`` is private; ``__x__`` (``__version__``) is not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(source, filename="<snippet>"):
    """``["line N: what"]`` for each import in ``source`` of a private name or module of
    fastair: ``from fastair.x import _y``, ``from fastair.x._y import z``, ``import
    fastair.x._y``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module.split(".")[0] == "fastair"):
            parts = node.module.split(".")
            names = [a.name for a in node.names]
            bad = [p for p in parts if _private(p)] + [n for n in names if _private(n)]
            if bad:
                found.append(f"line {node.lineno}: from {node.module} import "
                             f"{', '.join(names)} ({', '.join(bad)})")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "fastair" and any(_private(p) for p in parts):
                    found.append(f"line {node.lineno}: import {alias.name}")
    return found


PRIVATE_ACCESS_ALLOWED = {
    # Each a test's reset of process-wide state that the module keeps private (a public seam for
    # it would be API for the tests only): the C++ build's outcome (loaded, or the error of a
    # failed build), the backends already warned about (one warning each), the file mode read once
    # from the umask (read again after the test sets the umask).
    "tests/ops/test_backend.py": {"fastair.backends.native._state", "fastair.backends._warned"},
    "tests/packaging/test_info.py": {"fastair.backends.native._state"},
    "tests/training/test_first_hour.py": {"fastair.io._mode"},
}
"""``{path relative to the root: {"fastair.module._name", ...}}``: the private attributes of
fastair modules that a file may still use, each with its reason. (A private attribute of an
object, such as a model's, is not an attribute of a module: this check does not see it.)"""

_BY_NAME = {"getattr", "setattr", "delattr", "hasattr"}
"""Calls that reach an attribute by name: the builtins, and ``monkeypatch.setattr`` and the like
(any call of a method so named)."""


@lru_cache(maxsize=None)
def _is_fastair_module(name):
    """Whether the dotted ``name`` is fastair or one of its modules (not a class or function)."""
    if name.split(".")[0] != "fastair":
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that is no package (fastair.functional.x)
        return False


def _module_bindings(tree):
    """``{local name: fastair module}`` of every import in ``tree`` that binds a module of
    fastair: ``import fastair.x`` (``fastair``), ``import fastair.x.y as m``, ``from fastair.x
    import y [as m]`` where ``fastair.x.y`` is a module."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "fastair":
                    continue
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    bound["fastair"] = "fastair"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module.split(".")[0] == "fastair"):
            for alias in node.names:
                if _is_fastair_module(f"{node.module}.{alias.name}"):
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _module_of(node, bound):
    """The fastair module that the expression ``node`` names (``m``, ``fastair.x.y``), or None;
    a private step on the way (``fastair._x.y``) is left to the caller's own check."""
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute) and not _private(node.attr):
        parent = _module_of(node.value, bound)
        if parent and _is_fastair_module(f"{parent}.{node.attr}"):
            return f"{parent}.{node.attr}"
    return None


def private_attributes(source, filename="<snippet>"):
    """``[(line, "module._name")]`` for each use in ``source`` of a private attribute of a
    fastair module that the file imported: ``m._x`` (read, written or called), ``getattr(m,
    "_x")`` / ``monkeypatch.setattr(m, "_x", ...)`` and the like, and ``monkeypatch.setattr(
    "fastair.m._x", ...)``."""
    tree = ast.parse(source, filename)
    bound = _module_bindings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            module = _module_of(node.value, bound)
            if module:
                found.append((node.lineno, f"{module}.{node.attr}"))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in _BY_NAME:
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                parts = first.value.split(".")
                if parts[0] == "fastair" and any(_private(p) for p in parts):
                    found.append((node.lineno, first.value))
            elif len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(
                    node.args[1].value, str) and _private(node.args[1].value):
                module = _module_of(first, bound)
                if module:
                    found.append((node.lineno, f"{module}.{node.args[1].value}"))
    return sorted(found)


def _python_files():
    for folder in OUTSIDE:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_the_checker_finds_private_imports_and_passes_public_ones():
    bad = ("from fastair.kernels import _common\n"
           "from fastair.kernels._common import log1p_small\n"
           "import fastair.reproduce._x as x\n"
           "def f():\n"
           "    from fastair.reproduce.runner import run_one, _check_spec\n")
    assert [line.split(":")[0] for line in private_imports(bad)] == [
        "line 1", "line 2", "line 3", "line 5"]
    good = ("import fastair\nfrom fastair import __version__, functional as _f\n"
            "from fastair.kernels.common import log1p_small\nfrom ._local import _x\n"
            "from torch.utils._pytree import tree_flatten\nimport os._x\n")
    assert private_imports(good) == []


def test_files_outside_the_package_import_no_private_names_of_fastair():
    files = list(_python_files())
    assert any(f.name == "test_layout_rules.py" for f in files)  # the scan sees this folder
    found = [f"{path.relative_to(ROOT)} {hit}" for path in files
             for hit in private_imports(path.read_text(encoding="utf-8"), str(path))]
    assert not found, ("private names of fastair imported from outside the package (make them "
                       "public or use the public behaviour):\n" + "\n".join(found))


def test_the_checker_finds_private_attributes_of_fastair_modules():
    bad = ("import fastair\n"
           "import fastair.backends.native as native\n"
           "from fastair.training import trainer as trainer_mod\n"
           "from fastair import cli\n"
           "native._build()\n"
           "x = trainer_mod._adam\n"
           "def test(monkeypatch):\n"
           "    monkeypatch.setattr(trainer_mod, '_adam', None)\n"
           "    monkeypatch.setattr('fastair.training.trainer._adam', None)\n"
           "    getattr(cli, '_build')\n"
           "    fastair.backends.native._state.clear()\n")
    assert private_attributes(bad) == [
        (5, "fastair.backends.native._build"), (6, "fastair.training.trainer._adam"),
        (8, "fastair.training.trainer._adam"), (9, "fastair.training.trainer._adam"),
        (10, "fastair.cli._build"), (11, "fastair.backends.native._state")]
    good = ("import fastair\nimport torch\n"
            "from fastair.training import Trainer, trainer as trainer_mod\n"
            "from fastair.models import VAE\n"
            "trainer_mod.make_optimizer, fastair.__version__, torch._dynamo.reset()\n"
            "Trainer._run_epoch, VAE(x_dim=2)._estimate, trainer_mod.Trainer._run_epoch\n"
            "def test(monkeypatch, model):\n"
            "    monkeypatch.setattr(trainer_mod, 'make_optimizer', None)\n"
            "    monkeypatch.setattr(model, '_x', None)\n"
            "    monkeypatch.setattr('torch._dynamo.x', None)\n")
    assert private_attributes(good) == []


def test_files_outside_the_package_use_no_private_attributes_of_fastair_modules():
    found = []
    for path in _python_files():
        rel = path.relative_to(ROOT).as_posix()
        allowed = PRIVATE_ACCESS_ALLOWED.get(rel, set())
        found += [f"{rel} line {line}: {what}"
                  for line, what in private_attributes(path.read_text(encoding="utf-8"), str(path))
                  if what not in allowed]
    assert not found, ("private attributes of fastair modules used from outside the package "
                       "(make them public or use the public behaviour):\n" + "\n".join(found))


@pytest.mark.parametrize("path", REMOVED)
def test_removed_re_export_shims_stay_removed(path):
    assert not (ROOT / path).exists(), f"{path} is a removed re-export: import the module itself"


def test_iwsvi_settings_have_one_home():
    """The defaults of iwsvi_log_likelihood, of `fastair evaluate` and of `fastair reproduce`
    are IWSVISettings' (reproduce's overrides in protocol.EVALUATOR)."""
    import dataclasses
    import inspect

    from fastair import cli
    from fastair.evaluation import IWSVISettings, fit_gaussian_q, iwsvi_log_likelihood
    from fastair.reproduce.protocol import EVALUATOR, ReproduceConfig

    d = IWSVISettings()
    names = [f.name for f in dataclasses.fields(d)]
    signature = inspect.signature(iwsvi_log_likelihood).parameters
    assert {n: signature[n].default for n in names} == d.kwargs()
    fit = inspect.signature(fit_gaussian_q).parameters
    assert {n: fit[n].default for n in d.fit_kwargs()} == d.fit_kwargs()
    args = cli.build_parser().parse_args(["evaluate", "run"])
    assert {n: getattr(args, n) for n in names if hasattr(args, n)} == {
        n: v for n, v in d.kwargs().items() if hasattr(args, n)}
    assert sum(hasattr(args, n) for n in names) >= 12
    config = ReproduceConfig()
    assert config.iwsvi_settings() == EVALUATOR.replace(elbo_samples=EVALUATOR.k_eval)
    assert dataclasses.replace(EVALUATOR, precision=d.precision,
                               fit_precision=d.fit_precision) == d  # the overrides: fp32 only
    assert config.evaluator() == dict(k_svi=16, max_steps=2000, lr=0.05, k_eval=5000, chunk=100,
                                      elbo_samples=5000, fit_precision="fp32", precision="fp32")
