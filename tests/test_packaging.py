"""The wheel that `pip install .` builds holds every subpackage, the kernels and the C++ sources."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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
