"""The six models of the AIR paper by name, each a :class:`~fastair.models.VAE` configuration.

The regularization strengths (``sigma`` for the denoising models, ``H`` for WNI) are defaults
to start from; the paper's protocol chooses them on validation data from a grid.
"""
from fastair.models.vae import VAE

__all__ = ["PRESETS", "preset", "preset_kwargs"]

PRESETS = {
    "vae": dict(k=1),
    "dvae": dict(k=1, sigma=0.4, alpha=1.0),
    "wni-vae": dict(k=1, H=1.0),
    "iwae": dict(k=8),
    "diwae": dict(k=8, sigma=0.4, alpha=1.0),
    "wni-iwae": dict(k=8, H=1.0),
}
"""Preset name -> default :class:`VAE` keyword arguments (the architecture is VAE's default)."""


def _canonical(name):
    key = str(name).strip().lower().replace("_", "-") if isinstance(name, str) else name
    if key not in PRESETS:
        raise ValueError(f"model: unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return key


def preset_kwargs(name, **overrides):
    """The keyword arguments of preset ``name`` with ``overrides`` applied (``None`` values are
    ignored, so CLI options left unset keep the preset's value)."""
    kwargs = dict(PRESETS[_canonical(name)])
    kwargs.update({key: v for key, v in overrides.items() if v is not None})
    return kwargs


def preset(name, **overrides):
    """Build preset ``name`` (``"vae"``, ``"dvae"``, ``"wni-vae"``, ``"iwae"``, ``"diwae"``,
    ``"wni-iwae"``; case and ``_``/``-`` do not matter), e.g.
    ``preset("dvae", sigma=0.4, alpha=0.5)``.
    """
    return VAE(**preset_kwargs(name, **overrides))
