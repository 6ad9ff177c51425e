"""Helpers shared by the tests: a tiny model and data set for the trainer, the command line's
tiny-model options, and a trainer call with the tests' settings; the inputs of the fused bound, an
objective through every op, and the peak CPU memory of a call (the op tests, the loss's)."""
import torch
from torch.profiler import ProfilerActivity, profile

import fastair
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


def tiny_load_dataset(name, root=None):
    """A ``load_dataset`` of tiny random binary data sets (120/40/40 rows of 784 pixels), the
    same on every call for one name, as a real data set is, and other data for another name."""
    from fastair.data import Splits
    g = torch.Generator().manual_seed(sum(map(ord, name)))

    def split(n):
        return (torch.rand(n, 784, generator=g) < 0.3).float()
    return Splits(name, split(120), split(40), split(40))


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


def make_inputs(k, b, d, zdim=5, dtype=torch.float32, logits_dtype=None, seed=0, scale=3.0):
    """``(x [b, d], logits [k, b, d], z [k, b, zdim], mu, logvar [b, zdim])`` of the fused bound
    :func:`fastair.iwae_bernoulli_gaussian`: seeded, ``z`` drawn from ``N(mu, exp(logvar))``."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(b, d, generator=g) < 0.4).to(dtype)
    logits = (torch.randn(k, b, d, generator=g, dtype=torch.float64) * scale)
    mu = torch.randn(b, zdim, generator=g, dtype=torch.float64)
    logvar = 0.5 * torch.randn(b, zdim, generator=g, dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(k, b, zdim, generator=g, dtype=torch.float64)
    return (x, logits.to(logits_dtype or dtype), z.to(dtype), mu.to(dtype), logvar.to(dtype))


def objective(x, logits, z, mu, logvar):
    """A scalar through the fused bound, both log-probabilities and ``iwae_bound`` (the compile
    tests: eager against ``torch.compile(fullgraph=True)``)."""
    bound = fastair.iwae_bernoulli_gaussian(x, logits, z, mu, logvar)
    log_w = (fastair.bernoulli_log_prob(logits, x) + fastair.gaussian_log_prob(z)
             - fastair.gaussian_log_prob(z, mu, logvar))
    return bound.mean() + fastair.iwae_bound(log_w, dim=0).mean() + torch.tanh(mu).sum()


def peak_bytes(fn):
    """Peak of the running sum of CPU allocator events (bytes) during ``fn()``, its result kept."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        keep = fn()
    cpu = torch.autograd.DeviceType.CPU
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == cpu),
                    key=lambda e: e.start_ns())
    running = peak = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
    del keep
    return peak
