"""Shared pieces of the fastair benchmarks (every ``bench/*.py``, run as ``python -m bench.NAME``
from the repository root).

- The op harness of ``bench_ops.py`` and the pytest-benchmark file ``test_bench_ops.py``: the
  cases, the inputs, the eager maths, the providers, and the measurements (time, peak memory,
  error against a float64 reference, bytes moved). Each op is described once, in :data:`OPS`.
- Timing: :func:`time_ms` (p50/p20/p80 over an adaptive number of calls, CUDA events where
  Triton is installed), :func:`median_ms` (median of a fixed number of calls, for slow
  workloads), :func:`gemm_rates` (GFLOP/s of one product in float32 and bfloat16), :func:`sync`.
- Memory: :func:`peak_memory_mb` (the allocator's events under ``torch.profiler`` on the CPU).
- What ran where: :func:`cpu_model` (``lscpu``), :func:`device_description`,
  :func:`version_string`, :func:`git_commit`, :func:`machine_line`, :func:`command_line` and
  :func:`report_header` (the first lines of a result's markdown).
- Writing: :func:`write_results` (``stem.csv`` and ``stem.md`` atomically), :func:`write_csv`,
  :func:`write_markdown`.
"""
import contextlib
import functools
import gc
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

import fastair

LOG_2PI = math.log(2.0 * math.pi)
MODES = ("fwd", "fwd_bwd")
MB = 2.0 ** 20

# ---------------------------------------------------------------------------------------------
# The maths of each op in plain torch (the "eager" provider, compiled for "compile", and in
# float64 the reference every provider is checked against)


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


def eager_log_weights(x, logits, z, mu, logvar):
    """``log p(x|z) + log p(z) - log q(z|x)`` [k, B] as a user writes it in plain torch: the
    competitor the benchmarks time (fastair's own formula is ``VAE.log_weights``, its spec
    ``fastair.backends.reference.log_weights``)."""
    return (eager_bernoulli_log_prob(logits, x) + eager_gaussian_log_prob(z)
            - eager_gaussian_log_prob(z, mu, logvar))


def eager_iwae_bernoulli_gaussian(x, logits, z, mu, logvar):
    """The k-sample bound per example, [B]."""
    return eager_iwae_bound(eager_log_weights(x, logits, z, mu, logvar))


def eager_capped_weight_norm(v, u, H):
    """WNI's capped weight norm as a torch composite: ``torch._weight_norm`` (the kernel of torch's
    weight norm) with the gain ``min(||v_i||, H sigmoid(u_i))``. At a tie ``torch.minimum`` splits
    the gradient between its two arguments (fastair gives it all to ``||v_i||``); random inputs
    have none."""
    cap = H * torch.sigmoid(u)[:, None]
    return torch._weight_norm(v, torch.minimum(torch.norm_except_dim(v, 2, 0), cap), 0)


def eager_continuous_bernoulli_log_prob(logits, x, switch=1e-2):
    """``sum_d x l - softplus(l) + log C(l)``, ``C(l) = l / tanh(l / 2)``, as a careful user writes
    it in torch: ``log C(l) - softplus(l) = log(|l| / (1 - exp(-|l|))) - max(l, 0)`` (expm1, no
    cancellation in ``1 - exp``), and two terms of its series ``(x - 1/2) l - l^2/24 + l^4/2880``
    below ``|l| = switch``, where that form's own log-difference cancels: [..., D] -> [...]."""
    a = logits.abs()
    safe = torch.where(a < switch, torch.ones_like(a), a)
    closed = x * logits - F.relu(logits) + torch.log(safe) - torch.log(-torch.expm1(-safe))
    l2 = logits * logits
    series = (x - 0.5) * logits - l2 / 24 + l2 * l2 / 2880
    return torch.where(a < switch, series, closed).sum(-1)


