"""The k-sample IWAE loss as a drop-in for a user's own VAE: :class:`IWAELoss` and
:func:`iwae_loss`.

The user brings the encoder's ``mu, logvar`` and a decoder (any callable from ``z [k, B, Z]``
to logits ``[k, B, D]``); the loss draws ``eps``, forms ``z = mu + exp(logvar / 2) eps``, calls
the decoder and the fused bound with the chosen gradient estimator, and returns ``-L_k``::

    loss_fn = fastair.nn.IWAELoss(k=64, estimator="dreg")
    mu, logvar = encoder(x)
    loss = loss_fn(x, mu, logvar, decoder)      # mean over the batch of -L_64(x)
    loss.backward()

The decoder split in two, ``trunk`` (``z [k, B, Z] -> h [k, B, H]``) and its last
``nn.Linear(H, D)`` ``head``, keeps the ``[k, B, D]`` logits out of memory (forward and
backward: the fused head of docs/design.md §1.7), and ``k_chunk`` runs the samples through
trunk and head a chunk at a time, recomputed in the backward, so that memory stays flat in k::

    loss_fn = fastair.nn.IWAELoss(k=2048, estimator="dreg", k_chunk=128)
    loss = loss_fn(x, mu, logvar, decoder.trunk, head=decoder.out)

The likelihood (``likelihood=``) is ``"bernoulli"`` (default: binary data, the decoder's output
the Bernoulli logits), ``"continuous_bernoulli"`` (data in [0, 1] such as grey levels, the output
the continuous Bernoulli logits, :func:`fastair.continuous_bernoulli_log_prob`) or ``"gaussian"``
(real data, the output the mean of ``N(mean, exp(logvar_x))``; :class:`IWAELoss` owns a learned
log-scale ``log_scale``, ``logvar_x = 2 log_scale``, so give the optimizer its parameters too)::

    loss_fn = fastair.nn.IWAELoss(k=64, estimator="dreg", likelihood="gaussian")
    opt = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()))

The fused head serves every likelihood: the layer and the likelihood's term are one op
(:func:`fastair.linear_bernoulli_log_prob`, :func:`fastair.linear_continuous_bernoulli_log_prob`,
:func:`fastair.linear_gaussian_log_prob`, whose ``logvar_x`` gets its gradient from the op), so
the ``[k, B, D]`` output is never stored for any of them.

All paths draw the same ``eps`` (that of one ``torch.randn`` of ``[k, B, Z]``), so one generator
seed gives the same loss and gradients on every path and for every ``k_chunk``. With
``k_chunk`` on CPU, where ``B * Z`` is a multiple of 16, the draws are made a chunk at a time
(equal to the one draw) and remade in the backward from the generator's state, so that nothing
of ``k``'s size but the ``[k, B]`` log weights is held; otherwise the ``[k, B, Z]`` draws are
kept. An ``nn.Module`` decoder (or trunk) is chunked by a custom autograd function whose forward
builds no graph; any other callable by ``torch.utils.checkpoint``. Either way the global RNG
state is restored when a chunk is remade, so dropout draws the same masks.
"""
import math
import warnings

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from fastair._checks import check_broadcasts_to, check_likelihood_data, shape_str
from fastair.errors import EmptyBatch
from fastair.functional import (
    bernoulli_log_prob,
    gaussian_log_prob,
    iwae_bound,
)
from fastair.nn.estimators import get_estimator, importance_bound, normalized_weights
from fastair.nn.likelihoods import LIKELIHOODS, head_log_likelihood, log_likelihood
from fastair.nn.mlp import GAUSSIAN_SCALES

__all__ = ["IWAELoss", "iwae_loss", "analytic_kl", "REDUCTIONS", "KL_CHOICES",
           "GAUSSIAN_SCALES"]

REDUCTIONS = ("mean", "sum", "none")
KL_CHOICES = (None, "analytic")
"""``kl=None``: the sampled ``log p(z) - log q(z|x)`` in every log weight (any k);
``kl="analytic"``: the closed-form ``KL(q(z|x) || N(0, I))`` (k = 1 only)."""


