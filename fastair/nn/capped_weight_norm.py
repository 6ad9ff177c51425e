"""Capped weight norm (WNI) on ``nn.Linear`` weights, as a ``torch.nn.utils.parametrize``
parametrization, like ``torch.nn.utils.parametrizations.weight_norm``.

A converted layer keeps ``parametrizations.weight.original0`` (``v`` [out, in]) and
``parametrizations.weight.original1`` (``u`` [out]); ``layer.weight`` is
``fastair.capped_weight_norm(v, u, H)``, so ``||weight_i|| <= H``.
"""
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from fastair.functional import capped_weight_norm

# u is initialized at logit(||w_i|| / H) + _U_MARGIN, so the cap H sigmoid(u_i) starts above the
# row norm (the layer starts equal to the Linear it replaces) wherever ||w_i|| < H.
_U_MARGIN = 2.0
_T_CLAMP = 1e-6


class CappedWeightNorm(nn.Module):
    """Parametrization ``(v [out, in], u [out]) -> v_i / ||v_i|| * min(||v_i||, H sigmoid(u_i))``
    (docs/design.md §1.8)."""

    def __init__(self, H):
        super().__init__()
        if isinstance(H, bool) or not isinstance(H, (int, float)) or not (
                math.isfinite(H) and H > 0):
            raise ValueError(f"H: expected a finite float > 0, got {H!r}")
        self.H = float(H)

    def forward(self, v, u):
        return capped_weight_norm(v, u, self.H)

    def right_inverse(self, weight):
        """``weight`` [out, in] -> ``(v, u)`` with ``v = weight`` and the cap above each row norm
        where ``||weight_i|| < H`` (rows above H start capped at about H)."""
        with torch.no_grad():
            ratio = torch.linalg.vector_norm(weight.float(), dim=1) / self.H
            u = torch.logit(ratio.clamp(_T_CLAMP, 1 - _T_CLAMP)) + _U_MARGIN
        return weight, u.to(weight.dtype)

    def extra_repr(self):
        return f"H={self.H}"


def is_capped(module):
    """Whether ``module``'s ``weight`` has the :class:`CappedWeightNorm` parametrization."""
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, CappedWeightNorm) for p in module.parametrizations.weight)


def capped_scale(sq_norm, u, H):
    """The factor ``s_i`` of :func:`fastair.capped_weight_norm`, ``w_i = s_i v_i``:
    ``min(1, H sigmoid(u_i) / ||v_i||)``, for a caller that applies it itself (to a layer's
    output rather than its weight, as :mod:`fastair.models.stacked` does).

    Written on the squared row norms, so that a zero row keeps the factor 1 and a zero gradient,
    and with the op's tie rule: ``s_i = 1`` where ``||v_i|| <= H sigmoid(u_i)``.

    Args:
        sq_norm: ``[..., out]`` squared row norms ``||v_i||^2``.
        u: ``[..., out]`` cap parameters.
        H: a float > 0 or a tensor broadcastable to ``u`` (NaN: no cap, ``s_i = 1``).
    Returns:
        ``[..., out]`` in the dtype of ``sq_norm`` and ``u``.
    """
    cap = H * torch.sigmoid(u)
    active = sq_norm > cap * cap  # never for a NaN cap
    return torch.where(active, cap * torch.rsqrt(torch.where(active, sq_norm, 1.0)), 1.0)


def capped_weight_norm_(module, H):
    """Put capped weight norm with bound ``H`` on every ``nn.Linear`` in ``module`` (the module
    itself included), in place; layers that have it already are left as they are.

    Returns ``module``. Undo with ``torch.nn.utils.parametrize.remove_parametrizations``.
    """
    CappedWeightNorm(H)  # validates H before anything changes
    for layer in module.modules():
        if isinstance(layer, nn.Linear) and not is_capped(layer):
            parametrize.register_parametrization(layer, "weight", CappedWeightNorm(H),
                                                 unsafe=True)
    return module


class CappedWeightNormLinear(nn.Linear):
    """``nn.Linear`` whose weight rows have norm at most ``H`` (WNI, AIR eq. 17-18).

    Args:
        in_features: as for ``nn.Linear``; so are ``out_features``, ``bias``, ``device`` and
            ``dtype``.
        H: float > 0, the bound on every row norm of the weight.
    Shapes: input [..., in_features] -> output [..., out_features].
    """

    def __init__(self, in_features, out_features, H, bias=True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        parametrize.register_parametrization(self, "weight", CappedWeightNorm(H), unsafe=True)


def row_norm_stats(module, quantiles=(0.5, 0.9, 1.0)):
    """Where a cap ``H`` binds: per ``nn.Linear`` in ``module``, the quantiles of the row norms
    ``||W_i||`` of its effective weight (after any capped weight norm) and, for a capped layer,
    the share of rows held by their cap (``||v_i|| > H sigmoid(u_i)``).

    Returns a list of dicts in module order: ``name``, ``rows`` (out_features), ``H`` (None if
    not capped), ``quantiles`` (the ``quantiles`` of the row norms; the default gives the
    median, the 90th percentile and the largest) and ``capped_share`` (None if not capped).
    A cap below a free layer's median would bind on most of its rows; above its largest, none.
    """
    out = []
    with torch.no_grad():
        for name, layer in module.named_modules():
            if not isinstance(layer, nn.Linear):
                continue
            norms = torch.linalg.vector_norm(layer.weight.float(), dim=1)
            row = {"name": name or "(module)", "rows": layer.out_features, "H": None,
                   "quantiles": torch.quantile(norms, torch.tensor(quantiles)).tolist(),
                   "capped_share": None}
            if is_capped(layer):
                cap = next(p for p in layer.parametrizations.weight
                           if isinstance(p, CappedWeightNorm))
                v = layer.parametrizations.weight.original0.float()
                u = layer.parametrizations.weight.original1.float()
                held = torch.linalg.vector_norm(v, dim=1) > cap.H * torch.sigmoid(u)
                row.update(H=cap.H, capped_share=held.float().mean().item())
            out.append(row)
    return out
