"""Triton kernels of fastair, installed as ``fastair.kernels``: one module per op.

Each module holds its ``@triton.jit`` kernels and plain launcher functions, named in its
``__all__``, taking the canonical contiguous shapes of :mod:`fastair.backends` (no argument
checks, no autograd). :mod:`fastair.backends.triton` collects the launchers of every module here,
so a new module needs no list edited elsewhere:

- ``bernoulli``: ``bernoulli_fwd``, ``bernoulli_bwd``
- ``gaussian``: ``gaussian_fwd``, ``gaussian_bwd``
- ``logsumexp``: ``logsumexp_fwd``, ``logsumexp_bwd``
- ``iwae_bernoulli_gaussian``: ``iwae_bg_fwd``, ``iwae_bg_bwd`` (the whole k-sample bound)
- ``capped_weight_norm``: ``capped_weight_norm_fwd``, ``capped_weight_norm_bwd``
- ``linear_bernoulli``: ``linear_bernoulli_fwd``, ``linear_bernoulli_bwd`` (the fused decoder head)
- ``continuous_bernoulli``: ``continuous_bernoulli_fwd``, ``continuous_bernoulli_bwd``
- ``linear_likelihoods``: ``linear_continuous_bernoulli_fwd``/``_bwd``, ``linear_gaussian_fwd``/
  ``_bwd`` (the fused decoder head for the other likelihoods: ``linear_bernoulli``'s kernels,
  generic over the likelihood, and the Gaussian's log-variance gradient)

``common`` holds the shared pieces (row blocking, the device guard, stable softplus/sigmoid) and
no launchers.
"""
