"""Annealed importance sampling (AIS) of ``ln p(x)`` with HMC transitions, and bidirectional Monte
Carlo (BDMC) on simulated data: a second opinion on IW-SVI (docs/design.md §5.4) for any model of
:mod:`fastair.evaluation.protocol`.

**Path.** From a diagonal Gaussian ``q0(z) = N(mu0, exp(logvar0))`` (the prior, the encoder's
``q(z|x)``, or IW-SVI's fitted ``q``) to the posterior, geometrically::

    log f_b(z) = (1 - b) log q0(z) + b log p(x, z) = log q0(z) + b g(z),
    g(z)       = log p(x|z) + log p(z) - log q0(z)          (the protocol's log weight)

with ``0 = b_0 < b_1 < ... < b_T = 1`` (:func:`sigmoid_schedule`, ``T = steps``).

**Estimator.** ``z_0 ~ q0``; for ``t = 1 .. T - 1`` one HMC transition (:mod:`.hmc`) leaving
``f_{b_t}`` invariant takes ``z_{t-1}`` to ``z_t``; the log weight of each chain is::

    log w = sum_{t=1..T} (b_t - b_{t-1}) g(z_{t-1})           (float64)

``E[w] = p(x)`` (Neal 2001). Over ``C`` chains ``log_px = logmeanexp_c log w`` (a stochastic lower
bound: ``E[log_px] <= ln p(x)``), with IW-SVI's delta-method standard error
(``se = sqrt(1/ESS - 1/C)``, ``ESS = (sum w)^2 / sum w^2``). ``steps = 1`` is plain importance
sampling from ``q0`` with ``C`` draws.

**Transitions.** HMC with ``leapfrog`` steps and the scale of ``q0`` as a diagonal preconditioner
(mass matrix ``diag(exp(-logvar0))``; the identity for ``init="prior"``): a ``q0`` from the
encoder or from IW-SVI has the posterior's scale in each dimension, which differ by a factor of
ten and more between the dims of a trained VAE's latent, and one step size then fits all of
them; being fixed for the whole run, it leaves every transition ``f_b``-invariant. Each
transition's step size is jittered, ``h (1 + 0.5 u)`` with ``u ~ U(-1, 1)`` fresh per chain (a
mixture of invariant kernels, so invariant): without it a 2-d posterior's leapfrog trajectories
come back near their start, and the weights' variance is 1.4 times higher.

**Step-size adaptation.** The step size is adapted after every transition towards an acceptance
probability of 0.65, ``log h <- log h + adapt_rate (a - 0.65)``. Where ``a`` is the chain's own
acceptance (``adapt="chain"``, the rule of issue 31), ``h`` at transition ``t`` depends on the
past only, and each transition, given the past, leaves ``f_{b_t}`` invariant; but that is not
enough for ``E[w] = p(x)``: the past is correlated with the chain's current position (a chain in
a region where it is rejected gets smaller steps there), so the kernel acting on the current
position is state-dependent and no longer ``f_{b_t}``-invariant. Measured on the sharp 2-d model
of ``tests/evaluation/test_ais.py`` (``T = 300``, ``L = 2``, 512 chains, 48 example-runs, against
quadrature): ``log E[w]`` is too high by +0.013 +- 0.003 nat at ``adapt_rate = 0.05`` and
+0.049 +- 0.002 at 0.2, so the "lower bound" can sit above ``ln p(x)``. The default
``adapt="pilot"`` keeps the estimator exact: ``pilot`` extra chains per example run alongside
(from their own draws of ``q0``), adapt one step size per example from their mean acceptance,
and their weights are dropped; the ``C`` estimating chains use that step size, a function of
the pilot chains alone, so given the pilots every estimating chain is a plain AIS run with a
fixed schedule of step sizes (measured +0.002 +- 0.003 and -0.000 +- 0.003 nat). ``"fixed"``
keeps ``step_size`` throughout.

**Cost** per example: ``(C + pilot) (1 + (T - 1) L)`` decoder passes, each a forward and a
backward through the decoder (the gradient of ``g`` by autograd, the model's parameters frozen);
the gradient at a transition's starting point is carried over from the previous one, and
``f_b``'s value and gradient for a new ``b`` are formed from the cached ``g`` and its gradient.
At the defaults (``T = 1000``, ``C = 32``, ``L = 2``, 4 pilots) 71,964 passes per example. On
the sharp 2-d model of ``tests/evaluation/test_ais.py`` they give a mean absolute error of
0.026-0.034 nat against quadrature (four seeds, from the prior or the encoder). On a trained
mnist5k VAE (``50-200-200-784``) they take 1.3 s per digit on one CPU core and give standard
errors of about 0.1 nat from the encoder, 0.06 from IW-SVI's fitted ``q`` and 0.25 from the
prior, within 0.12 nat of a run with ``T = 5000, C = 64``. More temperatures buy more than longer
trajectories: at equal cost ``L = 2`` beat ``L = 3`` and ``L = 5`` on both models.
"""
import math
import warnings
from dataclasses import dataclass

