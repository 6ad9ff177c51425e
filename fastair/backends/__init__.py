"""Backends: ``reference`` (pure torch, the spec), ``native`` (C++ in csrc/), ``triton`` (kernels/).

The fused backends (``native`` and ``triton``) expose the same raw functions. They take canonical,
contiguous shapes prepared by :mod:`fastair.functional`, do no argument checking and no autograd
(that lives in :mod:`fastair.ops`). "acc" is the accumulation dtype (float32, or float64 when
inputs are float64); every tensor argument is in acc except ``logits``, which may also be
float16/bfloat16 while acc is float32.

=================================================  ==============================================
function                                           returns
=================================================  ==============================================
``bernoulli_fwd(logits[M,N,D], x[N,D])``           ``[M,N]``: ``sum_d x*l - softplus(l)``
``bernoulli_bwd(grad[M,N], logits, x)``            ``dlogits[M,N,D]`` (logits' dtype):
                                                   ``grad * (x - sigmoid(l))``
``gaussian_fwd(z[M,N,Z], mu[N,Z], logvar[N,Z])``   ``[M,N]``: ``log N(z; mu, exp(logvar))``
``gaussian_bwd(grad[M,N], z, mu, logvar)``         ``(dz[M,N,Z], dmu[N,Z], dlogvar[N,Z])``
``logsumexp_fwd(v[n,R])``                          ``[R]``: ``log sum_i exp(v[i, r])``
``logsumexp_bwd(grad[R], v[n,R], lse[R])``         ``[n,R]``: ``grad * exp(v - lse)``, 0 where
                                                   ``lse == -inf``
``iwae_bg_fwd(x[B,D], logits[k,B,D], z[k,B,Z],``   ``(log_w[k,B], lse[B])``; ``lse`` is the
``mu[B,Z], logvar[B,Z])``                          logsumexp of ``log_w`` over k
``iwae_bg_bwd(G[k,B], x, logits, z, mu, logvar)``  ``(dlogits, dz, dmu, dlogvar)`` where ``G`` is
                                                   the gradient with respect to ``log_w``
=================================================  ==============================================

with ``log_w = bernoulli(logits, x) + log N(z; 0, I) - log N(z; mu, exp(logvar))``, so that
``dlogits = G (x - sigmoid(l))``, ``dz = G (-z + (z - mu) exp(-logvar))``,
``dmu = sum_k G (mu - z) exp(-logvar)`` and ``dlogvar = sum_k G (1 - (z - mu)^2 exp(-logvar)) / 2``.
``bernoulli_fwd`` and ``iwae_bg_fwd`` read the logits once; the backward functions read them once
and allocate nothing of their size except ``dlogits``.
"""
