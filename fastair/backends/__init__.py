"""Backends: ``reference`` (pure torch, the spec), ``native`` (C++ in csrc/), ``triton`` (kernels/),
and the one place that says which of them runs: the backend in force (:func:`backend_setting`,
:func:`set_backend`, :func:`use_backend`, ``$FASTAIR_BACKEND``), the table :data:`TABLE` of what
each backend needs, and :func:`resolve`, which turns a name and a device into the backend used.

``auto`` (the default) picks :data:`AUTO_CHOICE` for the device (``triton`` for CUDA tensors,
``native`` for CPU tensors) and falls back to ``reference`` with one warning where that backend
cannot be used (no Triton installed, a C++ build failure).

Which name means what:

- :func:`backend_setting` (which :mod:`fastair.functional` reads on every op, a plain global
  read that torch.compile guards on): the setting, ``auto`` unless set.
- :func:`active_backend`, also named :func:`get_backend` (``fastair.get_backend()``): the
  backend that actually runs, never ``auto``: the setting where one is set, else what ``auto``
  resolves to for tensors of the given device type (default: ``cuda`` where a CUDA device is
  present, else ``cpu``). Like the first op, it may build the C++ kernels (announced on
  stderr) or import Triton to find out.
- :func:`plan`: the same answer without building or importing anything (``fastair info``): it
  tells what will run and what the first op will have to build.

Triton is optional (``pip install 'fastair[gpu]'``; CUDA builds of torch bring it): nothing
imports it unless the ``triton`` backend is tried, and without it ``auto`` runs ``native`` on
CPU tensors and, with one warning, ``reference`` on CUDA tensors.

The fused backends (``native`` and ``triton``) expose the same raw functions. They take canonical,
contiguous shapes prepared by :mod:`fastair.functional`, do no argument checking and no autograd
(that lives in :mod:`fastair.ops`). "acc" is the accumulation dtype (float32, or float64 when
inputs are float64); every tensor argument is in acc except ``logits`` (and the weights ``v``
and their gradient), which may also be float16/bfloat16 while acc is float32.

Each op ``NAME`` of :mod:`fastair.functional` has the raw functions ``NAME_fwd`` and ``NAME_bwd``
(``csrc/cpu/NAME.cpp``, ``kernels/NAME.py``), called by the custom op ``fastair::NAME``
(``fastair/ops/NAME.py``):

========================================================  ========================================
function                                                  returns
========================================================  ========================================
``bernoulli_log_prob_fwd(logits[M,N,D], x[N,D])``         ``[M,N]``: ``sum_d x*l - softplus(l)``
``bernoulli_log_prob_bwd(grad[M,N], logits, x)``          ``dlogits[M,N,D]`` (logits' dtype):
                                                          ``grad * (x - sigmoid(l))``
``gaussian_log_prob_fwd(z[M,N,Z], mu[N,Z],``              ``[M,N]``: ``log N(z; mu, exp(logvar))``
``logvar[N,Z])``
``gaussian_log_prob_bwd(grad[M,N], z, mu, logvar)``       ``(dz[M,N,Z], dmu[N,Z], dlogvar[N,Z])``
``iwae_bound_fwd(v[n,R])``                                ``(bound[R], lse[R])``:
                                                          ``lse = log sum_i exp(v[i, r])``,
                                                          ``bound = lse - log n``
``iwae_bound_bwd(grad[R], v[n,R], lse[R])``               ``[n,R]``: ``grad * exp(v - lse)``, 0
                                                          where ``lse == -inf``
``iwae_bernoulli_gaussian_fwd(x[B,D], logits[k,B,D],``    ``(log_w[k,B], bound[B])``; ``bound`` is
``z[k,B,Z], mu[B,Z], logvar[B,Z])``                       the logsumexp of ``log_w`` over k minus
                                                          log k
``iwae_bernoulli_gaussian_bwd(gb[B] or None,``            ``(dlogits, dz, dmu, dlogvar)`` for
``gl[k,B] or None, log_w, bound, x, logits, z, mu,``      ``G = gl + gb * softmax_k(log_w)``, the
``logvar)``                                               gradient with respect to ``log_w`` (the
                                                          weight 0 where ``bound`` is not finite)
``capped_weight_norm_fwd(v[O,I], u[O], H)``               ``(w[O,I], norm[O])``:
                                                          ``w_i = s_i v_i``, ``s_i = 1`` if
                                                          ``||v_i|| <= H sigmoid(u_i)`` else
                                                          ``H sigmoid(u_i) / ||v_i||``
``capped_weight_norm_bwd(dw, v, u, norm, H)``             ``(dv[O,I], du[O])``
``linear_bernoulli_log_prob_fwd(h[R,H], weight[D,H],``    ``[R]``: ``bernoulli_log_prob_fwd`` of
``bias[D] or None, x[N,D])``                              the logits ``h @ weight.T + bias`` (row
                                                          r pairs with x row r % N), never stored
                                                          whole
``linear_bernoulli_log_prob_bwd(grad[R], h, weight,``     ``(dh[R,H], dweight[D,H], dbias[D])``,
``bias, x)``                                              recomputing the logits tile by tile
``continuous_bernoulli_log_prob_fwd(logits[M,N,D],``      ``[M,N]``: ``sum_d (x - 1/2) l -``
``x[N,D])``                                               ``log(sinh(l/2) / (l/2))``, the
                                                          continuous Bernoulli log-density
``continuous_bernoulli_log_prob_bwd(grad[M,N],``          ``dlogits[M,N,D]`` (logits' dtype):
``logits, x)``                                            ``grad * (x - 1/(1 - e^-l) + 1/l)``
``linear_continuous_bernoulli_log_prob_fwd(h, weight,``   ``[R]``:
``bias, x)``                                              ``continuous_bernoulli_log_prob_fwd`` of
                                                          ``h @ weight.T + bias``, never stored
                                                          whole
``linear_continuous_bernoulli_log_prob_bwd(grad[R],``     ``(dh, dweight, dbias)``, as the
``h, weight, bias, x)``                                   Bernoulli head's
``linear_gaussian_log_prob_fwd(h, weight, bias, x,``      ``[R]``:
``logvar[NL,D])``                                         ``sum_d log N(x; m, exp(logvar))``,
                                                          ``m = h @ weight.T + bias`` never
                                                          stored whole; ``NL = N``, or 1 for
                                                          a row shared by every row (C++)
``linear_gaussian_log_prob_bwd(grad[R], h, weight,``      ``(dh, dweight, dbias, dlogvar[NL,D])``
``bias, x, logvar)``
========================================================  ========================================

with ``log_w = bernoulli(logits, x) + log N(z; 0, I) - log N(z; mu, exp(logvar))``, so that
``dlogits = G (x - sigmoid(l))``, ``dz = G (-z + (z - mu) exp(-logvar))``,
``dmu = sum_k G (mu - z) exp(-logvar)`` and ``dlogvar = sum_k G (1 - (z - mu)^2 exp(-logvar)) / 2``.
Capped weight norm: where the cap is active, ``dv = (c/n) (dw - v (v.dw) / n^2)`` and
``du = (v.dw / n) H sigmoid(u) (1 - sigmoid(u))`` (``n = ||v_i||``, ``c = H sigmoid(u_i)``);
elsewhere, the tie included, ``dv = dw`` and ``du = 0``. ``v`` (and ``dw``, ``w``, ``dv``) may be
float16/bfloat16 with ``u`` and ``norm`` in float32.
``bernoulli_log_prob_fwd`` and ``iwae_bernoulli_gaussian_fwd`` read the logits once; the backward
functions read them once and allocate nothing of their size except ``dlogits``.
"""