import torch

from fastair.evaluation.bound import at_least_float32, batches, block_generator
from fastair.evaluation.fit_q import fit_gaussian_q
from fastair.evaluation.hmc import hmc_transition
from fastair.evaluation.protocol import check_model, log_weights, sample_x
from fastair.evaluation.result import SE_WARN
from fastair.evaluation.settings import IWSVISettings
from fastair.io import progress_bar
from fastair.precision import autocast, check_precision

__all__ = ["AISResult", "BDMCResult", "AIS_INITS", "TARGET_ACCEPT", "ais_log_likelihood", "bdmc",
           "sigmoid_schedule"]

AIS_INITS = ("encoder", "prior", "fitted")
"""Where the path starts: the encoder's ``q(z|x)``, the prior ``N(0, I)``, or IW-SVI's fitted
Gaussian (:func:`~fastair.evaluation.fit_q.fit_gaussian_q`)."""

TARGET_ACCEPT = 0.65
"""The acceptance probability the step sizes are adapted towards (Neal 2011: near-optimal for
HMC on a Gaussian in many dimensions)."""

STEPS, CHAINS, LEAPFROG, BATCH_SIZE = 1000, 32, 2, 500
"""The defaults of :func:`ais_log_likelihood` (module docstring: their cost)."""

STEP_SIZE, ADAPT_RATE, PILOT = 0.3, 0.2, 4
"""Starting step size (in units of ``q0``'s scale), its adaptation rate, and the number of pilot
chains per example that adapt it (module docstring)."""

DELTA, JITTER = 4.0, 0.5
"""The sigmoid schedule's half-width ``delta`` (Grosse et al. 2015 use 4), and the jitter of each
transition's step size: ``h (1 + JITTER u)``, ``u ~ U(-1, 1)`` fresh per chain and transition."""

ADAPTS = ("pilot", "chain", "fixed")
"""How the step size is adapted (module docstring)."""

_LOG_STEP_MIN, _LOG_STEP_MAX = math.log(1e-6), math.log(1e3)

_FIT = IWSVISettings().fit_kwargs()
"""IW-SVI's defaults for fitting ``q`` (:func:`~fastair.evaluation.iwsvi_log_likelihood`)."""


def sigmoid_schedule(steps, delta=DELTA):
    """Grosse et al.'s sigmoid temperatures ``[b_0, ..., b_T]`` (``T = steps``, float64 CPU):
    ``s_t = sigmoid(delta (2 t / T - 1))``, ``b_t = (s_t - s_0) / (s_T - s_0)``, so that
    ``b_0 = 0`` and ``b_T = 1`` exactly; denser near both ends. ``steps = 1``: ``[0, 1]``."""
    _check_count("steps", steps)
    if not (isinstance(delta, (int, float)) and not isinstance(delta, bool) and delta > 0
            and math.isfinite(delta)):
        raise ValueError(f"delta: expected a finite number > 0, got {delta!r}")
    t = torch.arange(steps + 1, dtype=torch.float64)
    s = torch.sigmoid(delta * (2 * t / steps - 1))
    b = (s - s[0]) / (s[-1] - s[0])
    b[0], b[-1] = 0.0, 1.0
    return b


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return value


def _check_number(name, value, low, strict):
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if strict else value >= low))
    if not ok:
        raise ValueError(f"{name}: expected a finite number {'>' if strict else '>='} {low}, got "
                         f"{value!r}")


