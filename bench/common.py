"""Shared pieces of the fastair benchmarks (the script ``bench_ops.py`` and the pytest-benchmark
file ``test_bench_ops.py``): the cases, the inputs, the eager maths, the providers, and the
measurements (time, peak memory, error against a float64 reference, bytes moved).
"""
import contextlib
import gc
import math
import os
import platform
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import fastair

LOG_2PI = math.log(2.0 * math.pi)
MODES = ("fwd", "fwd_bwd")
MB = 2.0 ** 20

# ---------------------------------------------------------------------------------------------
# Cases and inputs


@dataclass(frozen=True)
class Case:
    """One benchmarked shape of one op; ``D``/``Z`` are ignored by the ops that have none."""

    op: str
    k: int
    B: int
    D: int = 784
    Z: int = 50

    def config(self, dtype=torch.float32, backend=None):
        """The CSV's compact ``config``, e.g. ``B=100,D=784,Z=50,dtype=float32,backend=native``."""
        parts = [f"B={self.B}"]
        if self.op != "iwae_bound":
            parts.append(f"D={self.D}")
        if self.op == "iwae_bernoulli_gaussian":
            parts.append(f"Z={self.Z}")
        parts.append(f"dtype={str(dtype).replace('torch.', '')}")
        parts.append(f"backend={backend or 'none'}")
        return ",".join(parts)

    def label(self):
        return f"{self.op}[k={self.k},B={self.B}]"


# Positional arguments of each op (the fastair signature), and the ones that get gradients.
ARGS = {
    "iwae_bernoulli_gaussian": ("x", "logits", "z", "mu", "logvar"),
    "bernoulli_log_prob": ("logits", "x"),
    "iwae_bound": ("log_w",),
}
GRAD_ARGS = {
    "iwae_bernoulli_gaussian": ("logits", "z", "mu", "logvar"),
    "bernoulli_log_prob": ("logits",),
    "iwae_bound": ("log_w",),
}
# Which dim of each tensor is the batch B (examples are independent along it).
_BATCH_DIM = {"x": 0, "logits": 1, "z": 1, "mu": 0, "logvar": 0, "log_w": 1}
_OUT_BATCH_DIM = {"iwae_bernoulli_gaussian": 0, "bernoulli_log_prob": 1, "iwae_bound": 0}


def cases(device, quick=False):
    """The benchmarked cases: the full grid, or a few small ones with ``quick``."""
    iw = "iwae_bernoulli_gaussian"
    if quick:
        return [Case(iw, 1, 1), Case(iw, 64, 100), Case("bernoulli_log_prob", 8, 100),
                Case("iwae_bound", 5000, 100)]
    out = [Case(iw, k, b) for k in (1, 8, 64, 5000) for b in (1, 100)]
    if torch.device(device).type == "cuda":
        out.append(Case(iw, 64, 1024))
    out += [Case("bernoulli_log_prob", 64, 100), Case("iwae_bound", 5000, 100)]
    return out


def make_inputs(case, device="cpu", dtype=torch.float32, seed=0):
    """Seeded inputs of ``case`` as a dict name -> tensor; the gradient inputs require grad.

    x is binary [B, D], logits ``randn * 3`` [k, B, D], z ``randn`` [k, B, Z], mu ``randn`` and
    logvar ``randn * 0.5`` [B, Z], log_w ``randn * 5`` [k, B]. Drawn on the CPU, then moved, so
    every device sees the same numbers.
    """
    torch.manual_seed(seed)
    k, b, d, zd = case.k, case.B, case.D, case.Z
    if case.op == "iwae_bound":
        made = {"log_w": torch.randn(k, b) * 5}
    else:
        made = {"x": (torch.rand(b, d) < 0.5).float(), "logits": torch.randn(k, b, d) * 3}
        if case.op == "iwae_bernoulli_gaussian":
            made.update(z=torch.randn(k, b, zd), mu=torch.randn(b, zd),
                        logvar=torch.randn(b, zd) * 0.5)
    out = {}
    for name, t in made.items():
        t = t.to(device=device, dtype=dtype)
        out[name] = t.requires_grad_() if name in GRAD_ARGS[case.op] else t
    return out


# ---------------------------------------------------------------------------------------------
# The same maths in plain torch (the "eager" provider, compiled for "compile", and in float64
# the reference every provider is checked against)


def eager_bernoulli_log_prob(logits, x):
    """``sum_d x_d l_d - softplus(l_d)``: [..., D] -> [...]."""
    return (x * logits - F.softplus(logits)).sum(-1)