import contextlib
import importlib
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch

__all__ = ["BACKENDS", "TABLE", "AUTO_CHOICE", "get_backend", "backend_setting",
           "active_backend", "set_backend", "use_backend", "resolve", "plan", "module",
           "describe"]

BACKENDS = ("auto", "triton", "native", "reference")


def _check(name):
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    return name.strip().lower()


# A plain module global (not thread-local) so that torch.compile can read it and guard on it.
_current = _check(os.environ.get("FASTAIR_BACKEND", "auto") or "auto")


def backend_setting():
    """The backend name in force as set (``auto`` unless set): one of :data:`BACKENDS`."""
    return _current


def _default_device_type():
    """``cuda`` where a CUDA device is present, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def active_backend(device_type=None):
    """The backend that actually runs the ops on tensors of ``device_type`` (default: ``cuda``
    where a CUDA device is present, else ``cpu``): the setting where one is set (``triton``,
    ``native`` or ``reference``), else the backend ``auto`` resolves to (``native`` on CPU,
    ``triton`` on CUDA, ``reference`` where those cannot run). Never ``auto``. To find out, it
    does what the first op does: it may build the C++ kernels (one line on stderr says so) or
    import Triton; :func:`plan` answers without either."""
    if _current != "auto":
        return _current
    return _resolve(_current, device_type or _default_device_type())


def set_backend(name):
    """Set the backend for the process: one of ``auto``, ``triton``, ``native``, ``reference``."""
    global _current
    _current = _check(name)


@contextlib.contextmanager
def use_backend(name):
    """Context manager: run the ops with backend ``name`` inside the ``with`` block."""
    global _current
    previous, _current = _current, _check(name)
    try:
        yield
    finally:
        _current = previous


def _prepare_triton(device_type):
    """Import the Triton kernels; on CPU tensors they run through the Triton interpreter."""
    if not _triton_installed():
        raise RuntimeError("the 'triton' package is not installed (pip install 'fastair[gpu]', "
                           "or a CUDA build of torch, brings it)")
    if device_type == "cpu":
        if "fastair.kernels" not in sys.modules:
            # triton.jit reads TRITON_INTERPRET when the kernels are decorated, at import.
            os.environ.setdefault("TRITON_INTERPRET", "1")
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                "backend 'triton' on CPU tensors needs the Triton interpreter: set "
                "TRITON_INTERPRET=1 before fastair's Triton kernels are first used")
    elif device_type != "cuda":
        raise RuntimeError(f"backend 'triton' supports CUDA and CPU tensors, not {device_type!r}")
    importlib.import_module("fastair.backends.triton")


def _prepare_native(device_type):
    if device_type != "cpu":
        raise RuntimeError(
            f"backend 'native' has C++ kernels for CPU tensors only, got {device_type!r} tensors; "
            "use 'triton' or 'auto' for CUDA tensors")
    importlib.import_module("fastair.backends.native").load()


@dataclass(frozen=True)
class Backend:
    """A row of :data:`TABLE`: ``module`` holds the raw kernels (None: the reference, which the
    ops layer calls itself); ``prepare(device_type)`` raises RuntimeError where the backend
    cannot run, and builds or imports what it needs otherwise."""
    name: str
    module: Optional[str]
    prepare: Callable[[str], None]


TABLE = {
    "reference": Backend("reference", None, lambda device_type: None),
    "native": Backend("native", "fastair.backends.native", _prepare_native),
    "triton": Backend("triton", "fastair.backends.triton", _prepare_triton),
}
AUTO_CHOICE = {"cuda": "triton", "cpu": "native"}
"""What ``auto`` tries first on each device type (anything else: the reference)."""

_warned = set()


def _triton_installed():
    """Whether ``import triton`` can work, found without importing it."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def _warn_once(key, message):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _resolve(name, device_type):
    if name != "auto":
        TABLE[name].prepare(device_type)
        return name
    choice = AUTO_CHOICE.get(device_type, "reference")
    try:
        TABLE[choice].prepare(device_type)
        return choice
    except Exception as err:  # a missing Triton, a failed build: degrade, never crash
        _warn_once((choice, device_type),
                   f"fastair: backend '{choice}' is unavailable on {device_type} ({err}); "
                   "using the pure-torch reference instead")
        return "reference"