def _check_settings(steps, chains, leapfrog, batch_size, init, step_size, adapt, adapt_rate,
                    pilot, precision, inits=AIS_INITS):
    for name, value in (("steps", steps), ("chains", chains), ("leapfrog", leapfrog),
                        ("batch_size", batch_size)):
        _check_count(name, value)
    if init not in inits:
        raise ValueError(f"init: expected one of {inits}, got {init!r}")
    if adapt not in ADAPTS:
        raise ValueError(f"adapt: expected one of {ADAPTS}, got {adapt!r}")
    if adapt == "pilot":
        _check_count("pilot", pilot)
    _check_number("step_size", step_size, 0, True)
    _check_number("adapt_rate", adapt_rate, 0, False)
    check_precision(precision)


def _chains(mu0, scale, n, generator):
    """``n`` draws of ``q0`` ``[n, B, Z]``."""
    return mu0 + scale * torch.randn((n,) + tuple(mu0.shape), generator=generator,
                                     dtype=mu0.dtype, device=mu0.device)


def _first_step(adapt, step_size, chains, like):
    """The starting step sizes: ``[C, B]`` for ``adapt="chain"``, else ``[B]``."""
    shape = (chains, like.shape[0]) if adapt == "chain" else (like.shape[0],)
    return torch.full(shape, float(step_size), dtype=like.dtype, device=like.device)


def _per_example(step):
    """Geometric mean over the chains of ``[C, B]`` step sizes, or ``[B]`` as it is."""
    return step.log().mean(0).exp() if step.dim() == 2 else step


def _log_q0(z, mu, logvar):
    """``log N(z; mu, exp(logvar))`` ``[...]`` and its gradient in ``z`` ``[..., Z]``."""
    prec = torch.exp(-logvar)
    d = z - mu
    value = -0.5 * (d.square() * prec + logvar + math.log(2 * math.pi)).sum(-1)
    return value, -d * prec


def _se(log_w):
    """``(logmeanexp, ESS, delta-method SE)`` over dim 0 of float64 ``log_w`` ``[C, B]``."""
    c = log_w.shape[0]
    top = log_w.max(0).values
    shift = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    rel = torch.exp(log_w - shift)
    s1, s2 = rel.sum(0), rel.square().sum(0)
    log_mean = torch.log(s1) + shift - math.log(c)
    ess = torch.where(s2 > 0, s1 * s1 / torch.where(s2 > 0, s2, torch.ones_like(s2)),
                      torch.zeros_like(s1))
    se = torch.sqrt(torch.clamp(1.0 / ess - 1.0 / c, min=0.0))
    return log_mean, ess, se


class _Path:
    """``g(z) = log p(x, z) - log q0(z)`` and its gradient for one batch (``z [C, B, Z]``),
    through the protocol's log weights (the model's own, the fused head or ``decode_logits``),
    the decoder's matmuls under ``amp``; and ``f_b``'s state for the HMC kernel."""

    def __init__(self, model, x, mu0, logvar0, path, amp):
        self.model, self.x, self.mu0, self.logvar0 = model, x, mu0, logvar0
        self.path, self.amp = path, amp

    def g(self, z):
        with torch.enable_grad():
            zr = z.detach().requires_grad_(True)
            with self.amp:
                g = log_weights(self.model, self.x, self.mu0, self.logvar0, zr, path=self.path)
            (dg,) = torch.autograd.grad(g.sum(), zr)
        return g.detach().to(z.dtype), dg.to(z.dtype)

    def state(self, z, b, g, dg):
        """``(log f_b, grad log f_b, g, grad g)`` at ``z`` from the cached ``g, grad g``."""
        lq, dlq = _log_q0(z, self.mu0, self.logvar0)
        return lq + b * g, dlq + b * dg, g, dg

    def target(self, b):
        return lambda z: self.state(z, b, *self.g(z))