def eager_linear_bernoulli_log_prob(h, weight, bias, x):
    """The decoder head unfused: ``F.linear`` writes the [N, D] logits, then the Bernoulli term."""
    return eager_bernoulli_log_prob(torch.nn.functional.linear(h, weight, bias), x)


def eager_linear_continuous_bernoulli_log_prob(h, weight, bias, x):
    """The continuous Bernoulli head unfused: ``F.linear`` writes the [N, D] logits."""
    return eager_continuous_bernoulli_log_prob(torch.nn.functional.linear(h, weight, bias), x)


def eager_linear_gaussian_log_prob(h, weight, bias, x, logvar):
    """The Gaussian head unfused: ``F.linear`` writes the [N, D] means."""
    return eager_gaussian_log_prob(torch.nn.functional.linear(h, weight, bias), x, logvar)


# ---------------------------------------------------------------------------------------------
# The ops: their sizes, inputs and maths


def _randn(scale=1.0):
    return lambda shape: torch.randn(shape) * scale


def _grey(shape):
    """Grey levels in [0, 1], a tenth of them exactly 0 or 1 (ink and paper)."""
    u = torch.rand(shape)
    ends = torch.rand(shape)
    return torch.where(ends < 0.05, 0.0, torch.where(ends > 0.95, 1.0, u))


def _binary(shape):
    return (torch.rand(shape) < 0.5).float()


def _rows_of_unit_norm(shape):
    """``randn / sqrt(in)``: rows of norm about 1, above most caps ``H sigmoid(u)`` for H = 1."""
    return torch.randn(shape) / math.sqrt(shape[-1])


@dataclass(frozen=True, eq=False)
class OpSpec:
    """What the harness needs to know of one op.

    ``sizes`` names the sizes of a case, the CSV's ``x`` first (the rest go to ``config``);
    ``defaults`` fills the sizes a case leaves out; ``shown`` are the sizes that, with ``x``,
    tell the cases of the op apart (labels and the table). ``inputs`` maps each tensor input,
    in the order it is drawn, to its shape (size names) and how to draw it (a function of the
    shape giving a float32 CPU tensor). ``args`` are the positional tensor arguments of the
    fastair op and of ``eager`` (same signature), ``grad_args`` those differentiated in
    ``fwd_bwd``, ``consts`` the sizes passed as keyword arguments. ``out`` is the output's shape;
    the examples (rows) are independent along the size ``batch``, which the float64 reference
    processes a slice at a time.
    """

    sizes: tuple
    inputs: dict
    args: tuple
    grad_args: tuple
    out: tuple
    batch: str
    eager: object
    shown: tuple = ()
    defaults: dict = field(default_factory=dict)
    consts: tuple = ()


_IWAE_INPUTS = {"x": (("B", "D"), _binary), "logits": (("k", "B", "D"), _randn(3)),
                "z": (("k", "B", "Z"), _randn()), "mu": (("B", "Z"), _randn()),
                "logvar": (("B", "Z"), _randn(0.5))}