try:  # under torch.compile, run the resolution once at trace time and keep its answer
    resolve = torch._dynamo.assume_constant_result(_resolve)
except AttributeError:  # pragma: no cover - older torch without the helper
    resolve = _resolve
resolve.__doc__ = """The backend that runs for ``name`` (one of :data:`BACKENDS`) on tensors of
``device_type``: ``name`` itself, after checking it can run (RuntimeError if not), or for
``auto`` the device's :data:`AUTO_CHOICE`, else ``reference`` with one warning."""


def module(name):
    """The module holding the raw functions of backend ``name`` (``native`` or ``triton``)."""
    path = TABLE[name].module if name in TABLE else None
    if path is None:
        raise ValueError(f"backend: {name!r} has no raw kernels")
    return importlib.import_module(path)


def plan(device_type, name=None):
    """``(backend, note)``: the backend that will run the ops on tensors of ``device_type`` for
    ``name`` (default: the setting), found without building, loading or importing anything, and
    a short note on what it needs (e.g. whether the C++ kernels are built). ``backend`` is
    ``None`` where an explicitly set backend cannot run there (the op would raise). Never
    raises (it is for reports such as ``fastair info``)."""
    name = _current if name is None else name
    try:
        return _plan(name, device_type)
    except Exception as err:  # pragma: no cover - a report must not fail
        return name, f"unknown ({type(err).__name__}: {err})"


def _plan(name, device_type):
    explicit = name != "auto"
    choice = name if explicit else AUTO_CHOICE.get(device_type, "reference")
    problem, note = None, ""
    if choice == "native":
        from fastair.backends import native
        if device_type != "cpu":
            problem = f"C++ kernels for CPU tensors only, not {device_type}"
        else:
            st = native.status()
            if st["error"]:
                problem = f"C++ kernels unavailable ({st['error']})"
            elif st["loaded"]:
                note = "C++ kernels loaded"
            elif st["built"]:
                note = "C++ kernels built"
            else:
                note = ("C++ kernels not built yet: the first op builds them (about a minute), "
                        "or run `fastair build`")
    elif choice == "triton":
        if not _triton_installed():
            problem = "triton not installed"
        elif device_type == "cpu":
            if os.environ.get("TRITON_INTERPRET") != "1" and "fastair.kernels" in sys.modules:
                problem = "Triton kernels imported without TRITON_INTERPRET=1"
            else:
                note = "through the Triton interpreter (slow)"
        elif device_type != "cuda":
            problem = f"Triton kernels for CUDA and CPU tensors only, not {device_type}"
        else:
            note = "Triton kernels compiled on first use"
    if problem is None:
        return choice, note
    if explicit:
        return None, f"{name} set but {problem}: the ops raise"
    return "reference", f"{problem}; auto falls back to the pure-torch reference"


def describe(device_type, name=None):
    """``name`` (default: the backend in force), with what ``auto`` resolves to on
    ``device_type``, e.g. ``"auto -> native"``; never raises (it is for reports)."""
    name = backend_setting() if name is None else name
    if name != "auto":
        return name
    try:
        return f"auto -> {_resolve(name, device_type)}"
    except Exception:
        return name


get_backend = active_backend
"""The backend that actually runs (:func:`active_backend`), as ``fastair.get_backend()``; the
setting as set, ``auto`` included, is :func:`backend_setting`."""