def eager_gaussian_log_prob(z, mu=None, logvar=None):
    """Diagonal Gaussian log-density summed over the last dim; standard normal without mu/logvar."""
    diff = z if mu is None else z - mu
    if logvar is None:
        return -0.5 * (diff * diff + LOG_2PI).sum(-1)
    return -0.5 * (diff * diff * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def eager_iwae_bound(log_w):
    """``logsumexp(log_w, 0) - log k``: [k, ...] -> [...]."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def eager_iwae_bernoulli_gaussian(x, logits, z, mu, logvar):
    """The k-sample bound per example, [B]."""
    log_w = (eager_bernoulli_log_prob(logits, x) + eager_gaussian_log_prob(z)
             - eager_gaussian_log_prob(z, mu, logvar))
    return eager_iwae_bound(log_w)


EAGER = {
    "iwae_bernoulli_gaussian": eager_iwae_bernoulli_gaussian,
    "bernoulli_log_prob": eager_bernoulli_log_prob,
    "iwae_bound": eager_iwae_bound,
}


# ---------------------------------------------------------------------------------------------
# Providers


def resolved_backend(name, device):
    """The backend fastair's ``name`` really runs on ``device`` (``auto`` -> native/triton, or
    reference where the fused one is unavailable). Builds the C++ kernels if needed."""
    from fastair.backends.select import resolve
    return resolve(name, torch.device(device).type)


@dataclass(frozen=True)
class Provider:
    """An implementation of the ops: ``fastair`` (with ``backend``), ``eager`` or ``compile``."""

    name: str
    backend: str = None  # fastair backend name, for the fastair providers only

    def context(self):
        """Where the fastair providers run with their backend; a no-op for the others."""
        return fastair.use_backend(self.backend) if self.backend else contextlib.nullcontext()

    def prepare(self, op):
        """The callable for ``op`` (positional arguments as in :data:`ARGS`).

        ``compile`` starts from a clean Dynamo state each time (``torch._dynamo.reset()``), so
        that every case is compiled for its own static shapes and no recompile limit is hit;
        the compilation itself happens on the first call.
        """
        if self.name.startswith("fastair"):
            return getattr(fastair, op)
        if self.name == "eager":
            return EAGER[op]
        if self.name == "compile":
            torch._dynamo.reset()
            return torch.compile(EAGER[op])
        raise ValueError(f"provider: unknown {self.name!r}")


def providers(device, backend="auto"):
    """fastair (``backend``), eager, compile; on CUDA also fastair with the Triton backend."""
    out = [Provider("fastair", backend), Provider("eager"), Provider("compile")]
    if torch.device(device).type == "cuda":
        out.append(Provider("fastair-triton", "triton"))
    return out


def make_step(fn, op, inputs, mode):
    """A no-argument callable running one measured call; returns ``(out, *grads)``.

    ``fwd`` runs under ``torch.no_grad``; ``fwd_bwd`` also differentiates ``out.sum()`` with
    ``torch.autograd.grad`` with respect to :data:`GRAD_ARGS` (nothing accumulates in ``.grad``).
    """
    args = tuple(inputs[n] for n in ARGS[op])
    if mode == "fwd":
        def step():
            with torch.no_grad():
                return (fn(*args),)
    elif mode == "fwd_bwd":
        wrt = tuple(inputs[n] for n in GRAD_ARGS[op])

        def step():
            out = fn(*args)
            return (out, *torch.autograd.grad(out.sum(), wrt))
    else:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    return step


def output_names(op, mode):
    """Names of what a step returns: ``out`` then ``d<input>`` per gradient."""
    return ("out",) + (tuple("d" + n for n in GRAD_ARGS[op]) if mode == "fwd_bwd" else ())


# ---------------------------------------------------------------------------------------------
# Error against a float64 reference


def reference(case, inputs, mode, chunk_bytes=256 * MB):
    """The eager maths in float64 on the same inputs: dict name -> float64 tensor (see
    :func:`output_names`). Examples are independent, so the batch is processed in chunks that
    keep each float64 copy of the largest input under ``chunk_bytes``."""
    op = case.op
    largest = max(t.numel() for t in inputs.values())
    chunk = max(1, int(case.B * chunk_bytes // (8 * largest)))
    parts = []
    for lo in range(0, case.B, chunk):
        sl = {n: t.detach().narrow(_BATCH_DIM[n], lo, min(chunk, case.B - lo)).double()
              for n, t in inputs.items()}
        for n in GRAD_ARGS[op]:
            sl[n].requires_grad_(mode == "fwd_bwd")
        with torch.enable_grad() if mode == "fwd_bwd" else torch.no_grad():
            parts.append(tuple(t.detach() for t in make_step(EAGER[op], op, sl, mode)()))
    names = output_names(op, mode)
    dims = [_OUT_BATCH_DIM[op]] + [_BATCH_DIM[n[1:]] for n in names[1:]]
    return {n: torch.cat([p[i] for p in parts], dim) for i, (n, dim) in enumerate(zip(names, dims))}


def max_abs_errors(outputs, ref, chunk_elems=1 << 24):
    """``max |output - reference|`` per output name (NaN if any is NaN), in float64, a slice
    at a time so that no float64 copy of a large output is made."""
    errs = {}
    for (name, want), got in zip(ref.items(), outputs):
        got, want = got.detach().reshape(-1), want.reshape(-1)
        worst = 0.0
        for lo in range(0, want.numel(), chunk_elems):
            part = slice(lo, lo + chunk_elems)
            diff = (got[part].double() - want[part]).abs().max().item()
            if math.isnan(diff):
                worst = math.nan
                break
            worst = max(worst, diff)
        errs[name] = worst
    return errs


# ---------------------------------------------------------------------------------------------
# Time, memory, bandwidth


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def percentile(sorted_values, q):
    """Linear-interpolated ``q``-quantile (0..1) of an ascending list."""
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def synced(step, device):
    """``step`` followed by a CUDA synchronization (``step`` itself on the CPU), for timers
    that read the host clock."""
    if torch.device(device).type != "cuda":
        return step

    def call():
        out = step()
        torch.cuda.synchronize(device)
        return out
    return call


def time_call(step, device):
    """Seconds one call of ``step`` takes (synchronized on CUDA)."""
    _sync(device)
    t0 = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - t0


def time_ms(step, device, target_s=0.75, min_reps=5, max_reps=100_000, warmed=False):
    """``(p50, p20, p80, reps)`` of the time of one call of ``step``, in ms.

    Unless ``warmed`` (``step`` already ran once), a first untimed call warms up (compilation,
    caches, first touch of memory). The next call is timed and sets the repetition count so that
    all timed calls take about ``target_s``, within ``[min_reps, max_reps]``; slow cases thus get
    few repetitions. On the CPU each call is timed with ``time.perf_counter`` (garbage collector
    paused); on CUDA ``triton.testing.do_bench`` times it (CUDA events, L2 cache flushed between
    calls) where Triton is installed, else ``perf_counter`` around a synchronized call.
    """
    if not warmed:
        step()
    first = time_call(step, device)
    reps = int(min(max(target_s / max(first, 1e-7), min_reps), max_reps))
    if torch.device(device).type == "cuda":
        try:
            from triton.testing import do_bench
        except ImportError:
            do_bench = None
        if do_bench is not None:
            p50, p20, p80 = do_bench(step, warmup=25, rep=max(1.0, 1e3 * target_s),
                                     quantiles=[0.5, 0.2, 0.8])
            return p50, p20, p80, None
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        samples = [1e3 * first] + [1e3 * time_call(step, device) for _ in range(reps - 1)]
    finally:
        if was_enabled:
            gc.enable()
    samples.sort()
    return percentile(samples, 0.5), percentile(samples, 0.2), percentile(samples, 0.8), reps


@contextlib.contextmanager
def _quiet_stderr():
    """Send the process's file descriptor 2 (C++ logging included) to /dev/null for a moment."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory_mb(step, device):
    """Peak extra memory of one call of ``step`` in MB (2**20 bytes), its outputs included.

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was allocated
    before. CPU: the allocator's alloc/free events recorded by ``torch.profiler``
    (``profile_memory=True``) in time order; the peak of their running sum. Memory that a
    kernel takes outside the torch allocator (e.g. a plain ``malloc``) is not seen.
    """
    gc.collect()
    if torch.device(device).type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = step()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return peak / MB
    from torch.profiler import ProfilerActivity, profile
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # Kineto prints a line when it starts and when it stops
        prof.start()
    try:
        out = step()
    finally:
        with _quiet_stderr():
            prof.stop()
    del out
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
    return peak / MB


