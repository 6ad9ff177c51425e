"""The settings of IW-SVI in one place: :class:`IWSVISettings`.

Its defaults are those of :func:`~fastair.evaluation.iwsvi_log_likelihood` (and of the fit of
``q``, :func:`~fastair.evaluation.fit_q.fit_gaussian_q`), of ``fastair evaluate``'s options and,
with the overrides that :mod:`fastair.reproduce.protocol` states, of ``fastair reproduce``.
"""
import dataclasses
from dataclasses import dataclass

__all__ = ["IWSVISettings"]


@dataclass(frozen=True)
class IWSVISettings:
    """Every setting of :func:`~fastair.evaluation.iwsvi_log_likelihood` that changes its
    numbers, with its default; the function's keyword arguments of the same names default to
    these values.

    ``IWSVISettings(k_eval=500)`` changes one setting; ``iwsvi_log_likelihood(model, x,
    **settings.kwargs())`` runs with them.
    """

    k_svi: int = 16
    """Samples of the IWAE bound ``L_k(x; q)`` that each example's ``q`` is fitted to
    (``k_svi = 1``: the ELBO)."""

    max_steps: int = 2000
    """The cap on Adam steps per example; each example stops earlier, once its bound stops
    improving (a trained encoder after about 100-300 steps, an untrained one or the prior start
    after several hundred). Hitting the cap is reported, never silent."""

    lr: float = 0.05
    """Adam's starting step size, each example's own, multiplied by ``decay`` at each check
    without a gain."""

    k_eval: int = 5000
    """Importance samples of the final estimate of ``ln p(x)`` from the fitted ``q`` (the cap
    with ``se_target``)."""

    chunk: int = 100
    """Samples drawn at once; memory follows it, not ``k_eval``: 100 samples of a 500-example
    batch keep each decoder activation at 100 x 500 x 200 floats (40 MB)."""

    batch_size: int = 500
    """Examples fitted together (a block of a distributed evaluation)."""

    elbo_samples: int = 1000
    """Samples per example of the amortized bound ``elbo`` (and ``elbo_enc``): its standard
    error per example is about ``sd(log w) / 30``, a few hundredths of a nat on MNIST, and a
    table's mean over examples far less."""

    seed: int = 0
    """Seed of the draws: the fit and the final estimate from ``seed`` (one generator per block
    of ``batch_size`` examples), the amortized bound from ``seed + 1``."""

    check_every: int = 25
    """Steps between the checks of the stopping rule, each on fixed draws
    (:mod:`fastair.evaluation.fit_q`)."""

    patience: int = 3
    """Checks in a row without a gain of ``tol`` that stop an example."""

    tol: float = 0.01
    """The gain (nats) of the bound that a check must see to count as an improvement."""

    decay: float = 0.5
    """Factor of the step size at each check without a gain (1 keeps it fixed)."""

    init: str = "encoder"
    """Where ``q`` starts (:data:`fastair.evaluation.INITS`): ``"encoder"`` (the encoder's
    ``mu, logvar``) or ``"prior"`` (``mu = 0, logvar = 0``)."""

    precision: str = "auto"
    """The decoder's matmuls under autocast (:data:`fastair.precision.PRECISIONS`) in the
    amortized bound and the final estimate: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``;
    ``q``, the draws and every density and sum stay float32. ``"auto"`` is bf16 where the device
    multiplies bf16 natively (CUDA with bf16, a CPU with AVX512-BF16 or AMX), else fp32. On the
    same draws bf16 moves an MNIST digit's estimate by about 0.02 nat (mean over digits, no
    sign), a sixth of the estimate's own standard error, with no bias beyond 0.002 nat
    (``bench/bench_iwsvi_accuracy.py``); ``"fp32"`` for numbers that must not depend on the
    machine."""

    fit_precision: str = "auto"
    """The precision of the fit of ``q`` alone: ``"auto"`` is ``precision`` where that is not
    fp32, else bf16 where the device multiplies bf16 matrices natively
    (:func:`fastair.precision.native_bf16`), else fp32. Any ``q`` gives an unbiased
    importance-sampling estimate; the fit's precision changes only how good ``q`` is, which the
    ESS, SE and k-hat of the final estimate report (``bench/bench_iwsvi_accuracy.py``: no larger
    error against a long reference run)."""

    se_target: float = None
    """None (every example draws ``k_eval``), or stop each example's final estimate once its
    standard error is at most this many nats (after 1000 draws at least); ``k_eval`` is then
    the cap and ``n_eval`` reports the draws used."""

    def kwargs(self):
        """The settings as keyword arguments of
        :func:`~fastair.evaluation.iwsvi_log_likelihood`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def fit_kwargs(self):
        """The settings of the fit of ``q`` as keyword arguments of
        :func:`~fastair.evaluation.fit_q.fit_gaussian_q` (``k`` is ``k_svi``)."""
        return dict(k=self.k_svi, lr=self.lr, max_steps=self.max_steps,
                    check_every=self.check_every, patience=self.patience, tol=self.tol,
                    decay=self.decay)

    def replace(self, **changes):
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)
