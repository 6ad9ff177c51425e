"""Rules of the layout that an edit could silently break (docs/layout.md):

- the tests, benchmarks and experiments use fastair's public names only: none imports a
  ``_private`` name or module of fastair (make the name public, or test the public behaviour);
- no module re-exports another under an old name (``fastair.models.estimators`` was removed:
  the estimators are :mod:`fastair.nn.estimators`).
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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