_CHOOSING = """Which to choose (the three estimators give one value, ``L_k``, on the same draws):

    - ``kl="analytic"`` (k = 1, ``estimator="iwae"``): the ELBO as most VAE code writes it,
      one sample for ``log p(x|z)`` and the closed-form ``KL(q(z|x) || N(0, I))``: less noise
      than sampling the KL; the usual choice for a plain VAE.
    - ``"iwae"`` (default): the plain gradient of ``L_k`` (Burda et al., 2016); at k = 1 the
      ELBO with a sampled KL. Its encoder gradient gets noisier relative to its size as k
      grows (Rainforth et al., 2018): for k > 1 prefer ``"dreg"``.
    - ``"stl"`` (sticking the landing): ``log q`` at fixed parameters; at k = 1 an unbiased
      ELBO gradient with less variance near the optimum (the sampled-KL alternative to
      ``kl="analytic"``); biased for k > 1, so not for IWAE.
    - ``"dreg"`` (doubly reparameterized): for k > 1, unbiased for the IWAE gradient with an
      encoder signal-to-noise ratio that grows with k; same cost as ``"iwae"``. The decoder's
      gradient is the same under all three."""


def analytic_kl(mu, logvar):
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` per example, in closed form:
    ``1/2 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)``. ``[..., Z] -> [...]``, float32 for
    float16/bfloat16 inputs (what ``kl="analytic"`` subtracts)."""
    acc = torch.promote_types(torch.promote_types(mu.dtype, logvar.dtype), torch.float32)
    mu, logvar = mu.to(acc), logvar.to(acc)
    return 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar).sum(-1)


def _check_options(k, estimator, reduction, k_chunk, kl, likelihood="bernoulli"):
    get_estimator(estimator)
    if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood: expected one of {LIKELIHOODS}, got {likelihood!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
    if k_chunk is not None and (isinstance(k_chunk, bool) or not isinstance(k_chunk, int)
                                or k_chunk < 1):
        raise ValueError(f"k_chunk: expected None or an int >= 1, got {k_chunk!r}")
    if kl not in KL_CHOICES:
        raise ValueError(f"kl: expected None (sampled) or 'analytic', got {kl!r}")
    if kl == "analytic" and k != 1:
        raise ValueError(f"kl='analytic' needs k = 1, got k = {k}: the closed-form KL belongs to "
                         f"the ELBO; the k-sample bound takes log p(z) - log q(z|x) at each "
                         f"sample inside its log-sum-exp (use kl=None with k > 1)")
    if kl == "analytic" and estimator != "iwae":
        raise ValueError(f"kl='analytic' takes estimator='iwae' (the reparameterization "
                         f"gradient of the closed-form ELBO), got estimator={estimator!r}, which "
                         f"changes how a sampled log q(z|x) is differentiated (use kl=None)")


def _head_params(head, d):
    weight, bias = getattr(head, "weight", None), getattr(head, "bias", None)
    if (not isinstance(weight, torch.Tensor) or weight.dim() != 2
            or not (bias is None or isinstance(bias, torch.Tensor)
                    and tuple(bias.shape) == tuple(weight.shape[:1]))):
        raise TypeError(f"head: expected the decoder's last nn.Linear(H, D) (weight [D, H], bias "
                        f"[D] or None), got {type(head).__name__}")
    if weight.shape[0] != d:
        raise ValueError(f"head: expected nn.Linear(H, D) with D = {d} from x, got weight of "
                         f"shape {shape_str(weight.shape)}")
    return weight, bias


_OUTPUTS = {"bernoulli": "logits", "continuous_bernoulli": "continuous Bernoulli logits",
            "gaussian": "Gaussian means"}


def _decoder_logits(decoder, z, x, likelihood="bernoulli"):
    logits = decoder(z)
    want = (z.shape[0], x.shape[0], x.shape[1])
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
        got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"decoder: expected {_OUTPUTS[likelihood]} of shape [k, B, D] = "
                         f"{list(want)} for z {list(z.shape)}, got {got}")
    return logits


def _logvar_x(logvar_x, x, likelihood):
    """The Gaussian's log-variance, checked: a tensor (or number) broadcastable to ``x [B, D]``
    for ``"gaussian"``, None for the other likelihoods."""
    if likelihood != "gaussian":
        if logvar_x is not None:
            raise ValueError(f"logvar_x: the log-variance of the Gaussian likelihood; got one "
                             f"with likelihood={likelihood!r} (pass likelihood='gaussian', or "
                             f"drop logvar_x)")
        return None
    if logvar_x is None:
        raise ValueError("logvar_x: likelihood='gaussian' needs the log-variance of p(x|z), a "
                         "tensor of shape [], [D] or [B, D] (IWAELoss(likelihood='gaussian') "
                         "learns its own)")
    if not isinstance(logvar_x, torch.Tensor):
        if isinstance(logvar_x, bool) or not isinstance(logvar_x, (int, float)):
            raise TypeError(f"logvar_x: expected a tensor or a number, got "
                            f"{type(logvar_x).__name__}")
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        logvar_x = torch.tensor(float(logvar_x), dtype=dtype, device=x.device)
    if not logvar_x.is_floating_point():
        raise TypeError(f"logvar_x: expected a floating-point tensor, got {logvar_x.dtype}")
    check_broadcasts_to("logvar_x", logvar_x, x.shape, "x [B, D]")
    if logvar_x.device != x.device:
        raise ValueError(f"logvar_x: on {logvar_x.device}, x on {x.device}: put them on one "
                         f"device (an IWAELoss's log_scale: move the loss, loss_fn.to(device))")
    return logvar_x


def _check_probabilities(logits, state):
    """Warn (once per ``state``, the loss instance; each call without one) where the first
    sample's outputs ``[B, D]`` all lie in [0, 1]: probabilities passed as logits."""
    if state is not None and state._warned_probabilities:
        return
    lo, hi = torch.aminmax(logits[0].detach())
    if lo.item() >= 0 and hi.item() <= 1:
        if state is not None:
            state._warned_probabilities = True
        warnings.warn("decoder: its outputs all lie in [0, 1] (those of the first sample, [B, D]): "
                      "probabilities passed as logits? The loss takes Bernoulli logits: drop the "
                      "decoder's final sigmoid (warned once per loss instance)", stacklevel=2)


_SPLIT_DRAWS_MATCH = {}


def _draws_replayable(mu):
    """Whether ``k`` draws ``[k, B, Z]`` made ``c`` samples at a time from one generator equal
    one ``torch.randn`` of all of them, so that a chunk's draws can be remade from the
    generator's state at its start. True for CPU generators where ``B * Z`` is a multiple of 16
    (torch fills a CPU normal tensor in blocks of 16 from one uniform per element, in order);
    checked once per dtype on a probe, so that another torch that fills differently falls back
    to keeping the draws."""
    if mu.device.type != "cpu" or (mu.shape[0] * mu.shape[1]) % 16 != 0 or mu.numel() == 0:
        return False
    if mu.dtype not in _SPLIT_DRAWS_MATCH:
        rows, width, chunk = 1500, 48, 700  # 72000 numbers, chunks above torch's grain size
        whole, parts = torch.Generator().manual_seed(20240), torch.Generator().manual_seed(20240)
        full = torch.randn((rows, width), dtype=mu.dtype, generator=whole)
        split = torch.cat([torch.randn((min(chunk, rows - i), width), dtype=mu.dtype,
                                       generator=parts) for i in range(0, rows, chunk)])
        _SPLIT_DRAWS_MATCH[mu.dtype] = (torch.equal(full, split)
                                        and torch.equal(whole.get_state(), parts.get_state()))
    return _SPLIT_DRAWS_MATCH[mu.dtype]


def _parameters(decoder):
    """What a chunked decoder's gradient goes to, besides the tensors the log-likelihood reads
    (the head's weight and bias, the Gaussian's ``logvar_x``): the decoder's (or trunk's)
    parameters; None for a decoder that is not an ``nn.Module`` (its parameters are unknown:
    its chunks are checkpointed with ``torch.utils.checkpoint`` instead)."""
    if not isinstance(decoder, nn.Module):
        return None
    params, seen = [], set()
    for t in decoder.parameters():
        if id(t) not in seen:
            seen.add(id(t))
            params.append(t)
    return params


class _Chunks:
    """The k samples of one loss call in chunks of ``step``: their draws (kept, or remade
    from the generator's state at each chunk's start), the global RNG state each chunk's
    decoder saw (so that dropout draws the same masks when the chunk is remade) and the
    autocast state of the forward."""

    def __init__(self, k, step, log_weights, params, extras, source, eps):
        self.starts = [(i, min(step, k - i)) for i in range(0, k, step)]
        self.log_weights, self.params, self.source, self.eps = log_weights, params, source, eps
        self.extras = extras  # the tensors log_weights reads besides the decoder's parameters
        self.k = k

    def _draws(self, j, mu, generator):
        start, n = self.starts[j]
        if self.eps is not None:
            return self.eps[start:start + n]
        return torch.randn((n,) + tuple(mu.shape), dtype=mu.dtype, device=mu.device,
                           generator=generator)

    def _rng_state(self):
        state = torch.get_rng_state()
        return (state, torch.cuda.get_rng_state(self.device)) if self.cuda else (state,)

    def forward(self, mu, logvar):
        self.device, self.cuda = mu.device, mu.device.type == "cuda"
        self.autocast = (torch.is_autocast_enabled(mu.device.type),
                         torch.get_autocast_dtype(mu.device.type))
        out = None
        for j, (start, n) in enumerate(self.starts):
            if self.source is not None:  # preallocated: nothing of k's size made in the loop
                state = self.source.get_state()
                if j == 0:
                    self.draw_states = state.new_empty((len(self.starts),) + state.shape)
                self.draw_states[j].copy_(state)
            eps = self._draws(j, mu, self.source)
            rng = self._rng_state()
            if j == 0:
                self.rng_states = [r.new_empty((len(self.starts),) + r.shape) for r in rng]
            for buf, r in zip(self.rng_states, rng):
                buf[j].copy_(r)
            log_w = self.log_weights(mu, logvar, eps, start, self.extras)
            if out is None:
                out = log_w.new_empty((self.k,) + tuple(log_w.shape[1:]))
            out[start:start + n] = log_w
        return out

    def backward(self, grad, mu, logvar, needs):
        mu = mu.detach().requires_grad_(needs[0])
        logvar = logvar.detach().requires_grad_(needs[1])
        # the extras (head weight and bias, logvar_x) cut from the graph that made them, which
        # may run through the decoder's own parameters (a Gaussian decoder's log_scale): their
        # gradients go back through it once, from this function's output
        n = 2 + len(self.params)
        extras = [t.detach().requires_grad_(needs[n + i]) for i, t in enumerate(self.extras)]
        inputs = [mu, logvar] + self.params + extras
        wanted = [i for i, t in enumerate(inputs) if needs[i] and t.requires_grad]
        total = [torch.zeros_like(inputs[i]) for i in wanted]
        generator = None
        if self.source is not None:
            generator = torch.Generator(device=self.device)
        devices = [self.device] if self.cuda else []
        enabled, dtype = self.autocast
        with torch.random.fork_rng(devices=devices), torch.enable_grad(), \
                torch.autocast(self.device.type, dtype=dtype, enabled=enabled):
            for j, (start, n) in enumerate(self.starts):
                if generator is not None:
                    generator.set_state(self.draw_states[j].clone())  # a row: own storage
                eps = self._draws(j, mu, generator)
                torch.set_rng_state(self.rng_states[0][j].clone())
                if self.cuda:
                    torch.cuda.set_rng_state(self.rng_states[1][j].clone(), self.device)
                log_w = self.log_weights(mu, logvar, eps, start, extras)
                grads = torch.autograd.grad(log_w, [inputs[i] for i in wanted],
                                            grad[start:start + n], allow_unused=True)
                for acc, g in zip(total, grads):
                    if g is not None:
                        acc.add_(g)
        out = [None] * len(inputs)
        for i, acc in zip(wanted, total):
            out[i] = acc
        return out


class _ChunkedLogWeights(torch.autograd.Function):
    """``log_w [k, B]`` from :class:`_Chunks`: the forward keeps no chunk's activations, the
    backward remakes one chunk at a time and sums its gradients for ``mu``, ``logvar``, the
    decoder's parameters and the extras (``torch.autograd.grad`` of each chunk: first-order
    only)."""

    @staticmethod
    def forward(ctx, chunks, mu, logvar, *params):
        ctx.chunks = chunks
        ctx.save_for_backward(mu, logvar)
        return chunks.forward(mu, logvar)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        mu, logvar = ctx.saved_tensors
        return (None, *ctx.chunks.backward(grad, mu, logvar, ctx.needs_input_grad[1:]))


def _negative_bound(x, mu, logvar, decoder, k, estimator, generator, check_input, head, k_chunk,
                    kl, state, eps=None, likelihood="bernoulli", logvar_x=None):
    """``-L_k(x)`` per example ``[B]`` (``-(E log p(x|z) - KL)`` for ``kl="analytic"``)."""
    if mu.dim() != 2 or logvar.shape != mu.shape:
        raise ValueError(f"mu, logvar: expected two [B, Z] tensors of one shape, got "
                         f"{list(mu.shape)} and {list(logvar.shape)}")
    if eps is not None and (not isinstance(eps, torch.Tensor)
                            or tuple(eps.shape) != (k,) + tuple(mu.shape)):
        got = shape_str(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__
        raise ValueError(f"eps: expected the standard normal draws [k, B, Z] = "
                         f"{shape_str((k,) + tuple(mu.shape))}, got {got}")
    if x.dim() != 2 or x.shape[0] != mu.shape[0]:
        raise ValueError(f"x: expected [B, D] with B = {mu.shape[0]} from mu, got "
                         f"{list(x.shape)}")
    if x.shape[0] == 0:
        raise EmptyBatch(f"x: the batch is empty (x of shape {shape_str(x.shape)}, mu "
                         f"{shape_str(mu.shape)}): the loss of no examples is undefined (its "
                         f"mean would be NaN); skip empty batches before calling the loss")
    bernoulli = likelihood == "bernoulli"
    logvar_x = _logvar_x(logvar_x, x, likelihood)
    if check_input:
        check_likelihood_data("x", x, likelihood)
    if likelihood == "gaussian" and not x.is_floating_point():
        x = x.to(mu.dtype)
    weight, bias = (None, None) if head is None else _head_params(head, x.shape[1])
    step = k if k_chunk is None else min(k_chunk, k)
    replay = step < k and eps is None and _draws_replayable(mu)
    if not replay and eps is None:  # one draw of all k samples, kept until the backward
        eps = torch.randn((k,) + tuple(mu.shape), dtype=mu.dtype, device=mu.device,
                          generator=generator)
    if bernoulli and head is None and k_chunk is None:  # the logits, whole, and the one-pass bound
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = _decoder_logits(decoder, z, x)
        if check_input:
            _check_probabilities(logits, state)
        if kl == "analytic":
            return analytic_kl(mu, logvar) - bernoulli_log_prob(logits, x)[0]
        return -get_estimator(estimator)(x, logits, z, mu, logvar)

    pending_check = [check_input and head is None and bernoulli]
    # the tensors log p(x|z) reads besides the decoder: a chunked backward cuts them from
    # their graph and returns their gradients (_Chunks.backward)
    extras = [t for t in (weight, bias, logvar_x) if t is not None]

    def log_lik(z, given=None):  # log p(x|z) [n, B] for z [n, B, Z]; given: extras to use
        w, b, lv = weight, bias, logvar_x
        if given is not None:
            it = iter(given)
            w, b, lv = (None if t is None else next(it) for t in (weight, bias, logvar_x))
        if head is None:
            logits = _decoder_logits(decoder, z, x, likelihood)
            if pending_check[0]:  # the first chunk's forward only, not its recomputation
                pending_check[0] = False
                _check_probabilities(logits, state)
            return log_likelihood(likelihood, logits, x, lv)
        h = decoder(z)
        if (not isinstance(h, torch.Tensor) or tuple(h.shape[:-1]) != tuple(z.shape[:-1])
                or h.dim() != 3 or h.shape[-1] != weight.shape[1]):
            got = shape_str(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise ValueError(f"trunk: expected h of shape [k, B, H] = "
                             f"{shape_str(tuple(z.shape[:-1]) + (weight.shape[1],))} for z "
                             f"{shape_str(z.shape)} (H from head), got {got}")
        # the layer fused with the likelihood: no [n, B, D] output stored
        return head_log_likelihood(likelihood, h, w, b, x, lv)

    if k_chunk is None and kl is None:  # all k samples at once
        z = mu + torch.exp(0.5 * logvar) * eps
        return -importance_bound(log_lik(z), z, mu, logvar, estimator)

    weights = {} if estimator == "dreg" else None  # DReG's softmax weights, once all are known

    def log_weights(mu, logvar, eps, start, given=None):  # [n, B]: samples start, ..., start+n-1
        z = mu + torch.exp(0.5 * logvar) * eps
        if weights is not None and z.requires_grad:
            stop = start + z.shape[0]
            z.register_hook(lambda g: g * weights["w"][start:stop].unsqueeze(-1).to(g.dtype))
        out = log_lik(z, given)
        if kl is None:
            q_mu, q_logvar = (mu, logvar) if estimator == "iwae" else (mu.detach(),
                                                                       logvar.detach())
            out = out + gaussian_log_prob(z) - gaussian_log_prob(z, q_mu, q_logvar)
        return out

    def redrawn_log_weights(mu, logvar, rng_state, start, n):  # the chunk's draws, remade
        g = torch.Generator(device=mu.device)
        g.set_state(rng_state)
        eps = torch.randn((n,) + tuple(mu.shape), dtype=mu.dtype, device=mu.device, generator=g)
        end_states[start] = g.get_state()
        return log_weights(mu, logvar, eps, start)

    def run(fn, *args):  # a chunk, recomputed in the backward when k_chunk is given
        if k_chunk is not None and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    pieces, end_states = [], {}
    params = _parameters(decoder)
    if k_chunk is not None and torch.is_grad_enabled() and params is not None:
        # chunks made without a graph and remade one at a time in the backward
        source = generator if generator is not None else torch.default_generator
        chunks = _Chunks(k, step, log_weights, params, extras, source if replay else None,
                         None if replay else eps)
        pieces = [_ChunkedLogWeights.apply(chunks, mu, logvar, *params, *extras)]
    elif replay:  # no [k, B, Z] draws kept: each chunk's are remade from the generator's state
        source = generator if generator is not None else torch.default_generator
        rng_state = source.get_state()
        for start in range(0, k, step):
            pieces.append(run(redrawn_log_weights, mu, logvar, rng_state, start,
                              min(step, k - start)))
            rng_state = end_states[start]
        source.set_state(rng_state)  # where one draw of all k samples would have left it
    else:
        pieces = [run(log_weights, mu, logvar, eps[i:i + step], i) for i in range(0, k, step)]
    log_w = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    if weights is not None:
        weights["w"] = normalized_weights(log_w)
    if kl == "analytic":
        return analytic_kl(mu, logvar) - log_w[0]
    return -iwae_bound(log_w)


def iwae_loss(x, mu, logvar, decoder, k=1, estimator="iwae", reduction="mean", generator=None,
              check_input=True, *, head=None, k_chunk=None, kl=None, eps=None,
              likelihood="bernoulli", logvar_x=None):
    """``-L_k(x)`` for a Gaussian encoder and a Bernoulli (continuous Bernoulli, Gaussian)
    decoder (see :class:`IWAELoss`).

    Args:
        x: ``[B, D]`` data: in [0, 1] (binary for the Bernoulli likelihood, any value in [0, 1]
            for the continuous Bernoulli), finite for the Gaussian.
        mu: ``[B, Z]`` the encoder's output, the mean.
        logvar: ``[B, Z]`` the encoder's output, the log-variance.
        decoder: a callable ``z [k, B, Z] -> out [k, B, D]``, ``out`` the likelihood's
            parameter (``likelihood``; an ``nn.Module`` applying Linear layers over the last dim
            works as it is); with ``head``, the decoder's trunk: ``z [k, B, Z] -> h [k, B, H]``,
            the input of its last layer.
        k: importance samples (1: the ELBO).
        estimator: ``"iwae"``, ``"stl"`` or ``"dreg"`` (:mod:`fastair.nn.estimators`).
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"`` (``[B]``).
        generator: an optional ``torch.Generator`` for the draws.
        check_input: raise a ValueError naming ``x`` for non-finite ``x`` or (Bernoulli and
            continuous Bernoulli) values outside [0, 1], and, for the Bernoulli likelihood,
            warn where the decoder's outputs (its first sample's) all lie in [0, 1]:
            probabilities given as logits (without ``head``; each call that finds it warns,
            while :class:`IWAELoss` warns once per instance).
        head: the decoder's last ``nn.Linear(H, D)`` (anything with ``weight [D, H]`` and
            ``bias [D]`` or None). The layer and the likelihood's term are then one fused op
            (:func:`fastair.linear_bernoulli_log_prob`,
            :func:`fastair.linear_continuous_bernoulli_log_prob`,
            :func:`fastair.linear_gaussian_log_prob` with ``logvar_x``) and the ``[k, B, D]``
            logits (means) are never stored, in the forward or the backward, under autocast
            too.
        k_chunk: None (all k samples at once) or ``c``: the samples go through the decoder (or
            trunk and head) ``c`` at a time and each chunk is recomputed in the backward
            (module docstring), so that activations are held for one chunk only; the ``[k, B]``
            log weights are kept (and the ``[k, B, Z]`` draws, except on CPU with ``B * Z`` a
            multiple of 16, where they are remade). The same draws, so the same loss and
            gradients (to rounding), for every ``k_chunk``. Costs one more forward of the
            decoder per step; first-order gradients only (no double backward).
        kl: None (the sampled ``log p(z) - log q(z|x)``) or ``"analytic"``: the ELBO with the
            closed-form KL (:func:`analytic_kl`); only at ``k = 1`` with ``estimator="iwae"``
            (a ValueError naming ``kl`` and ``k`` otherwise).
        eps: None (fresh draws from ``generator``) or the standard normal draws ``[k, B, Z]``
            to use, ``z = mu + exp(logvar / 2) eps`` (kept until the backward, with or without
            ``k_chunk``): how a model that makes its own draws (a DVAE's two terms, a rank's
            rows of a global batch) calls the loss.
        likelihood: ``p(x|z)``, one of :data:`LIKELIHOODS`: ``"bernoulli"`` (default; the
            decoder's output the Bernoulli logits), ``"continuous_bernoulli"`` (its output the
            continuous Bernoulli logits, :func:`fastair.continuous_bernoulli_log_prob`) or
            ``"gaussian"`` (its output the mean; ``log p(x|z) = gaussian_log_prob(x, mean,
            logvar_x)``, with gradients to the mean and ``logvar_x``).
        logvar_x: the Gaussian's log-variance, required for ``likelihood="gaussian"`` (and
            only there): a tensor (or number) of shape ``[]``, ``[D]`` or ``[B, D]``,
            broadcast against the ``[k, B, D]`` means; it gets a gradient where it requires one.

    {choosing}

    Returns:
        a scalar, or ``[B]`` for ``reduction="none"``; float32 for float16/bfloat16 logits.
    Raises:
        fastair.errors.EmptyBatch: (a ValueError) ``x`` has no rows (``B = 0``), whatever
            ``check_input`` and ``reduction`` say.
    """
    _check_options(k, estimator, reduction, k_chunk, kl, likelihood)
    return _reduce(_negative_bound(x, mu, logvar, decoder, k, estimator, generator, check_input,
                                   head, k_chunk, kl, None, eps, likelihood, logvar_x), reduction)


iwae_loss.__doc__ = iwae_loss.__doc__.replace("{choosing}", _CHOOSING)


def _reduce(loss, reduction):
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


class IWAELoss(nn.Module):
    """``-L_k(x)``, the negative k-sample IWAE bound, from a user's encoder outputs and decoder.

    ``L_k(x) = log (1/k) sum_k p(x|z_k) p(z_k) / q(z_k|x)``, ``z_k = mu + exp(logvar/2) eps_k``,
    with a standard normal prior and a Bernoulli decoder (one fused pass over the logits), or a
    continuous Bernoulli or Gaussian one (``likelihood``).

    Args:
        k: importance samples (1: the ELBO).
        estimator: the gradient estimator: ``"iwae"``, ``"stl"`` or ``"dreg"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        check_input: check that ``x`` is finite (and, but for the Gaussian, in [0, 1]) on every
            call, and, for the Bernoulli likelihood, warn (once per instance) where the
            decoder's outputs all lie in [0, 1]: probabilities passed as logits (the first
            sample's ``[B, D]`` outputs are read, until it has warned).
        k_chunk: None, or the number of samples that go through the decoder (or trunk and
            head) at a time, each chunk recomputed in the backward: memory flat in k, one more
            decoder forward per step, the same loss and gradients (:func:`iwae_loss`).
        kl: None, or ``"analytic"`` for the ELBO with the closed-form Gaussian KL (k = 1 and
            ``estimator="iwae"`` only; a ValueError naming ``kl`` and ``k`` otherwise).
        likelihood: ``"bernoulli"`` (default: binary data, the decoder's output the logits),
            ``"continuous_bernoulli"`` (data in [0, 1] such as grey levels, the output the
            continuous Bernoulli logits) or ``"gaussian"`` (finite data, the output the mean of
            ``N(mean, exp(2 log_scale))``, the scale learned by the loss: below).
        gaussian_scale: the Gaussian's learned scale, an ``nn.Parameter`` ``log_scale`` (the
            log standard deviation, ``logvar_x = 2 log_scale``, starting at ``init_log_scale``):
            ``"scalar"`` (default, shape ``[]``) or ``"pixel"`` (shape ``[x_dim]``, one per
            pixel; ``x_dim`` required). A per-pixel scale can shrink without bound on pixels
            that are constant in the data. Ignored unless ``likelihood="gaussian"``.
        x_dim: ``D``, for ``gaussian_scale="pixel"``.
        init_log_scale: the starting ``log_scale`` (default 0: unit standard deviation).

    With ``likelihood="gaussian"`` the loss has parameters: give the optimizer the model's and
    the loss's, ``torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()))``, and
    move the loss with the model (``loss_fn.to(device)``).

    {choosing}

    Shapes: ``forward(x [B, D], mu [B, Z], logvar [B, Z], decoder, generator=None)``, the decoder
    mapping ``[k, B, Z] -> [k, B, D]``, or ``forward(x, mu, logvar, trunk, head=head,
    generator=None)`` with ``trunk: [k, B, Z] -> [k, B, H]`` and ``head`` the decoder's last
    ``nn.Linear(H, D)``, whose ``[k, B, D]`` output (logits, or the Gaussian's means) is then
    never stored, for every likelihood (fp32, and under bf16/fp16 autocast, where the head's
    matmul runs in the autocast dtype tile by tile with float32 sums); returns a scalar (``[B]``
    for ``"none"``). ``k``, ``estimator``, ``reduction``, ``k_chunk``, ``kl``, ``likelihood`` and
    ``gaussian_scale`` are checked here (a ValueError naming the argument); an empty batch
    (``B = 0``) raises :class:`fastair.errors.EmptyBatch` on the call.
    """

    def __init__(self, k=1, estimator="iwae", reduction="mean", check_input=True, k_chunk=None,
                 kl=None, likelihood="bernoulli", *, gaussian_scale="scalar", x_dim=None,
                 init_log_scale=0.0):
        super().__init__()
        _check_options(k, estimator, reduction, k_chunk, kl, likelihood)
        self.k, self.estimator, self.reduction = k, estimator, reduction
        self.check_input, self.k_chunk, self.kl = check_input, k_chunk, kl
        self.likelihood = likelihood
        self._warned_probabilities = False
        self.gaussian_scale = None
        if likelihood == "gaussian":
            if gaussian_scale not in GAUSSIAN_SCALES:
                raise ValueError(f"gaussian_scale: expected one of {GAUSSIAN_SCALES}, got "
                                 f"{gaussian_scale!r}")
            if gaussian_scale == "pixel" and (isinstance(x_dim, bool) or not isinstance(x_dim, int)
                                              or x_dim < 1):
                raise ValueError(f"x_dim: gaussian_scale='pixel' learns one scale per pixel and "
                                 f"needs the data size D, an int >= 1; got {x_dim!r}")
            if isinstance(init_log_scale, bool) or not isinstance(init_log_scale, (int, float)) \
                    or not math.isfinite(init_log_scale):
                raise ValueError(f"init_log_scale: expected a finite float, got "
                                 f"{init_log_scale!r}")
            self.gaussian_scale = gaussian_scale
            shape = () if gaussian_scale == "scalar" else (x_dim,)
            self.log_scale = nn.Parameter(torch.full(shape, float(init_log_scale)))

    @property
    def logvar_x(self):
        """The Gaussian's log-variance ``2 * log_scale`` (``[]`` or ``[D]``); None for the other
        likelihoods."""
        return 2 * self.log_scale if self.likelihood == "gaussian" else None

    def forward(self, x, mu, logvar, decoder, generator=None, *, head=None):
        logvar_x = self.logvar_x
        if logvar_x is not None and logvar_x.dim() == 1 and isinstance(x, torch.Tensor) \
                and x.dim() == 2 and x.shape[1] != logvar_x.shape[0]:
            raise ValueError(f"x: expected [B, D] with D = {logvar_x.shape[0]}, the x_dim of "
                             f"the loss's per-pixel log_scale, got {list(x.shape)}")
        return _reduce(_negative_bound(x, mu, logvar, decoder, self.k, self.estimator, generator,
                                       self.check_input, head, self.k_chunk, self.kl, self,
                                       likelihood=self.likelihood, logvar_x=logvar_x),
                       self.reduction)

    def extra_repr(self):
        extra = "".join(f", {name}={getattr(self, name)!r}" for name in ("k_chunk", "kl")
                        if getattr(self, name) is not None)
        if self.likelihood != "bernoulli":
            extra += f", likelihood={self.likelihood!r}"
        if self.gaussian_scale == "pixel":
            extra += f", gaussian_scale={self.gaussian_scale!r}"
        return f"k={self.k}, estimator={self.estimator!r}, reduction={self.reduction!r}{extra}"


IWAELoss.__doc__ = IWAELoss.__doc__.replace("{choosing}", _CHOOSING)
