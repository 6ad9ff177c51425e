"""The wheel that `pip install .` builds holds every subpackage, the kernels and the C++ sources."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_packages_kernels_and_sources(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("fastair-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    source_packages = {p.parent.relative_to(ROOT).as_posix()
                       for p in (ROOT / "fastair").rglob("__init__.py")}
    for package in source_packages:
        assert f"{package}/__init__.py" in names, f"{package} is missing from the wheel"
    for kernel in (ROOT / "kernels").glob("*.py"):
        assert f"fastair/kernels/{kernel.name}" in names
    for source in list((ROOT / "csrc" / "cpu").glob("*.cpp")) + [ROOT / "csrc/cpu/common.h"]:
        assert f"fastair/csrc/cpu/{source.name}" in names


def test_a_plain_checkout_finds_the_kernels_and_sources(tmp_path):
    """Without an install (a copy of the checkout on sys.path, no site packages' .pth files),
    fastair.kernels and fastair.csrc come from kernels/ and csrc/, and the Triton backend loads."""
    import torch
    for name in ("fastair", "kernels", "csrc"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    site = str(Path(torch.__file__).resolve().parent.parent)
    code = ("import sys; sys.path[:0] = sys.argv[1:]\n"
            "import fastair, fastair.kernels, fastair.csrc\n"
            "from fastair.backends import module, native, resolve\n"
            "print(fastair.kernels.__file__, native.source_dir(), resolve('triton', 'cpu'),\n"
            "      hasattr(module('triton'), 'iwae_bernoulli_gaussian_fwd'))\n")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(tmp_path), site],
                         capture_output=True, text=True, cwd=tmp_path,
                         env={"TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    kernels, sources, backend, found = out.stdout.split()
    assert kernels == str(tmp_path / "kernels" / "__init__.py")
    assert sources == str(tmp_path / "csrc" / "cpu")
    assert (backend, found) == ("triton", "True")


def _setup_arguments(monkeypatch):
    """What setup.py passes to setup(), read by running it with setup() replaced."""
    import setuptools
    seen = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: seen.update(kwargs))
    monkeypatch.chdir(ROOT)
    code = compile((ROOT / "setup.py").read_text(), str(ROOT / "setup.py"), "exec")
    exec(code, {"__file__": str(ROOT / "setup.py"), "__name__": "__main__"})
    return seen


def test_dependencies_by_need(monkeypatch):
    """A plain install brings torch, numpy and ninja (the C++ build) only; triton comes with the
    gpu and test extras, tqdm with progress and test; no torch among the build requirements."""
    args = _setup_arguments(monkeypatch)
    names = [r.split(";")[0].split(">")[0].split("=")[0].strip() for r in args["install_requires"]]
    assert names == ["torch", "numpy", "ninja"]
    for extra in ("gpu", "test"):
        assert any(r.startswith("triton") for r in args["extras_require"][extra]), extra
    assert "tqdm" in args["extras_require"]["test"]
    assert args["package_data"]["fastair.data"] == ["mnist5k.npz", "README.md"]
    tomllib = pytest.importorskip("tomllib")
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert not any(r.startswith(("torch", "triton")) for r in build)


def test_makefile_install_builds_the_kernels():
    text = (ROOT / "Makefile").read_text()
    assert "-m fastair build" in text and "install: kernels" in text