OPS = {
    "iwae_bernoulli_gaussian": OpSpec(
        sizes=("k", "B", "D", "Z"), defaults={"D": 784, "Z": 50}, shown=("B",),
        inputs=_IWAE_INPUTS, args=("x", "logits", "z", "mu", "logvar"),
        grad_args=("logits", "z", "mu", "logvar"), out=("B",), batch="B",
        eager=eager_iwae_bernoulli_gaussian),
    "bernoulli_log_prob": OpSpec(
        sizes=("k", "B", "D"), defaults={"D": 784}, shown=("B",),
        inputs={n: _IWAE_INPUTS[n] for n in ("x", "logits")}, args=("logits", "x"),
        grad_args=("logits",), out=("k", "B"), batch="B", eager=eager_bernoulli_log_prob),
    "continuous_bernoulli_log_prob": OpSpec(
        sizes=("k", "B", "D"), defaults={"D": 784}, shown=("B",),
        inputs={"x": (("B", "D"), _grey), "logits": (("k", "B", "D"), _randn(3))},
        args=("logits", "x"), grad_args=("logits",), out=("k", "B"), batch="B",
        eager=eager_continuous_bernoulli_log_prob),
    # a Gaussian decoder's term: the means [k, B, D] against the data [B, D] (in the mu slot:
    # the density is symmetric in z and mu) with a per-pixel log-variance [D]
    "gaussian_log_prob": OpSpec(
        sizes=("k", "B", "D"), defaults={"D": 784}, shown=("B",),
        inputs={"x": (("B", "D"), _grey), "mean": (("k", "B", "D"), _randn()),
                "logvar": (("D",), _randn(0.5))},
        args=("mean", "x", "logvar"), grad_args=("mean", "logvar"), out=("k", "B"), batch="B",
        eager=eager_gaussian_log_prob),
    "iwae_bound": OpSpec(
        sizes=("k", "B"), shown=("B",), inputs={"log_w": (("k", "B"), _randn(5))},
        args=("log_w",), grad_args=("log_w",), out=("B",), batch="B", eager=eager_iwae_bound),
    "capped_weight_norm": OpSpec(
        sizes=("out", "in", "H"), defaults={"H": 1.0}, shown=("in",), consts=("H",),
        inputs={"v": (("out", "in"), _rows_of_unit_norm), "u": (("out",), _randn())},
        args=("v", "u"), grad_args=("v", "u"), out=("out", "in"), batch="out",
        eager=eager_capped_weight_norm),
    "linear_bernoulli_log_prob": OpSpec(
        sizes=("N", "H", "D"), defaults={"H": 200, "D": 784}, shown=(),
        inputs={"h": (("N", "H"), lambda shape: torch.tanh(torch.randn(shape))),
                "weight": (("D", "H"), _rows_of_unit_norm), "bias": (("D",), _randn()),
                "x": (("N", "D"), _binary)},
        args=("h", "weight", "bias", "x"), grad_args=("h", "weight", "bias"), out=("N",),
        batch="N", eager=eager_linear_bernoulli_log_prob),
    "linear_continuous_bernoulli_log_prob": OpSpec(
        sizes=("N", "H", "D"), defaults={"H": 200, "D": 784}, shown=(),
        inputs={"h": (("N", "H"), lambda shape: torch.tanh(torch.randn(shape))),
                "weight": (("D", "H"), _rows_of_unit_norm), "bias": (("D",), _randn()),
                "x": (("N", "D"), _grey)},
        args=("h", "weight", "bias", "x"), grad_args=("h", "weight", "bias"), out=("N",),
        batch="N", eager=eager_linear_continuous_bernoulli_log_prob),
    "linear_gaussian_log_prob": OpSpec(
        sizes=("N", "H", "D"), defaults={"H": 200, "D": 784}, shown=(),
        inputs={"h": (("N", "H"), lambda shape: torch.tanh(torch.randn(shape))),
                "weight": (("D", "H"), _rows_of_unit_norm), "bias": (("D",), _randn()),
                "x": (("N", "D"), _grey), "logvar": (("D",), _randn(0.5))},
        args=("h", "weight", "bias", "x", "logvar"),
        grad_args=("h", "weight", "bias", "logvar"), out=("N",), batch="N",
        eager=eager_linear_gaussian_log_prob),
}
# Positional tensor arguments of each op (the fastair signature), and the ones that get gradients.
ARGS = {op: spec.args for op, spec in OPS.items()}
EAGER = {op: spec.eager for op, spec in OPS.items()}


def shape_text(op, x_name, x_value, config, sep=","):
    """``k=64,B=100``: the swept size and the others that tell the cases of ``op`` apart
    (``config``: a mapping size name -> value, e.g. the CSV's config)."""
    shown = OPS[op].shown if op in OPS else ()
    return sep.join([f"{x_name}={x_value}"] + [f"{n}={config[n]}" for n in shown if n in config])