def _anneal(path, z, betas, step, scale, leapfrog, adapt, adapt_rate, generator, *,
            pilot=None, tick=None):
    """AIS along ``betas`` (either direction) from draws of ``f_{b_0}``.

    Args:
        z: ``[C, B, Z]`` the estimating chains' starting points.
        step: the starting step size: ``[B]`` for ``adapt`` "pilot" or "fixed", ``[C, B]`` for
            "chain".
        pilot: ``[P, B, Z]`` the pilot chains' starting points (``adapt="pilot"``).
    Returns:
        ``(log_w [C, B] float64, acceptance [B] float64, step, pilot)``: ``log w = sum_t (b_t -
        b_{t-1}) g(z_{t-1})`` of the estimating chains, their mean acceptance probability over
        the ``T - 1`` transitions (NaN for ``T = 1``), the final step sizes (as ``step``) and
        the pilot chains' final positions.
    """
    steps, c = betas.numel() - 1, z.shape[0]
    if adapt == "pilot":
        z = torch.cat([z, pilot])
    g, dg = path.g(z)
    log_w = torch.zeros(z.shape[:-1], dtype=torch.float64, device=z.device)[:c]
    accepted = torch.zeros_like(log_w)
    log_step = step.log()
    for t in range(1, steps + 1):
        log_w += (betas[t] - betas[t - 1]).item() * g[:c].double()
        if tick is not None:
            tick()
        if t == steps:
            break
        b = betas[t].item()
        h = torch.exp(log_step).expand(z.shape[:-1])
        z, state, a = hmc_transition(z, path.state(z, b, g, dg), path.target(b), h, scale,
                                     leapfrog, generator, JITTER)
        g, dg = state[2], state[3]
        accepted += a[:c].double()
        if adapt == "pilot":
            log_step = log_step + adapt_rate * (a[c:].mean(0) - TARGET_ACCEPT)
        elif adapt == "chain":
            log_step = log_step + adapt_rate * (a - TARGET_ACCEPT)
        log_step = log_step.clamp(_LOG_STEP_MIN, _LOG_STEP_MAX)
    acceptance = (accepted / max(steps - 1, 1)).mean(0)
    if steps == 1:
        acceptance = torch.full_like(acceptance, float("nan"))
    return log_w, acceptance, torch.exp(log_step), (z[c:] if adapt == "pilot" else None)


def _frozen(model):
    """Put ``model`` in eval mode with its parameters frozen; returns the undo function."""
    was_training = model.training
    model.eval()
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)

    def undo():
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
    return undo


@dataclass
class AISResult:
    """Per-example AIS estimates, each ``[N]`` on the CPU, and the settings.

    Attributes:
        log_px: ``logmeanexp`` over the chains of the AIS weights: the estimate of ``ln p(x)``,
            a stochastic lower bound (float64).
        se: delta-method standard error of ``log_px`` over the chains, nats (float64).
        ess: effective number of chains ``(sum w)^2 / sum w^2``, in ``[1, chains]`` (float64).
        acceptance: mean HMC acceptance probability over the transitions and chains (float64;
            NaN for ``steps = 1``, which has no transition).
        step_size: geometric mean over the chains of the final step sizes, in units of ``q0``'s
            scale (float64).
        steps, chains, leapfrog, init, adapt, pilot: the settings (``pilot`` 0 unless
            ``adapt="pilot"``).
    """
    log_px: torch.Tensor
    se: torch.Tensor
    ess: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    steps: int
    chains: int
    leapfrog: int
    init: str
    adapt: str = "pilot"
    pilot: int = PILOT

    CSV_COLUMNS = ("index", "log_px", "se", "ess", "acceptance", "step_size")
    """The columns of :meth:`per_example_csv`, in order."""

    @property
    def decoder_passes(self):
        """Decoder forward-and-backward passes per example: ``(chains + pilot) (1 + (steps - 1)
        leapfrog)``."""
        return (self.chains + self.pilot) * (1 + (self.steps - 1) * self.leapfrog)

    def unreliable(self):
        """``[N]`` bool: examples whose ``se > SE_WARN`` (more steps or chains needed)."""
        return self.se > SE_WARN

    def summary(self):
        """Mean ``-ln p(x)`` in nats with the diagnostics: mean and largest standard error, the
        standard error of the mean, the acceptance (mean and smallest), the number of
        unreliable examples and the settings."""
        n = int(self.log_px.numel())
        return {"-ln p(x)": -self.log_px.mean().item(), "n": n,
                "mean_se": self.se.mean().item(), "max_se": self.se.max().item(),
                "se_of_mean": (self.se.square().sum().sqrt() / n).item(),
                "min_ess": self.ess.min().item(),
                "mean_acceptance": self.acceptance.mean().item(),
                "min_acceptance": self.acceptance.min().item(),
                "n_unreliable": int(self.unreliable().sum()),
                "steps": self.steps, "chains": self.chains, "leapfrog": self.leapfrog,
                "init": self.init, "decoder_passes_per_example": self.decoder_passes}

    def warnings(self):
        """Sentences for the user about unreliable examples ([] if none)."""
        bad = self.unreliable()
        if not bad.any():
            return []
        worst = int(self.se.argmax())
        return [f"{int(bad.sum())} of {self.log_px.numel()} AIS estimates have a standard error "
                f"above {SE_WARN} nat; the worst, example {worst}, {self.se[worst].item():.3f} "
                f"nat (ESS {self.ess[worst].item():.1f} of {self.chains} chains): raise steps or "
                "chains"]

    def per_example_csv(self):
        """The per-example values as CSV text, one row per example, columns
        :attr:`CSV_COLUMNS`."""
        rows = [",".join(self.CSV_COLUMNS)] + [
            f"{i},{a:.6f},{s:.6f},{e:.2f},{acc:.4f},{h:.5g}"
            for i, (a, s, e, acc, h) in enumerate(zip(
                self.log_px.tolist(), self.se.tolist(), self.ess.tolist(),
                self.acceptance.tolist(), self.step_size.tolist()))]
        return "\n".join(rows) + "\n"


