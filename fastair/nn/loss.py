"""The k-sample IWAE loss as a drop-in for a user's own VAE: :class:`IWAELoss` and
:func:`iwae_loss`.

The user brings the encoder's ``mu, logvar`` and a decoder (any callable from ``z [k, B, Z]``
to logits ``[k, B, D]``); the loss draws ``eps``, forms ``z = mu + exp(logvar / 2) eps``, calls
the decoder and the fused bound with the chosen gradient estimator, and returns ``-L_k``::

    loss_fn = fastair.nn.IWAELoss(k=64, estimator="dreg")
    mu, logvar = encoder(x)
    loss = loss_fn(x, mu, logvar, decoder)      # mean over the batch of -L_64(x)
    loss.backward()
"""
import torch
from torch import nn

from fastair._checks import check_bernoulli_targets
from fastair.nn.estimators import get_estimator

__all__ = ["IWAELoss", "iwae_loss", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "none")


def iwae_loss(x, mu, logvar, decoder, k=1, estimator="iwae", reduction="mean", generator=None,
              check_input=True):
    """``-L_k(x)`` for a Gaussian encoder and a Bernoulli decoder (see :class:`IWAELoss`).

    Args:
        x: ``[B, D]`` data in [0, 1] (binary for the Bernoulli likelihood).
        mu, logvar: ``[B, Z]`` the encoder's outputs.
        decoder: a callable ``z [k, B, Z] -> logits [k, B, D]`` (an ``nn.Module`` applying
            Linear layers over the last dim works as it is).
        k: importance samples (1: the ELBO).
        estimator: ``"iwae"``, ``"stl"`` or ``"dreg"`` (:mod:`fastair.nn.estimators`).
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"`` (``[B]``).
        generator: an optional ``torch.Generator`` for the draws.
        check_input: raise a ValueError for non-finite ``x`` or values outside [0, 1].
    Returns:
        a scalar, or ``[B]`` for ``reduction="none"``; float32 for float16/bfloat16 logits.
    """
    estimate = get_estimator(estimator)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
    if mu.dim() != 2 or logvar.shape != mu.shape:
        raise ValueError(f"mu, logvar: expected two [B, Z] tensors of one shape, got "
                         f"{list(mu.shape)} and {list(logvar.shape)}")
    if x.dim() != 2 or x.shape[0] != mu.shape[0]:
        raise ValueError(f"x: expected [B, D] with B = {mu.shape[0]} from mu, got "
                         f"{list(x.shape)}")
    if check_input:
        check_bernoulli_targets("x", x)
    eps = torch.randn((k,) + tuple(mu.shape), dtype=mu.dtype, device=mu.device,
                      generator=generator)
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = decoder(z)
    want = (k, x.shape[0], x.shape[1])
    if tuple(logits.shape) != want:
        raise ValueError(f"decoder: expected logits of shape [k, B, D] = {list(want)} for z "
                         f"{list(z.shape)}, got {list(logits.shape)}")
    loss = -estimate(x, logits, z, mu, logvar)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


class IWAELoss(nn.Module):
    """``-L_k(x)``, the negative k-sample IWAE bound, from a user's encoder outputs and decoder.

    ``L_k(x) = log (1/k) sum_k p(x|z_k) p(z_k) / q(z_k|x)``, ``z_k = mu + exp(logvar/2) eps_k``,
    with a standard normal prior and a Bernoulli decoder, in one fused pass over the logits.

    Args:
        k: importance samples (1: the ELBO).
        estimator: the gradient estimator: ``"iwae"``, ``"stl"`` or ``"dreg"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        check_input: check that ``x`` is finite and in [0, 1] on every call.
    Shapes: ``forward(x [B, D], mu [B, Z], logvar [B, Z], decoder, generator=None)``, the decoder
    mapping ``[k, B, Z] -> [k, B, D]``; returns a scalar (``[B]`` for ``"none"``).
    """

    def __init__(self, k=1, estimator="iwae", reduction="mean", check_input=True):
        super().__init__()
        get_estimator(estimator)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
        self.k, self.estimator, self.reduction = k, estimator, reduction
        self.check_input = check_input

    def forward(self, x, mu, logvar, decoder, generator=None):
        return iwae_loss(x, mu, logvar, decoder, self.k, self.estimator, self.reduction,
                         generator, self.check_input)

    def extra_repr(self):
        return f"k={self.k}, estimator={self.estimator!r}, reduction={self.reduction!r}"