# ---------------------------------------------------------------------------------------------
# Cases and inputs


@dataclass(frozen=True)
class Case:
    """One benchmarked shape of one op: ``sizes`` holds ``(name, value)`` pairs in the order of
    ``OPS[op].sizes`` (the CSV's x first). Make one with :meth:`make`; ``case["B"]`` reads a
    size."""

    op: str
    sizes: tuple

    @classmethod
    def make(cls, op, *values, **named):
        """``Case.make("iwae_bound", 5000, 100)`` or ``Case.make(op, k=64, B=100)``: sizes by
        position or name, the rest from the op's defaults."""
        spec = OPS[op]
        given = dict(zip(spec.sizes, values), **named)
        unknown = set(given) - set(spec.sizes)
        if unknown:
            raise ValueError(f"{op}: unknown sizes {sorted(unknown)}; expected {spec.sizes}")
        return cls(op, tuple((n, given[n] if n in given else spec.defaults[n])
                             for n in spec.sizes))

    def __getitem__(self, name):
        return dict(self.sizes)[name]

    @property
    def x_name(self):
        return self.sizes[0][0]

    @property
    def x_value(self):
        return self.sizes[0][1]

    def config(self, dtype=torch.float32, backend=None):
        """The CSV's compact ``config``: the sizes other than x, the dtype and the fastair
        backend, e.g. ``B=100,D=784,Z=50,dtype=float32,backend=native``."""
        parts = [f"{n}={v}" for n, v in self.sizes[1:]]
        parts.append(f"dtype={str(dtype).replace('torch.', '')}")
        parts.append(f"backend={backend or 'none'}")
        return ",".join(parts)

    def shape(self, sep=","):
        """``k=5000,B=100``: see :func:`shape_text`."""
        return shape_text(self.op, self.x_name, self.x_value, dict(self.sizes), sep)

    def label(self):
        """``iwae_bound[k=5000,B=100]``."""
        return f"{self.op}[{self.shape()}]"

    def id(self):
        """A test id: ``iwae_bound-k5000-B100``."""
        sizes = dict(self.sizes)
        return "-".join([self.op] + [f"{n}{sizes[n]}" for n in (self.x_name,) + OPS[self.op].shown])


def cases(device, quick=False):
    """The benchmarked cases: the full grid, or a few small ones with ``quick``."""
    iw, wn, head = "iwae_bernoulli_gaussian", "capped_weight_norm", "linear_bernoulli_log_prob"
    if quick:
        return [Case.make(iw, 1, 1), Case.make(iw, 64, 100),
                Case.make("bernoulli_log_prob", 8, 100), Case.make("iwae_bound", 5000, 100),
                Case.make(wn, 784, 200), Case.make(head, 6400)]
    out = [Case.make(iw, k, b) for k in (1, 8, 64, 5000) for b in (1, 100)]
    if torch.device(device).type == "cuda":
        out.append(Case.make(iw, 64, 1024))
    out += [Case.make(op, 64, 100) for op in ("bernoulli_log_prob", "continuous_bernoulli_log_prob",
                                               "gaussian_log_prob")]
    out.append(Case.make("iwae_bound", 5000, 100))
    out += [Case.make(wn, o, i) for o, i in ((784, 200), (200, 784), (4096, 4096))]
    # the decoder head at k = 64, B = 100 (training) and 100 samples of 500 digits (IW-SVI)
    out += [Case.make(head, n) for n in (6400, 50000)]
    out += [Case.make(op, 6400) for op in ("linear_continuous_bernoulli_log_prob",
                                           "linear_gaussian_log_prob")]
    return out


