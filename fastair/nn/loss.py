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

All paths draw the same ``eps`` (that of one ``torch.randn`` of ``[k, B, Z]``), so one generator
seed gives the same loss and gradients on every path and for every ``k_chunk``. With
``k_chunk`` on CPU, where ``B * Z`` is a multiple of 16, the draws are made a chunk at a time
(equal to the one draw) and remade in the backward from the generator's state, so that nothing
of ``k``'s size but the ``[k, B]`` log weights is held; otherwise the ``[k, B, Z]`` draws are
kept. An ``nn.Module`` decoder (or trunk) is chunked by a custom autograd function whose forward
builds no graph; any other callable by ``torch.utils.checkpoint``. Either way the global RNG
state is restored when a chunk is remade, so dropout draws the same masks.
"""
import warnings

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from fastair._checks import check_bernoulli_targets, shape_str
from fastair.errors import EmptyBatch
from fastair.functional import (
    bernoulli_log_prob,
    gaussian_log_prob,
    iwae_bound,
    linear_bernoulli_log_prob,
)
from fastair.nn.estimators import get_estimator, importance_bound, normalized_weights

__all__ = ["IWAELoss", "iwae_loss", "analytic_kl", "REDUCTIONS", "KL_CHOICES"]

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


def _check_options(k, estimator, reduction, k_chunk, kl):
    get_estimator(estimator)
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


def _decoder_logits(decoder, z, x):
    logits = decoder(z)
    want = (z.shape[0], x.shape[0], x.shape[1])
    if tuple(logits.shape) != want:
        raise ValueError(f"decoder: expected logits of shape [k, B, D] = {list(want)} for z "
                         f"{list(z.shape)}, got {list(logits.shape)}")
    return logits


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


def _parameters(decoder, weight, bias):
    """What a chunked decoder's gradient goes to: the decoder's (or trunk's) parameters and the
    head's weight and bias; None for a decoder that is not an ``nn.Module`` (its parameters
    are unknown: its chunks are checkpointed with ``torch.utils.checkpoint`` instead)."""
    if not isinstance(decoder, nn.Module):
        return None
    params, seen = [], set()
    for t in list(decoder.parameters()) + [weight, bias]:
        if t is not None and id(t) not in seen:
            seen.add(id(t))
            params.append(t)
    return params


class _Chunks:
    """The k samples of one loss call in chunks of ``step``: their draws (kept, or remade
    from the generator's state at each chunk's start), the global RNG state each chunk's
    decoder saw (so that dropout draws the same masks when the chunk is remade) and the
    autocast state of the forward."""

    def __init__(self, k, step, log_weights, params, source, eps):
        self.starts = [(i, min(step, k - i)) for i in range(0, k, step)]
        self.log_weights, self.params, self.source, self.eps = log_weights, params, source, eps
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
            log_w = self.log_weights(mu, logvar, eps, start)
            if out is None:
                out = log_w.new_empty((self.k,) + tuple(log_w.shape[1:]))
            out[start:start + n] = log_w
        return out

    def backward(self, grad, mu, logvar, needs):
        mu = mu.detach().requires_grad_(needs[0])
        logvar = logvar.detach().requires_grad_(needs[1])
        inputs = [mu, logvar] + self.params
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
                log_w = self.log_weights(mu, logvar, eps, start)
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
    backward remakes one chunk at a time and sums its gradients for ``mu``, ``logvar`` and the
    decoder's parameters (``torch.autograd.grad`` of each chunk: first-order only)."""

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
                    kl, state, eps=None):
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
    if check_input:
        check_bernoulli_targets("x", x)
    weight, bias = (None, None) if head is None else _head_params(head, x.shape[1])
    step = k if k_chunk is None else min(k_chunk, k)
    replay = step < k and eps is None and _draws_replayable(mu)
    if not replay and eps is None:  # one draw of all k samples, kept until the backward
        eps = torch.randn((k,) + tuple(mu.shape), dtype=mu.dtype, device=mu.device,
                          generator=generator)
    if head is None and k_chunk is None:  # the decoder's logits, whole, and the one-pass bound
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = _decoder_logits(decoder, z, x)
        if check_input:
            _check_probabilities(logits, state)
        if kl == "analytic":
            return analytic_kl(mu, logvar) - bernoulli_log_prob(logits, x)[0]
        return -get_estimator(estimator)(x, logits, z, mu, logvar)

    pending_check = [check_input and head is None]

    def log_lik(z):  # log p(x|z) [n, B] for z [n, B, Z]
        if head is None:
            logits = _decoder_logits(decoder, z, x)
            if pending_check[0]:  # the first chunk's forward only, not its recomputation
                pending_check[0] = False
                _check_probabilities(logits, state)
            return bernoulli_log_prob(logits, x)
        h = decoder(z)
        if (not isinstance(h, torch.Tensor) or tuple(h.shape[:-1]) != tuple(z.shape[:-1])
                or h.dim() != 3 or h.shape[-1] != weight.shape[1]):
            got = shape_str(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise ValueError(f"trunk: expected h of shape [k, B, H] = "
                             f"{shape_str(tuple(z.shape[:-1]) + (weight.shape[1],))} for z "
                             f"{shape_str(z.shape)} (H from head), got {got}")
        return linear_bernoulli_log_prob(h, weight, bias, x)

    if k_chunk is None and kl is None:  # trunk and head, all k samples at once
        z = mu + torch.exp(0.5 * logvar) * eps
        return -importance_bound(log_lik(z), z, mu, logvar, estimator)

    weights = {} if estimator == "dreg" else None  # DReG's softmax weights, once all are known

    def log_weights(mu, logvar, eps, start):  # [n, B] for the samples start, ..., start + n - 1
        z = mu + torch.exp(0.5 * logvar) * eps
        if weights is not None and z.requires_grad:
            stop = start + z.shape[0]
            z.register_hook(lambda g: g * weights["w"][start:stop].unsqueeze(-1).to(g.dtype))
        out = log_lik(z)
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
    params = _parameters(decoder, weight, bias)
    if k_chunk is not None and torch.is_grad_enabled() and params is not None:
        # chunks made without a graph and remade one at a time in the backward
        source = generator if generator is not None else torch.default_generator
        chunks = _Chunks(k, step, log_weights, params, source if replay else None,
                         None if replay else eps)
        pieces = [_ChunkedLogWeights.apply(chunks, mu, logvar, *params)]
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
              check_input=True, *, head=None, k_chunk=None, kl=None, eps=None):
    """``-L_k(x)`` for a Gaussian encoder and a Bernoulli decoder (see :class:`IWAELoss`).

    Args:
        x: ``[B, D]`` data in [0, 1] (binary for the Bernoulli likelihood).
        mu: ``[B, Z]`` the encoder's output, the mean.
        logvar: ``[B, Z]`` the encoder's output, the log-variance.
        decoder: a callable ``z [k, B, Z] -> logits [k, B, D]`` (an ``nn.Module`` applying
            Linear layers over the last dim works as it is); with ``head``, the decoder's
            trunk: ``z [k, B, Z] -> h [k, B, H]``, the input of its last layer.
        k: importance samples (1: the ELBO).
        estimator: ``"iwae"``, ``"stl"`` or ``"dreg"`` (:mod:`fastair.nn.estimators`).
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"`` (``[B]``).
        generator: an optional ``torch.Generator`` for the draws.
        check_input: raise a ValueError for non-finite ``x`` or values outside [0, 1], and warn
            where the decoder's outputs (its first sample's) all lie in [0, 1]: probabilities
            given as logits (without ``head``; each call that finds it warns, while
            :class:`IWAELoss` warns once per instance).
        head: the decoder's last ``nn.Linear(H, D)`` (anything with ``weight [D, H]`` and
            ``bias [D]`` or None): the layer and the Bernoulli term are then one fused op
            (:func:`fastair.linear_bernoulli_log_prob`) and the ``[k, B, D]`` logits are never
            stored, in the forward or the backward, under autocast too.
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

    {choosing}

    Returns:
        a scalar, or ``[B]`` for ``reduction="none"``; float32 for float16/bfloat16 logits.
    Raises:
        fastair.errors.EmptyBatch: (a ValueError) ``x`` has no rows (``B = 0``), whatever
            ``check_input`` and ``reduction`` say.
    """
    _check_options(k, estimator, reduction, k_chunk, kl)
    return _reduce(_negative_bound(x, mu, logvar, decoder, k, estimator, generator, check_input,
                                   head, k_chunk, kl, None, eps), reduction)


