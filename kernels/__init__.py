"""Triton kernels of fastair, installed as ``fastair.kernels``: one module per op.

Each module holds the ``@triton.jit`` kernels and plain launcher functions taking the canonical,
contiguous shapes of :mod:`fastair.backends` (no argument checks, no autograd):
``bernoulli``, ``gaussian``, ``logsumexp`` and ``iwae_bernoulli_gaussian``.
"""
