"""M independent VAEs as one model: every layer's weights stacked ``[M, out, in]`` and run as
one batched matmul, so a grid of small runs pays the per-step fixed cost once.

Member ``m`` is a :class:`~fastair.models.VAE` with its own weights, ``sigma``, ``alpha`` and
``H`` (or none); all members share the architecture, ``k``, the estimator and the number of
encoder terms ``T`` (1: one bound, clean or noisy; 2: the mixed denoising objective of
``0 < alpha < 1``), so that every member runs the same rows. Given the same data and the same
standard-normal draws, member ``m``'s bound and gradients are those of the VAE it was built from
(the same formulas, differently blocked float sums: equal within float rounding, not bit for bit).

:meth:`StackedVAE.draws` makes each member's random draws from its own generator in the order
:meth:`VAE.objective` makes them, so a member trained in a stack sees what it would see alone.
"""
import math

import torch
from torch import nn

from fastair.functional import bernoulli_log_prob, gaussian_log_prob, iwae_bound
from fastair.nn.capped_weight_norm import capped_scale, is_capped

__all__ = ["StackedVAE", "objective_terms"]


def objective_terms(model):
    """Encoder terms ``T`` of ``model``'s training objective: 2 when both the noisy and the
    clean bound are used (``sigma > 0``, ``0 < alpha < 1``), else 1."""
    noisy = model.sigma > 0 and model.alpha > 0
    return 2 if noisy and model.alpha < 1 else 1


def _linears(model):
    """The member's Linear layers in stacking order: encoder trunk, mu, logvar; decoder trunk,
    out. Returns ``(encoder_layers, decoder_layers)``."""
    enc = [m for m in model.encoder.trunk if isinstance(m, nn.Linear)]
    dec = [m for m in model.decoder.trunk if isinstance(m, nn.Linear)]
    return enc + [model.encoder.mu, model.encoder.logvar], dec + [model.decoder.out]


def _weight_tensors(layer):
    """``(v, u)`` of a Linear: its raw weight and capped-norm logit (None if uncapped)."""
    if is_capped(layer):
        p = layer.parametrizations.weight
        return p.original0, p.original1
    return layer.weight, None


class _StackedLinear(nn.Module):
    """``M`` Linear layers, the weights stored transposed, ``[M, in, out]``, so that the forward
    and both backward products run on them without a transposed copy; optionally capped weight
    norm with a per-member cap (``H [M]``, NaN for a member without it)."""

    def __init__(self, layers, caps=None):
        super().__init__()
        v = [_weight_tensors(layer)[0].detach().t() for layer in layers]
        self.weight = nn.Parameter(torch.stack(v).contiguous())
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]).clone())
        self.capped = caps is not None and any(h is not None for h in caps)
        if self.capped:
            u = [(_weight_tensors(layer)[1].detach() if h is not None else
                  torch.zeros(layer.out_features, dtype=layer.bias.dtype,
                              device=layer.bias.device)) for layer, h in zip(layers, caps)]
            self.u = nn.Parameter(torch.stack(u).clone())
            self.register_buffer("H", torch.tensor([math.nan if h is None else h for h in caps],
                                                   dtype=self.weight.dtype,
                                                   device=self.weight.device))

    def column_scale(self):
        """``[M, out]``: the factor of capped weight norm
        (:func:`~fastair.nn.capped_weight_norm.capped_scale`) of the capped members' output
        columns ``v_i = weight[m, :, i]``, 1 for the others (a NaN cap), so that the capped
        layer is ``(h @ v) * scale + bias`` (docs/design.md §1.8; the scale is applied to the
        output, not to the weight: no ``[M, in, out]`` pass)."""
        return capped_scale((self.weight * self.weight).sum(1), self.u, self.H[:, None])

    def forward(self, h):
        """``h [M, N, in] -> [M, N, out]``."""
        if not self.capped:
            return torch.baddbmm(self.bias.unsqueeze(1), h, self.weight)
        return torch.addcmul(self.bias.unsqueeze(1), torch.bmm(h, self.weight),
                             self.column_scale().unsqueeze(1))

    def pairs(self, layer):
        """``(stacked parameter, member parameter)`` for each tensor of the member's ``layer``."""
        v, u = _weight_tensors(layer)
        return [(self.weight, v), (self.bias, layer.bias)] + ([(self.u, u)] if u is not None
                                                               else [])


def _tanh_stack(layers, h):
    for layer in layers:
        h = torch.tanh(layer(h))
    return h


