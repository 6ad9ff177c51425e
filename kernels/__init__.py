"""Triton kernels of fastair, installed as ``fastair.kernels``: one module per op, named after it.

Each module holds its ``@triton.jit`` kernels and plain launcher functions ``NAME_fwd`` and
``NAME_bwd`` of the op ``NAME``, named in its ``__all__``, taking the canonical contiguous shapes
of :mod:`fastair.backends` (no argument checks, no autograd). :mod:`fastair.backends.triton`
collects the launchers of every module here, so a new module needs no list edited elsewhere:

- ``bernoulli_log_prob``, ``continuous_bernoulli_log_prob``, ``gaussian_log_prob``: the
  likelihoods summed over the last dim
- ``iwae_bound``: the k-sample bound of log weights (log-sum-exp minus log n)
- ``iwae_bernoulli_gaussian``: the whole k-sample bound of a Bernoulli decoder and a Gaussian
  encoder in one pass over the logits
- ``capped_weight_norm``
- ``linear_bernoulli_log_prob``, ``linear_continuous_bernoulli_log_prob``,
  ``linear_gaussian_log_prob``: the fused decoder heads (the Gaussian's adds its log-variance
  gradient)

``common`` (row blocking, the device guard, stable softplus/sigmoid) and ``linear_head`` (the
fused heads' kernels, generic over the likelihood) hold shared pieces and no launchers.
"""