def _check_fitted(fitted, x):
    if not (isinstance(fitted, (tuple, list)) and len(fitted) == 2
            and all(torch.is_tensor(t) for t in fitted)):
        raise ValueError("fitted: expected a pair of tensors (mu, logvar), each [N, Z], got "
                         f"{type(fitted).__name__}")
    mu, logvar = fitted
    if mu.dim() != 2 or mu.shape != logvar.shape or mu.shape[0] != x.shape[0]:
        raise ValueError(f"fitted: expected mu and logvar of one shape [N, Z] with N = "
                         f"{x.shape[0]}, got {list(mu.shape)} and {list(logvar.shape)}")


def ais_log_likelihood(model, x, *, steps=STEPS, chains=CHAINS, init="encoder",
                       leapfrog=LEAPFROG, seed=0, precision="fp32", progress=True,
                       batch_size=BATCH_SIZE, fitted=None, step_size=STEP_SIZE, adapt="pilot",
                       adapt_rate=ADAPT_RATE, pilot=PILOT, warn=True):
    """AIS estimate of ``ln p(x)`` per example (module docstring), all chains and examples of a
    batch as one tensor ``[chains (+ pilot), B, Z]``.

    Args:
        model: any ``nn.Module`` of :mod:`fastair.evaluation.protocol` (``encode``,
            ``decode_logits``; its own ``log_weights`` or a fused head are used where present),
            checked before any work (``TypeError``), run in eval mode with its parameters frozen
            (restored afterwards).
        x: ``[N, D]`` data on the model's device (binary for the Bernoulli likelihood).
        steps: ``T``, the number of temperatures after ``b_0 = 0`` (``T - 1`` HMC transitions);
            ``1`` is importance sampling from ``q0`` with ``chains`` draws.
        chains: ``C`` independent AIS runs per example (the estimate's chains).
        init: ``"encoder"`` (``q(z|x)``), ``"prior"`` (``N(0, I)``) or ``"fitted"`` (IW-SVI's
            fitted ``q``: ``fitted`` where given, else fitted here by
            :func:`~fastair.evaluation.fit_gaussian_q` with IW-SVI's defaults and generator, so
            the same ``q`` as :func:`~fastair.evaluation.iwsvi_log_likelihood` at the same
            ``seed`` and ``batch_size``).
        leapfrog: ``L``, leapfrog steps per transition.
        seed: block ``b`` of ``batch_size`` examples draws from
            :func:`~fastair.evaluation.bound.block_generator` ``(device, seed, b)``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``: the decoder's matmuls under autocast;
            ``z``, the densities and the HMC arithmetic stay in ``q0``'s dtype (float32 at
            least); the weights are summed in float64.
        progress: a tqdm bar over the temperatures of every batch.
        batch_size: examples per batch; memory follows ``(chains + pilot) * batch_size`` rows
            of the decoder's activations and their gradients.
        fitted: ``(mu, logvar)``, each ``[N, Z]``: the ``q0`` of ``init="fitted"``.
        step_size: the starting step size, in units of ``q0``'s scale.
        adapt: ``"pilot"`` (default: per example, from ``pilot`` extra chains whose weights are
            not used; exactly unbiased), ``"chain"`` (each chain from its own acceptance: biased
            upwards, module docstring) or ``"fixed"`` (``step_size`` throughout).
        adapt_rate: the rate of the step size's adaptation.
        pilot: pilot chains per example (``adapt="pilot"``).
        warn: emit a ``UserWarning`` naming examples whose standard error exceeds
            :data:`~fastair.evaluation.result.SE_WARN`.
    Returns:
        :class:`AISResult`.
    Raises:
        ValueError: a bad argument (named); TypeError: a model off the protocol (before any
        work).
    """
    _check_settings(steps, chains, leapfrog, batch_size, init, step_size, adapt, adapt_rate,
                    pilot, precision)
    if fitted is not None and init != "fitted":
        raise ValueError(f"fitted: given with init={init!r}; pass init='fitted' to start from it")
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[0] == 0:
        shape = list(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x: expected a non-empty [N, D] tensor, got {shape}")
    if fitted is not None:
        _check_fitted(fitted, x)
    path = check_model(model, x)  # before any work: a TypeError for a model off the protocol
    amp = autocast(x.device.type, precision)
    betas = sigmoid_schedule(steps)
    n_batches = -(-x.shape[0] // batch_size)
    bar = progress_bar(progress, total=n_batches * steps, desc="AIS", unit="temp")
    tick = None if bar is None else (lambda: bar.update(1))
    undo = _frozen(model)
    parts = []
    try:
        for b, xb in batches(x, batch_size):
            generator = block_generator(x.device, seed, b)
            mu0, logvar0 = _start(model, xb, init, fitted, b * batch_size, generator, amp, path)
            scale = torch.exp(0.5 * logvar0)
            z = _chains(mu0, scale, chains, generator)
            pilots = _chains(mu0, scale, pilot, generator) if adapt == "pilot" else None
            if bar is not None:
                bar.set_postfix(batch=f"{b + 1}/{n_batches}", refresh=False)
            log_w, acceptance, step, _ = _anneal(
                _Path(model, xb, mu0, logvar0, path, amp), z, betas,
                _first_step(adapt, step_size, chains, xb), scale, leapfrog, adapt, adapt_rate,
                generator, pilot=pilots, tick=tick)
            log_px, ess, se = _se(log_w)
            parts.append((log_px.cpu(), se.cpu(), ess.cpu(), acceptance.cpu(),
                          _per_example(step).double().cpu()))
    finally:
        if bar is not None:
            bar.close()
        undo()
    log_px, se, ess, acceptance, step_sizes = (torch.cat(t) for t in zip(*parts))
    result = AISResult(log_px=log_px, se=se, ess=ess, acceptance=acceptance,
                       step_size=step_sizes, steps=steps, chains=chains, leapfrog=leapfrog,
                       init=init, adapt=adapt, pilot=pilot if adapt == "pilot" else 0)
    if warn:
        for message in result.warnings():
            warnings.warn(f"AIS: {message}", stacklevel=2)
    return result


def _start(model, xb, init, fitted, offset, generator, amp, path):
    """``(mu0, logvar0)`` ``[B, Z]`` of the batch ``xb`` (rows ``offset ...`` of ``x``)."""
    with torch.no_grad(), amp:
        mu, logvar = (at_least_float32(t) for t in model.encode(xb))
    if init == "prior":
        return torch.zeros_like(mu), torch.zeros_like(logvar)
    if init == "fitted":
        if fitted is not None:
            rows = slice(offset, offset + xb.shape[0])
            return (at_least_float32(fitted[0][rows]).to(mu.device, mu.dtype),
                    at_least_float32(fitted[1][rows]).to(mu.device, mu.dtype))
        with amp:
            fit = fit_gaussian_q(model, xb, mu, logvar, generator=generator, path=path, **_FIT)
        return fit.mu.detach(), fit.logvar.detach()
    return mu, logvar


@dataclass
class BDMCResult:
    """Bidirectional Monte Carlo on ``n`` simulated examples; per-example fields on the CPU.

    Attributes:
        x: ``[n, D]`` the simulated data (``x ~ p(x|z)``, ``z ~ p(z)``), model dtype.
        z: ``[n, Z]`` the latents that generated them (exact posterior draws).
        lower: forward AIS ``log_px`` ``[n]``: a stochastic lower bound of ``ln p(x)``
            (float64).
        upper: ``-logmeanexp`` of the reverse AIS weights ``[n]``: a stochastic upper bound
            (float64).
        lower_se, upper_se: their delta-method standard errors over the chains (float64).
        acceptance_forward, acceptance_reverse: mean HMC acceptance of each direction ``[n]``.
        steps, chains, leapfrog, init, adapt: the settings.
    """
    x: torch.Tensor
    z: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    lower_se: torch.Tensor
    upper_se: torch.Tensor
    acceptance_forward: torch.Tensor
    acceptance_reverse: torch.Tensor
    steps: int
    chains: int
    leapfrog: int
    init: str = "prior"
    adapt: str = "pilot"

    CSV_COLUMNS = ("index", "lower", "upper", "width", "lower_se", "upper_se",
                   "acceptance_forward", "acceptance_reverse")

    @property
    def width(self):
        """``upper - lower`` ``[n]``: the bracket of each example (>= 0 in expectation)."""
        return self.upper - self.lower

    def summary(self):
        """Means of ``lower``, ``upper`` and the width, the largest width, the acceptances and
        the settings (nats)."""
        w = self.width
        return {"lower": self.lower.mean().item(), "upper": self.upper.mean().item(),
                "width": w.mean().item(), "max_width": w.max().item(),
                "n": int(w.numel()),
                "acceptance_forward": self.acceptance_forward.mean().item(),
                "acceptance_reverse": self.acceptance_reverse.mean().item(),
                "steps": self.steps, "chains": self.chains, "leapfrog": self.leapfrog,
                "init": self.init}

    def per_example_csv(self):
        """One row per example, columns :attr:`CSV_COLUMNS`."""
        rows = [",".join(self.CSV_COLUMNS)] + [
            f"{i},{lo:.6f},{up:.6f},{up - lo:.6f},{ls:.6f},{us:.6f},{af:.4f},{ar:.4f}"
            for i, (lo, up, ls, us, af, ar) in enumerate(zip(
                self.lower.tolist(), self.upper.tolist(), self.lower_se.tolist(),
                self.upper_se.tolist(), self.acceptance_forward.tolist(),
                self.acceptance_reverse.tolist()))]
        return "\n".join(rows) + "\n"


def _model_device_dtype(model):
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, at_least_float32(p.detach()[:0]).dtype
    return torch.device("cpu"), torch.float32


def bdmc(model, n, *, steps=STEPS, chains=CHAINS, leapfrog=LEAPFROG, init="prior", seed=0,
         precision="fp32", progress=True, batch_size=BATCH_SIZE, z_dim=None,
         step_size=STEP_SIZE, adapt="pilot", adapt_rate=ADAPT_RATE, pilot=PILOT):
    """Bidirectional Monte Carlo (Grosse et al. 2015): bracket ``ln p(x)`` on simulated data.

    Draws ``z ~ N(0, I)`` ``[n, Z]`` and ``x ~ p(x|z)`` from the model's likelihood
    (:func:`~fastair.evaluation.protocol.sample_x`: binary ``x ~ Bernoulli(sigmoid(l))`` for the
    default Bernoulli, grey levels for the continuous Bernoulli, real values for the Gaussian);
    each ``z`` is then an exact draw of ``p(z|x)``. Forward AIS (``q0 -> p(z|x)``, as
    :func:`ais_log_likelihood`) gives ``lower``, ``E[lower] <= ln p(x)``. Reverse AIS starts every
    chain at the generating ``z`` and runs the schedule backwards (``b`` from 1 to 0, HMC at each
    intermediate ``b``); its weights ``log w' = sum_t (b_t - b_{t-1}) g(z_{t-1})`` (now with
    ``b_t < b_{t-1}``) have ``E[w'] = 1 / p(x)``, so ``upper = -logmeanexp_c log w'`` has
    ``E[upper] >= ln p(x)``. The true value lies in ``[lower, upper]`` up to the noise of each,
    and the width ``upper - lower`` bounds the error of either estimate; it falls to 0 as
    ``steps`` grows.

    The reverse run's step sizes must not depend on the generating ``z`` (its chains' starting
    point): its pilot chains start at the forward pilot chains' final positions and its step
    size at the forward run's final one, functions of ``x`` and the forward run only.

    Args:
        model: a model of :mod:`fastair.evaluation.protocol` with a known latent size.
        n: number of simulated examples.
        steps: as :func:`ais_log_likelihood`, for both directions; so are ``chains``,
            ``leapfrog``, ``precision``, ``batch_size``, ``step_size``, ``adapt``,
            ``adapt_rate`` and ``pilot``.
        init: ``q0`` of both directions: ``"prior"`` (Grosse et al.'s choice) or ``"encoder"``.
        seed: the data are drawn from ``torch.Generator(device).manual_seed(seed)`` on the
            model's device; block ``b`` of the forward (reverse) runs from
            ``block_generator(device, seed + 1 (+ 2), b)``.
        z_dim: the latent size; None: ``model.z_dim``.
    Returns:
        :class:`BDMCResult`.
    Raises:
        ValueError: a bad argument (named); TypeError: a model off the protocol (before any
        work).
    """
    _check_count("n", n)
    _check_settings(steps, chains, leapfrog, batch_size, init, step_size, adapt, adapt_rate,
                    pilot, precision, inits=("prior", "encoder"))
    check_model(model)  # the methods exist, before any work
    z_dim = getattr(model, "z_dim", None) if z_dim is None else z_dim
    if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim < 1:
        raise ValueError(f"z_dim: expected an int >= 1 (or a model with an int z_dim attribute), "
                         f"got {z_dim!r}")
    device, dtype = _model_device_dtype(model)
    amp = autocast(device.type, precision)
    undo = _frozen(model)
    try:
        data = torch.Generator(device=device).manual_seed(seed)
        z_true = torch.randn((n, z_dim), generator=data, dtype=dtype, device=device)
        with torch.no_grad(), amp:
            out = model.decode_logits(z_true).to(dtype)
        x = sample_x(model, out, data)
    finally:
        undo()
    path = check_model(model, x)
    betas = sigmoid_schedule(steps)
    n_batches = -(-n // batch_size)
    bar = progress_bar(progress, total=2 * n_batches * steps, desc="BDMC", unit="temp")
    tick = None if bar is None else (lambda: bar.update(1))
    undo = _frozen(model)
    parts = []
    try:
        for b, xb in batches(x, batch_size):
            zb = z_true[b * batch_size:(b + 1) * batch_size]
            mu0, logvar0 = _start(model, xb, init, None, 0, None, amp, path)
            path_b = _Path(model, xb, mu0, logvar0, path, amp)
            scale = torch.exp(0.5 * logvar0)
            gen = block_generator(device, seed + 1, b)
            z = _chains(mu0, scale, chains, gen)
            pilots = _chains(mu0, scale, pilot, gen) if adapt == "pilot" else None
            log_w, acc_f, step, pilots = _anneal(
                path_b, z, betas, _first_step(adapt, step_size, chains, xb), scale, leapfrog,
                adapt, adapt_rate, gen, pilot=pilots, tick=tick)
            lower, _, lower_se = _se(log_w)
            step = _per_example(step)
            if adapt == "chain":
                step = step.expand(chains, -1).contiguous()
            z = zb.to(mu0.dtype).expand((chains,) + tuple(zb.shape)).contiguous()
            log_w, acc_r, _, _ = _anneal(path_b, z, betas.flip(0), step, scale, leapfrog, adapt,
                                         adapt_rate, block_generator(device, seed + 2, b),
                                         pilot=pilots, tick=tick)
            neg_upper, _, upper_se = _se(log_w)
            parts.append((lower.cpu(), (-neg_upper).cpu(), lower_se.cpu(), upper_se.cpu(),
                          acc_f.cpu(), acc_r.cpu()))
    finally:
        if bar is not None:
            bar.close()
        undo()
    lower, upper, lower_se, upper_se, acc_f, acc_r = (torch.cat(t) for t in zip(*parts))
    return BDMCResult(x=x.cpu(), z=z_true.cpu(), lower=lower, upper=upper, lower_se=lower_se,
                      upper_se=upper_se, acceptance_forward=acc_f, acceptance_reverse=acc_r,
                      steps=steps, chains=chains, leapfrog=leapfrog, init=init, adapt=adapt)