def make_inputs(case, device="cpu", dtype=torch.float32, seed=0):
    """Seeded inputs of ``case`` as a dict name -> tensor; the gradient inputs require grad.

    x is binary [B, D], logits ``randn * 3`` [k, B, D], z ``randn`` [k, B, Z], mu ``randn`` and
    logvar ``randn * 0.5`` [B, Z], log_w ``randn * 5`` [k, B]; v ``randn / sqrt(in)`` [out, in]
    and u ``randn`` [out]. Drawn on the CPU, then moved, so every device sees the same numbers.
    """
    torch.manual_seed(seed)
    spec = OPS[case.op]
    out = {}
    for name, (shape, draw) in spec.inputs.items():
        t = draw(tuple(case[n] for n in shape)).to(device=device, dtype=dtype)
        out[name] = t.requires_grad_() if name in spec.grad_args else t
    return out


# ---------------------------------------------------------------------------------------------
# Providers


def resolved_backend(name, device):
    """The backend fastair's ``name`` really runs on ``device`` (``auto`` -> native/triton, or
    reference where the fused one is unavailable). Builds the C++ kernels if needed."""
    from fastair.backends import resolve
    return resolve(name, torch.device(device).type)


@dataclass(frozen=True)
class Call:
    """What one measured call runs: ``fn(*args)``; ``fwd_bwd`` differentiates its output with
    respect to ``wrt``, whose gradients are reported as ``d<name>`` for ``wrt_names``."""

    fn: object
    args: tuple
    wrt: tuple
    wrt_names: tuple


def op_call(fn, case, inputs):
    """The :class:`Call` of ``fn`` with the signature of ``case.op`` (its tensor arguments
    positionally, its constants such as ``H`` by keyword)."""
    spec = OPS[case.op]
    consts = {n: case[n] for n in spec.consts}
    return Call(functools.partial(fn, **consts) if consts else fn,
                tuple(inputs[n] for n in spec.args), tuple(inputs[n] for n in spec.grad_args),
                spec.grad_args)


def weight_norm_call(case, inputs):
    """torch's ``nn.utils.parametrizations.weight_norm`` on an ``nn.Linear(in, out, bias=False)``
    whose weight is ``v``: the call computes ``.weight = g v / ||v||`` (g [out, 1] starts at
    ``||v||``) and ``fwd_bwd`` differentiates it w.r.t. g and v. Not the same function (no
    cap), but what a weight-normalized layer costs without fastair."""
    v = inputs["v"]
    layer = torch.nn.Linear(v.shape[1], v.shape[0], bias=False, device=v.device, dtype=v.dtype)
    with torch.no_grad():
        layer.weight.copy_(v)
    layer = torch.nn.utils.parametrizations.weight_norm(layer)
    p = layer.parametrizations.weight
    return Call(lambda: layer.weight, (), (p.original0, p.original1), ("g", "v"))


@dataclass(frozen=True)
class Provider:
    """An implementation of the ops: ``fastair`` (with ``backend``), ``eager``, ``compile``, or
    the yardstick ``weight_norm`` (torch's weight norm layer, for ``capped_weight_norm`` only)."""

    name: str
    backend: str = None  # fastair backend name, for the fastair providers only
    ops: tuple = None  # the ops it runs; None: all

    def runs(self, op):
        return self.ops is None or op in self.ops

    @property
    def same_maths(self):
        """Whether it computes the op itself, so that its errors against the reference mean
        something (``weight_norm`` does not: its errors are reported as nan)."""
        return self.name != "weight_norm"

    def context(self):
        """Where the fastair providers run with their backend; a no-op for the others."""
        return fastair.use_backend(self.backend) if self.backend else contextlib.nullcontext()

    def prepare(self, case, inputs):
        """The :class:`Call` of ``case`` on ``inputs``.

        ``compile`` starts from a clean Dynamo state each time (``torch._dynamo.reset()``), so
        that every case is compiled for its own static shapes and no recompile limit is hit;
        the compilation itself happens on the first call.
        """
        if not self.runs(case.op):
            raise ValueError(f"provider {self.name!r} does not run {case.op!r}")
        if self.name.startswith("fastair"):
            return op_call(getattr(fastair, case.op), case, inputs)
        if self.name == "eager":
            return op_call(EAGER[case.op], case, inputs)
        if self.name == "compile":
            torch._dynamo.reset()
            call = op_call(EAGER[case.op], case, inputs)
            return Call(torch.compile(call.fn), call.args, call.wrt, call.wrt_names)
        if self.name == "weight_norm":
            return weight_norm_call(case, inputs)
        raise ValueError(f"provider: unknown {self.name!r}")