def min_bytes(case, mode, itemsize=4):
    """The fewest bytes one call must move: every input read once and the output written
    (``fwd``); for ``fwd_bwd`` every input read twice (forward and backward), each gradient
    written, the output written and its gradient read. The logits dominate: ``k B D`` bytes
    per element for ``fwd``, ``3 k B D`` for ``fwd_bwd``."""
    k, b, d, zd = case.k, case.B, case.D, case.Z
    numel = {"x": b * d, "logits": k * b * d, "z": k * b * zd, "mu": b * zd, "logvar": b * zd,
             "log_w": k * b}
    out = k * b if case.op == "bernoulli_log_prob" else b
    names = ARGS[case.op]
    if mode == "fwd":
        return itemsize * (sum(numel[n] for n in names) + out)
    grads = GRAD_ARGS[case.op]
    return itemsize * (sum((3 if n in grads else 2) * numel[n] for n in names) + 2 * out)


def copy_bandwidth_gbs(device, size_mb=1024):
    """Device-to-device copy bandwidth ``(p50, p20, p80)`` in GB/s (1e9 bytes/s): time
    ``dst.copy_(src)`` of ``size_mb`` MB, counting ``2 * size`` bytes (read + write)."""
    n = int(size_mb * MB) // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    p50, p20, p80, _ = time_ms(lambda: dst.copy_(src), device, target_s=0.3)
    gbs = [2 * n * 4 / 1e9 / (t / 1e3) for t in (p50, p80, p20)]
    return tuple(gbs)


# ---------------------------------------------------------------------------------------------
# Run description


def device_description(device):
    """``cpu (<model>, <n> threads)`` or the CUDA device name."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


def version_string():
    """``fastair X / torch Y / triton Z`` (``triton none`` without Triton)."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return f"fastair {fastair.__version__} / torch {torch.__version__} / triton {triton_version}"
