"""Backends: ``reference`` (pure torch, the spec), ``native`` (C++ in csrc/), ``triton`` (kernels/).

The fused backends (``native`` and ``triton``) expose the same raw functions. They take canonical,
contiguous shapes prepared by :mod:`fastair.functional`, do no argument checking and no autograd
(that lives in :mod:`fastair.ops`). "acc" is the accumulation dtype (float32, or float64 when
inputs are float64); every tensor argument is in acc except ``logits`` (and the weights ``v`` and their gradient),
which may also be float16/bfloat16 while acc is float32.

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
``capped_weight_norm_fwd(v[O,I], u[O], H)``        ``(w[O,I], norm[O])``: ``w_i = s_i v_i``,
                                                   ``s_i = 1`` if ``||v_i|| <= H sigmoid(u_i)``
                                                   else ``H sigmoid(u_i) / ||v_i||``
``capped_weight_norm_bwd(dw, v, u, norm, H)``      ``(dv[O,I], du[O])``
``linear_bernoulli_fwd(h[R,H], weight[D,H],``      ``[R]``: ``bernoulli_fwd`` of the logits
``bias[D] or None, x[N,D])``                       ``h @ weight.T + bias`` (row r pairs with x
                                                   row r % N), never stored whole
``linear_bernoulli_bwd(grad[R], h, weight, bias,``  ``(dh[R,H], dweight[D,H], dbias[D])``,
``x)``                                             recomputing the logits tile by tile
=================================================  ==============================================

with ``log_w = bernoulli(logits, x) + log N(z; 0, I) - log N(z; mu, exp(logvar))``, so that
``dlogits = G (x - sigmoid(l))``, ``dz = G (-z + (z - mu) exp(-logvar))``,
``dmu = sum_k G (mu - z) exp(-logvar)`` and ``dlogvar = sum_k G (1 - (z - mu)^2 exp(-logvar)) / 2``.
Capped weight norm: where the cap is active, ``dv = (c/n) (dw - v (v.dw) / n^2)`` and
``du = (v.dw / n) H sigmoid(u) (1 - sigmoid(u))`` (``n = ||v_i||``, ``c = H sigmoid(u_i)``);
elsewhere, the tie included, ``dv = dw`` and ``du = 0``. ``v`` (and ``dw``, ``w``, ``dv``) may be
float16/bfloat16 with ``u`` and ``norm`` in float32.
``bernoulli_fwd`` and ``iwae_bg_fwd`` read the logits once; the backward functions read them once
and allocate nothing of their size except ``dlogits``.
"""