PROVIDER_NAMES = ("fastair", "eager", "compile", "weight_norm", "fastair-triton")


def providers(device, backend="auto"):
    """fastair (``backend``), eager, compile, weight_norm (capped_weight_norm only); on CUDA
    also fastair with the Triton backend."""
    out = [Provider("fastair", backend), Provider("eager"), Provider("compile"),
           Provider("weight_norm", ops=("capped_weight_norm",))]
    if torch.device(device).type == "cuda":
        out.append(Provider("fastair-triton", "triton"))
    return out


def make_step(call, mode):
    """A no-argument callable running one measured call of ``call``; returns ``(out, *grads)``.

    ``fwd`` runs under ``torch.no_grad``; ``fwd_bwd`` also differentiates with an upstream
    gradient of ones (the gradient of ``out.sum()``) with ``torch.autograd.grad`` with respect to
    ``call.wrt`` (nothing accumulates in ``.grad``). The ones are a dense tensor made once, as a
    gradient coming from a real loss would be, not the stride-0 expansion ``out.sum()`` gives.
    """
    fn, args = call.fn, call.args
    if mode == "fwd":
        def step():
            with torch.no_grad():
                return (fn(*args),)
    elif mode == "fwd_bwd":
        wrt = call.wrt
        upstream = {}

        def step():
            out = fn(*args)
            ones = upstream.get(out.shape)
            if ones is None:
                ones = upstream[out.shape] = torch.ones_like(out)
            return (out, *torch.autograd.grad(out, wrt, ones))
    else:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    return step


def output_names(call, mode):
    """Names of what a step returns: ``out`` then ``d<input>`` per gradient."""
    return ("out",) + (tuple("d" + n for n in call.wrt_names) if mode == "fwd_bwd" else ())


# ---------------------------------------------------------------------------------------------
# Error against a float64 reference


