"""The VAE family with amortized inference regularization: :class:`VAE` and the paper's six
models by name (:func:`preset`, :data:`PRESETS`)."""
from fastair.models.presets import PRESETS, preset, preset_kwargs
from fastair.models.vae import VAE

__all__ = ["VAE", "PRESETS", "preset", "preset_kwargs"]
