"""Helpers shared by the tests: a tiny model and data set for the trainer, the command line's
tiny-model options, and a trainer call with the tests' settings."""
import torch

from fastair.models import VAE
from fastair.training import Trainer, seed_everything

D = 20
"""Pixels of the tiny data set."""
TRAIN_SETTINGS = dict(batch_size=16, progress=False, patience=0, seed=3)
"""Trainer settings of the tiny runs: 4 batches per epoch, every epoch run, no bar."""
TINY_CLI = ["--z-dim", "4", "--hidden", "16", "--batch-size", "40", "--no-progress"]
"""`fastair train` options of a tiny model (with the ``tiny_data`` fixture of conftest.py)."""


def tiny_splits():
    """``(train [60, D], valid [20, D])`` of random bits, the same on every call."""
    g = torch.Generator().manual_seed(0)
    return (torch.rand(60, D, generator=g) < 0.4).float(), \
        (torch.rand(20, D, generator=g) < 0.4).float()


def tiny_vae(**kw):
    """A ``D-8-3`` VAE with k = 2 and seeded weights; ``kw`` overrides its arguments."""
    seed_everything(0)
    return VAE(**{"x_dim": D, "z_dim": 3, "hidden": (8,), "k": 2, **kw})


def fit(data, run_dir, resume=False, model=None, meta=None, **settings):
    """Train ``model`` (default :func:`tiny_vae`) on ``data`` with :data:`TRAIN_SETTINGS`
    overridden by ``settings``; returns ``(model, result)``."""
    model = model if model is not None else tiny_vae()
    trainer = Trainer(model, *data, None, run_dir, meta=meta, **{**TRAIN_SETTINGS, **settings})
    return model, trainer.fit(resume)