def reference(case, inputs, mode, chunk_bytes=256 * MB):
    """The op's eager maths in float64 on the same inputs: dict name -> float64 tensor (see
    :func:`output_names`). Examples are independent along the op's ``batch`` size, so they are
    processed in chunks that keep each float64 copy of the largest input under ``chunk_bytes``."""
    spec = OPS[case.op]
    n_batch = case[spec.batch]
    if any(spec.batch not in shape for shape, _ in spec.inputs.values()):
        # an input shared by all examples (the decoder head's weight) gets a gradient summed
        # over them: no chunks
        chunk_bytes = math.inf
    batch_dim = {n: shape.index(spec.batch) if spec.batch in shape else None
                 for n, (shape, _) in spec.inputs.items()}
    largest = max(t.numel() for t in inputs.values())
    chunk = n_batch if chunk_bytes == math.inf else max(
        1, int(n_batch * chunk_bytes // (8 * largest)))
    parts = []
    for lo in range(0, n_batch, chunk):
        sl = {n: (t.detach() if batch_dim[n] is None else
                  t.detach().narrow(batch_dim[n], lo, min(chunk, n_batch - lo))).double()
              for n, t in inputs.items()}
        for n in spec.grad_args:
            sl[n].requires_grad_(mode == "fwd_bwd")
        call = op_call(spec.eager, case, sl)
        with torch.enable_grad() if mode == "fwd_bwd" else torch.no_grad():
            parts.append(tuple(t.detach() for t in make_step(call, mode)()))
    names = output_names(call, mode)
    if len(parts) == 1:
        return dict(zip(names, parts[0]))
    dims = [spec.out.index(spec.batch)] + [batch_dim[n[1:]] for n in names[1:]]
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


def sync(device):
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
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
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
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


def median_ms(fn, repeats=5, warmup=2):
    """Median wall time (ms) of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones: for
    workloads that take long enough (a training step, an epoch, IW-SVI) that a fixed count is
    enough. ``fn`` synchronizes itself where it runs on a GPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def gemm_rates(repeats=10, a_shape=(6400, 200), b_shape=(200, 784)):
    """GFLOP/s of ``[a_shape] x [b_shape]`` (default the decoder's largest product at k = 64,
    batch 100; batched shapes go through ``torch.matmul``) in float32 and bfloat16 on the CPU:
    the floor of a training step that is mostly that product. ``{"fp32": ..., "bf16": ...}``."""
    flops = 2 * math.prod(a_shape) * b_shape[-1]
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(*a_shape, dtype=dtype), torch.randn(*b_shape, dtype=dtype)
        for _ in range(3):
            torch.matmul(a, b)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b)
        out[name] = flops * repeats / (time.perf_counter() - start) / 1e9
    return out


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
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = step()
        sync(device)
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
    written, the output written and its gradient read. The largest tensor dominates: the logits
    of the IWAE ops (``k B D`` elements for ``fwd``, ``3 k B D`` for ``fwd_bwd``); for
    ``capped_weight_norm`` v and w (``2 O I`` for ``fwd``: read v, write w; ``5 O I`` for
    ``fwd_bwd``: also read dw and v again, write dv), plus O-sized terms for u and du."""
    spec = OPS[case.op]
    numel = {n: math.prod(case[s] for s in shape) for n, (shape, _) in spec.inputs.items()}
    out = math.prod(case[s] for s in spec.out)
    if mode == "fwd":
        return itemsize * (sum(numel.values()) + out)
    return itemsize * (sum((3 if n in spec.grad_args else 2) * m for n, m in numel.items())
                       + 2 * out)


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


def cpu_model():
    """The CPU's model name: ``Model name`` from ``lscpu``, else ``model name`` from
    ``/proc/cpuinfo``, else ``platform.processor()`` or the architecture."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.strip().startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device):
    """``cpu (<model>, <n> threads)`` or the CUDA device name."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def version_string():
    """``fastair X / torch Y / triton Z`` (``triton none`` without Triton)."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return f"fastair {fastair.__version__} / torch {torch.__version__} / triton {triton_version}"


def git_commit():
    """The short hash of the checkout's HEAD (``unknown`` outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def machine_line(device="cpu"):
    """``Machine: cpu (<model>, <n> threads); fastair X / torch Y / triton Z; commit abc1234.``"""
    return (f"Machine: {device_description(device)}; {version_string()}; "
            f"commit {git_commit()}.")


def command_line(module, argv=None):
    """``python -m <module> <args>``: the command that reruns this run (``argv`` as given to
    ``main``, else ``sys.argv[1:]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m", module] + [shlex.quote(str(a)) for a in args])


def report_header(title, command, device="cpu"):
    """The first lines of a result's markdown: the title, :func:`machine_line` and the
    command."""
    return f"# {title}\n\n{machine_line(device)}\n\nCommand: `{command}`\n"


def write_results(out, stem, rows, columns, text):
    """``out/stem.csv`` (the rows) and ``out/stem.md`` (the summary), atomically."""
    write_csv(rows, os.path.join(out, f"{stem}.csv"), columns)
    write_markdown(out, stem, text)


def write_markdown(out, stem, text):
    """``out/stem.md`` atomically, creating ``out``."""
    from fastair.io import atomic_write_text
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, f"{stem}.md"), text)


def write_csv(rows, path, columns):
    """Write ``rows`` (dicts) with the header ``columns`` to ``path`` atomically, creating its
    directory."""
    from fastair.training.checkpoint import atomic_write_csv
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(path, rows, columns)