iwae_loss.__doc__ = iwae_loss.__doc__.replace("{choosing}", _CHOOSING)


def _reduce(loss, reduction):
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


class IWAELoss(nn.Module):
    """``-L_k(x)``, the negative k-sample IWAE bound, from a user's encoder outputs and decoder.

    ``L_k(x) = log (1/k) sum_k p(x|z_k) p(z_k) / q(z_k|x)``, ``z_k = mu + exp(logvar/2) eps_k``,
    with a standard normal prior and a Bernoulli decoder, in one fused pass over the logits.

    Args:
        k: importance samples (1: the ELBO).
        estimator: the gradient estimator: ``"iwae"``, ``"stl"`` or ``"dreg"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        check_input: check that ``x`` is finite and in [0, 1] on every call, and warn (once per
            instance) where the decoder's outputs all lie in [0, 1]: probabilities passed as
            logits (the first sample's ``[B, D]`` outputs are read, until it has warned).
        k_chunk: None, or the number of samples that go through the decoder (or trunk and
            head) at a time, each chunk recomputed in the backward: memory flat in k, one more
            decoder forward per step, the same loss and gradients (:func:`iwae_loss`).
        kl: None, or ``"analytic"`` for the ELBO with the closed-form Gaussian KL (k = 1 and
            ``estimator="iwae"`` only; a ValueError naming ``kl`` and ``k`` otherwise).

    {choosing}

    Shapes: ``forward(x [B, D], mu [B, Z], logvar [B, Z], decoder, generator=None)``, the decoder
    mapping ``[k, B, Z] -> [k, B, D]``, or ``forward(x, mu, logvar, trunk, head=head,
    generator=None)`` with ``trunk: [k, B, Z] -> [k, B, H]`` and ``head`` the decoder's last
    ``nn.Linear(H, D)``, whose ``[k, B, D]`` logits are then never stored (fp32, and under
    bf16/fp16 autocast, where the head's matmul runs in the autocast dtype tile by tile with
    float32 sums); returns a scalar (``[B]`` for ``"none"``). ``k``, ``estimator``, ``reduction``,
    ``k_chunk`` and ``kl`` are checked here (a ValueError naming the argument); an empty batch
    (``B = 0``) raises :class:`fastair.errors.EmptyBatch` on the call.
    """

    def __init__(self, k=1, estimator="iwae", reduction="mean", check_input=True, k_chunk=None,
                 kl=None):
        super().__init__()
        _check_options(k, estimator, reduction, k_chunk, kl)
        self.k, self.estimator, self.reduction = k, estimator, reduction
        self.check_input, self.k_chunk, self.kl = check_input, k_chunk, kl
        self._warned_probabilities = False

    def forward(self, x, mu, logvar, decoder, generator=None, *, head=None):
        return _reduce(_negative_bound(x, mu, logvar, decoder, self.k, self.estimator, generator,
                                       self.check_input, head, self.k_chunk, self.kl, self),
                       self.reduction)

    def extra_repr(self):
        extra = "".join(f", {name}={getattr(self, name)!r}" for name in ("k_chunk", "kl")
                        if getattr(self, name) is not None)
        return f"k={self.k}, estimator={self.estimator!r}, reduction={self.reduction!r}{extra}"


IWAELoss.__doc__ = IWAELoss.__doc__.replace("{choosing}", _CHOOSING)
