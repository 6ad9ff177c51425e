"""What IW-SVI returns: per-example estimates and diagnostics, their summary and warnings."""
from dataclasses import dataclass

import torch

from fastair.evaluation.psis import KHAT_WARN

__all__ = ["IWSVIResult", "SE_WARN", "ESS_WARN", "KHAT_WARN"]

SE_WARN = 0.3
"""A standard error of ``ln p(x)`` above this many nats marks an estimate as unreliable. On a
trained MNIST VAE (50-d latent) a typical example has ESS ~100 of 5000 and SE ~0.1 nat, and the
table's mean over 500 examples is then known to ~0.01 nat; 0.3 nat flags the tail."""

ESS_WARN = 10.0
"""An effective sample size below this marks an estimate as unreliable: with so few weights
carrying the sum, the delta-method standard error itself underestimates the error."""


@dataclass
class IWSVIResult:
    """Per-example results, each ``[N]`` on the CPU.

    Attributes:
        log_px: the IW-SVI estimate of ``ln p(x)`` (float64).
        elbo: the amortized bound ``L_k`` of the encoder at the model's own k (float64); for a
            model trained with ``k > 1`` this is not the ELBO (see ``elbo_enc``).
        gap: ``log_px - elbo``, the inference gap (float64).
        steps: optimization steps each example's ``q`` took (int64).
        hit_cap: whether the example stopped at the step cap (bool).
        ess: effective sample size of the ``k_eval`` final importance weights (float64).
        se: delta-method standard error of ``log_px`` in nats (float64).
        elbo_enc: the ELBO ``L_1 = E_q[log w]`` of the encoder's ``q(z|x)``: the mean of the
            amortized bound's own log weights (the same ``elbo_samples`` draws as ``elbo``, no
            further ones; equal to ``elbo`` for ``k = 1``) (float64).
        elbo_fit: the ELBO of the fitted ``q``: the mean of the ``k_eval`` log weights whose
            log-mean-exp is ``log_px`` (float64).
        approx_gap: ``log_px - elbo_fit``, the approximation gap (Cremer, Li and Duvenaud 2018):
            what the fitted Gaussian ``q`` still misses of ``ln p(x)``. Never negative (up to
            rounding): the mean of the log weights is at most the log of their mean on the same
            draws.
        amort_gap: ``elbo_fit - elbo_enc``, the amortization gap: what the encoder loses against
            the ``q`` fitted to each example. ``approx_gap + amort_gap = log_px - elbo_enc``,
            the inference gap of the ELBO (docs/design.md §1.10). Cremer et al. fit ``q`` to the
            ELBO, which ``k_svi = 1`` does; with ``k_svi > 1`` (the default 16) the fitted ``q``
            maximizes the ``k_svi``-sample bound, is broader than the ELBO's optimum, and the
            split shifts toward ``approx_gap``: ``amort_gap`` is understated and can be negative
            where the encoder is good (on a 2-d toy with an untrained encoder, -0.06 to -0.09
            nat on average at ``k_svi = 16``, +0.05 to +0.16 at ``k_svi = 1``).
        khat: the PSIS k-hat of the final importance weights (Vehtari et al. 2024; the
            generalized Pareto shape of the largest ``M = min(n / 5, 3 sqrt(n))`` of the ``n``
            weights, streamed, :mod:`fastair.evaluation.psis`) (float64). Below 0.5 the weights
            have a finite variance and the SE can be trusted; above 0.7 (:data:`KHAT_WARN`) the
            estimate is unreliable whatever its SE says; NaN where no tail could be fitted.
        n_eval: the final samples each example used (int64): ``k_eval``, or fewer where
            ``se_target`` stopped it once its SE was reached.
        max_steps, k_eval: the cap on steps and on final samples.
        q_mu, q_logvar: ``[N, Z]`` the fitted Gaussians ``q`` (float32 at least, CPU), kept
            with ``keep_q=True`` only (else None): the starting point of AIS with
            ``init="fitted"`` (:func:`~fastair.evaluation.ais_log_likelihood`'s ``fitted``).
    """
    log_px: torch.Tensor
    elbo: torch.Tensor
    gap: torch.Tensor
    steps: torch.Tensor
    hit_cap: torch.Tensor
    ess: torch.Tensor
    se: torch.Tensor
    elbo_enc: torch.Tensor
    elbo_fit: torch.Tensor
    approx_gap: torch.Tensor
    amort_gap: torch.Tensor
    khat: torch.Tensor
    n_eval: torch.Tensor
    max_steps: int
    k_eval: int
    q_mu: torch.Tensor = None
    q_logvar: torch.Tensor = None

    CSV_COLUMNS = ("index", "log_px", "elbo", "gap", "steps", "hit_cap", "ess", "se", "elbo_enc",
                   "elbo_fit", "approx_gap", "amort_gap", "khat", "n_eval")
    """The columns of :meth:`per_example_csv`, in order (new columns are appended at the end)."""

    def unreliable(self):
        """``[N]`` bool: examples whose ``se > SE_WARN``, ``ess < ESS_WARN`` or ``khat >
        KHAT_WARN`` (or k-hat NaN: no tail could be fitted)."""
        return (self.se > SE_WARN) | (self.ess < ESS_WARN) | ~(self.khat <= KHAT_WARN)

    def flagged_by(self):
        """``{"se": [N] bool, "ess": ..., "khat": ...}``: which rule flags each example."""
        return {"se": self.se > SE_WARN, "ess": self.ess < ESS_WARN,
                "khat": ~(self.khat <= KHAT_WARN)}

    def summary(self):
        """Means of ``-log_px``, ``gap`` and ``-elbo`` (the paper's columns), in nats, with the
        diagnostics: median and smallest ESS, largest and mean standard error, the standard
        error of the mean ``ln p(x)`` from the samples, mean and largest steps, how many
        examples hit the step cap and how many are unreliable; and the split of the ELBO's
        inference gap: means of ``approx_gap``, ``amort_gap``, ``-elbo_fit`` and
        ``-elbo_enc``."""
        n = int(self.log_px.numel())
        return {"-ln p(x)": -self.log_px.mean().item(), "gap": self.gap.mean().item(),
                "-L(x)": -self.elbo.mean().item(), "n": n,
                "median_ess": self.ess.median().item(), "min_ess": self.ess.min().item(),
                "max_se": self.se.max().item(), "mean_se": self.se.mean().item(),
                "se_of_mean": (self.se.square().sum().sqrt() / n).item(),
                "mean_steps": self.steps.double().mean().item(),
                "max_steps_used": int(self.steps.max()), "max_steps": self.max_steps,
                "n_hit_cap": int(self.hit_cap.sum()), "n_unreliable": int(self.unreliable().sum()),
                "k_eval": self.k_eval,
                "approx_gap": self.approx_gap.mean().item(),
                "amort_gap": self.amort_gap.mean().item(),
                "-elbo_fit": -self.elbo_fit.mean().item(),
                "-elbo_enc": -self.elbo_enc.mean().item(),
                "median_khat": self.khat.nanmedian().item() if n else float("nan"),
                "max_khat": self.khat.nan_to_num(nan=float("inf")).max().item() if n else
                float("nan"),
                "n_khat_over": int((~(self.khat <= KHAT_WARN)).sum()),
                "n_se_over": int((self.se > SE_WARN).sum()),
                "n_ess_under": int((self.ess < ESS_WARN).sum()),
                "mean_n_eval": self.n_eval.double().mean().item() if n else float("nan")}

    def warnings(self):
        """Sentences for the user about examples that hit the cap or are unreliable ([] if none)."""
        out, n = [], self.log_px.numel()
        capped = int(self.hit_cap.sum())
        if capped:
            out.append(f"{capped} of {n} examples hit the step cap ({self.max_steps} steps) before "
                       "their bound stopped improving; raise max_steps (--max-steps) or lr")
        bad = self.unreliable()
        if bad.any():
            worst = int(self.se.argmax())
            out.append(f"{int(bad.sum())} of {n} ln p(x) estimates are unreliable (standard error "
                       f"> {SE_WARN} nat, ESS < {ESS_WARN:g} or k-hat > {KHAT_WARN}: "
                       f"{int((~(self.khat <= KHAT_WARN)).sum())} by k-hat); the worst, example "
                       f"{worst}, has "
                       f"SE {self.se[worst].item():.3f} nat and ESS {self.ess[worst].item():.1f} "
                       f"of {self.k_eval}: raise k_eval or let q converge further")
        return out

    def table(self, rows=5):
        """A text table of the first ``rows`` examples and the mean over all: ``ln p(x)``, its
        SE, ESS, k-hat, the two gaps and whether the estimate is unreliable."""
        cols = ("log_px", "se", "ess", "khat", "approx_gap", "amort_gap")
        head = f"{'example':>8} " + " ".join(f"{c:>10}" for c in cols) + "  unreliable"
        bad = self.unreliable()
        lines = [head, "-" * len(head)]
        for i in range(min(rows, self.log_px.numel())):
            lines.append(f"{i:>8} " + " ".join(f"{getattr(self, c)[i].item():>10.3f}"
                                               for c in cols) + f"  {bool(bad[i])}")
        means = [getattr(self, c).double().nanmean().item() for c in cols]
        lines.append(f"{'mean':>8} " + " ".join(f"{m:>10.3f}" for m in means)
                     + f"  {int(bad.sum())} of {bad.numel()}")
        return "\n".join(lines)

    def per_example_csv(self):
        """The per-example values as CSV text, one row per example, columns
        :attr:`CSV_COLUMNS`: ``index,log_px,elbo,gap,steps,hit_cap,ess,se`` (the first eight,
        in this order since fastair 0.1), then ``elbo_enc,elbo_fit,approx_gap,amort_gap,khat,
        n_eval``."""
        rows = [",".join(self.CSV_COLUMNS)] + [
            f"{i},{a:.6f},{b:.6f},{c:.6f},{s},{int(h)},{e:.2f},{se:.6f},"
            f"{ee:.6f},{ef:.6f},{ag:.6f},{mg:.6f},{kh:.4f},{ne}"
            for i, (a, b, c, s, h, e, se, ee, ef, ag, mg, kh, ne) in enumerate(zip(
                self.log_px.tolist(), self.elbo.tolist(), self.gap.tolist(), self.steps.tolist(),
                self.hit_cap.tolist(), self.ess.tolist(), self.se.tolist(),
                self.elbo_enc.tolist(), self.elbo_fit.tolist(), self.approx_gap.tolist(),
                self.amort_gap.tolist(), self.khat.tolist(), self.n_eval.tolist()))]
        return "\n".join(rows) + "\n"