class StackedVAE(nn.Module):
    """Members ``models`` (a list of :class:`~fastair.models.VAE`) as one module.

    The stacked weights start as copies of the members'; :meth:`write_member` copies member
    ``m``'s back into its VAE (for checkpoints and evaluation); :meth:`member_pairs` and
    :meth:`member_slice` pair the tensors (for moving optimizer state).
    """

    def __init__(self, models):
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("StackedVAE: expected at least one member")
        first = models[0]
        for i, model in enumerate(models):
            same = (model.x_dim, model.z_dim, model.hidden, model.k, model.estimator) == (
                first.x_dim, first.z_dim, first.hidden, first.k, first.estimator)
            if not same or objective_terms(model) != objective_terms(first):
                raise ValueError(
                    f"StackedVAE: member {i} ({model.extra_repr()}) differs from member 0 "
                    f"({first.extra_repr()}) in architecture, k, estimator or objective terms")
        if first.estimator != "iwae":
            raise ValueError(f"StackedVAE: estimator {first.estimator!r} cannot be stacked "
                             "(only 'iwae')")
        likelihoods = sorted({getattr(m, "likelihood", "bernoulli") for m in models})
        if likelihoods != ["bernoulli"]:
            raise ValueError(f"StackedVAE: likelihood {', '.join(map(repr, likelihoods))} cannot "
                             "be stacked (the stack scores a Bernoulli decoder); train these "
                             "runs one at a time (fastair reproduce --no-stack)")
        self.members = len(models)
        self.k, self.x_dim, self.z_dim = first.k, first.x_dim, first.z_dim
        self.terms = objective_terms(first)
        pairs = [_linears(model) for model in models]
        n_enc, n_dec = len(pairs[0][0]), len(pairs[0][1])
        # a member's cap per encoder layer: its H where that layer is capped (H_layers)
        self.encoder = nn.ModuleList(
            _StackedLinear([p[0][i] for p in pairs],
                           [m.H if is_capped(p[0][i]) else None for m, p in zip(models, pairs)])
            for i in range(n_enc))
        self.decoder = nn.ModuleList(_StackedLinear([p[1][i] for p in pairs])
                                     for i in range(n_dec))
        like = self.encoder[0].weight
        self.register_buffer("sigma", torch.tensor([m.sigma for m in models], dtype=like.dtype,
                                                   device=like.device))
        self.register_buffer("alpha", torch.tensor([m.alpha for m in models], dtype=like.dtype,
                                                   device=like.device))
        self.noisy = [m.sigma > 0 and m.alpha > 0 for m in models]

    # -- members ------------------------------------------------------------------------------
    def member_pairs(self, m, model):
        """``[(stacked parameter, member parameter), ...]`` over every tensor of member ``m``
        (``model`` is its VAE); :meth:`member_slice` gives the member's part of a stacked
        tensor."""
        enc, dec = _linears(model)
        out = []
        for stacked, layer in zip(list(self.encoder) + list(self.decoder), enc + dec):
            out += stacked.pairs(layer)
        return out

    @staticmethod
    def member_slice(tensor, m):
        """Member ``m``'s part of a stacked parameter (or of its Adam state), in the member's
        layout: weights are stored ``[M, in, out]`` and members hold ``[out, in]``."""
        return tensor[m].t() if tensor.dim() == 3 else tensor[m]

    @torch.no_grad()
    def write_member(self, m, model):
        """Copy member ``m``'s stacked weights into ``model`` (its VAE)."""
        for stacked, param in self.member_pairs(m, model):
            param.copy_(self.member_slice(stacked, m))

    # -- the computation ----------------------------------------------------------------------
    def encode(self, x):
        """``x [M, N, D] -> (mu, logvar)`` each ``[M, N, Z]``."""
        h = _tanh_stack(self.encoder[:-2], x)
        return self.encoder[-2](h), self.encoder[-1](h)

    def decode_logits(self, z):
        """``z [M, N, Z] -> logits [M, N, D]``."""
        return self.decoder[-1](_tanh_stack(self.decoder[:-1], z))

    def draws(self, x, generators, eval_mode=False):
        """Each member's standard normal draws for a batch ``x [M, B, D]``, from its generator
        ``generators[m]``, in :meth:`VAE.objective`'s order: the input noise ``[B, D]`` (noisy
        members only), then ``eps [k, T*B, Z]``. ``eval_mode``: the clean bound's ``eps [k, B,
        Z]`` only. Returns ``(noise [M, B, D] or None, eps [M, k, R, Z])``, ``R = T*B`` (``B``
        in eval mode)."""
        n_mem, b, _ = x.shape
        rows = b if eval_mode else self.terms * b
        eps = torch.empty((n_mem, self.k, rows, self.z_dim), dtype=x.dtype, device=x.device)
        noise = None
        if not eval_mode and any(self.noisy):
            noise = torch.zeros_like(x)
        for m, gen in enumerate(generators):
            if not eval_mode and self.noisy[m]:
                torch.randn(x.shape[1:], generator=gen, out=noise[m])
            torch.randn(eps.shape[1:], generator=gen, out=eps[m])
        return noise, eps

    def bound_rows(self, x_enc, x, eps):
        """``L_k`` ``[M, R]`` of data ``x [M, R, D]`` under ``q(.|x_enc [M, R, D])`` with
        ``z = mu + exp(logvar / 2) * eps``, ``eps [M, k, R, Z]`` (``k`` from ``eps``)."""
        n_mem, rows, _ = x.shape
        k = eps.shape[1]
        mu, logvar = self.encode(x_enc)
        mu, logvar = mu.unsqueeze(1), logvar.unsqueeze(1)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decode_logits(z.reshape(n_mem, -1, self.z_dim))
        log_w = (bernoulli_log_prob(logits.view(n_mem, k, rows, -1), x.unsqueeze(1))
                 + gaussian_log_prob(z) - gaussian_log_prob(z, mu, logvar))
        return log_w[:, 0] if k == 1 else iwae_bound(log_w, dim=1)

    def objective(self, x, noise, eps):
        """The members' training objectives ``[M, B]`` for ``x [M, B, D]`` and the
        :meth:`draws`: ``alpha L_k(x; q(.|x + sigma n)) + (1 - alpha) L_k(x; q(.|x))`` per
        member, each term as :meth:`VAE.objective` forms it."""
        # the noise is zero for members without a noisy term, so their x_enc is x exactly
        x_enc = x if noise is None else x + self.sigma[:, None, None] * noise
        if self.terms == 1:
            return self.bound_rows(x_enc, x, eps)
        b = x.shape[1]
        both = self.bound_rows(torch.cat([x_enc, x], 1), torch.cat([x, x], 1), eps)
        alpha = self.alpha[:, None]
        return alpha * both[:, :b] + (1 - alpha) * both[:, b:]

    def clean_bound(self, x, eps):
        """``L_k(x)`` ``[M, B]`` with the clean encoder, ``x [M, B, D]``, ``eps [M, k, B, Z]``."""
        return self.bound_rows(x, x, eps)
