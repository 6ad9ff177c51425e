"""The VAE family with amortized inference regularization (AIR): VAE, DVAE, WNI-VAE and their
importance-weighted versions (IWAE, DIWAE, WNI-IWAE), one class with three knobs.

- ``k``: importance samples of the bound ``L_k`` (``k = 1``: the ELBO, a VAE; ``k > 1``: IWAE).
- ``sigma``, ``alpha``: denoising (DVAE, AIR eq. 13/16). The training objective is
  ``alpha * L_k(x; q(.|x + eps)) + (1 - alpha) * L_k(x; q(.|x))``, ``eps ~ N(0, sigma^2 I)`` on the
  encoder input only; the decoder always scores the clean ``x``.
- ``H``: capped weight norm (WNI, AIR eq. 17-18) on every Linear of the encoder.

``likelihood`` picks ``p(x|z)``: ``"bernoulli"`` (default; binary data), ``"continuous_bernoulli"``
(data in [0, 1], grey levels) or ``"gaussian"`` (a learned scale); the decoder is the matching
class of :data:`fastair.nn.DECODERS`.

The training objective comes from an estimator of :mod:`fastair.nn.estimators` (``iwae``,
``stl`` or ``dreg``: :func:`fastair.nn.iwae_loss` through the decoder's trunk and its output
layer fused with the likelihood's term, or, where :attr:`VAE.fused_head` says not, one fused
:func:`fastair.iwae_bernoulli_gaussian` over the logits for the Bernoulli likelihood and
:func:`fastair.nn.iwae_loss` with ``likelihood=`` for the others); the decoder scores
data through its own ``log_prob(z, x)`` (:mod:`fastair.nn`), and :meth:`VAE.log_weights` is the
one place the model forms log importance weights.
"""
import math

import torch
from torch import nn

from fastair.functional import gaussian_log_prob
from fastair.nn import DECODERS, LIKELIHOODS, GaussianMLPEncoder, capped_weight_norm_, iwae_loss
from fastair.nn.estimators import get_estimator

__all__ = ["VAE", "H_LAYERS"]

H_LAYERS = ("all", "hidden")
"""Where a VAE's ``H`` caps the encoder: every Linear, or the tanh trunk only."""

_BIAS_EPS = 1e-3  # the data mean is clamped to [eps, 1 - eps] before the logit


def _cb_mean(lam):
    """The continuous Bernoulli's mean at logits ``lam`` (float64): ``1 / (1 - exp(-l)) - 1/l``,
    ``1/2 + l/12`` near 0."""
    small = lam.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(lam), lam)
    return torch.where(small, 0.5 + lam / 12, -1 / torch.expm1(-safe) - 1 / safe)


def _cb_logit_of_mean(m, iters=200):
    """The logits whose continuous Bernoulli mean is ``m`` in (0, 1) (float64, by bisection:
    the mean rises from 0 to 1 with the logit, ``|l| < 1 / min(m, 1 - m) + 2``)."""
    hi = 1 / torch.minimum(m, 1 - m) + 2
    lo = -hi
    for _ in range(iters):
        mid = (lo + hi) / 2
        above = _cb_mean(mid) > m
        lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
    return (lo + hi) / 2


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected an int >= 1 (importance samples), got {k!r}")
    return k


def _check_float(name, value, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite float, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        sign = ">" if low_open else ">="
        raise ValueError(f"{name}: expected {sign} {low}" +
                         (f" and <= {high}" if high is not None else "") + f", got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name}: expected a value in [{low}, {high}], got {value!r}")
    return float(value)


class VAE(nn.Module):
    """Bernoulli-decoder (or continuous Bernoulli, Gaussian), Gaussian-encoder VAE/IWAE with
    optional denoising and WNI encoders.

    Encoder ``D-h1-h2`` (tanh) with linear heads for ``mu`` and ``logvar`` ``[B, Z]``; decoder
    ``Z-h2-h1... -D`` (tanh) giving Bernoulli logits (the likelihood's parameter: continuous
    Bernoulli logits, or the Gaussian mean); prior ``N(0, I)``.

    Args:
        x_dim: data size ``D`` (784 for 28x28 images).
        z_dim: latent size ``Z``.
        hidden: hidden sizes of the encoder; the decoder uses them reversed.
        k: importance samples of the training bound (1 = VAE, > 1 = IWAE).
        sigma: std of the Gaussian noise on the encoder input (0 = no denoising).
        alpha: weight of the noisy term in the denoising objective, in [0, 1].
        H: None, or the row-norm cap (> 0) of capped weight norm on the encoder's Linears.
        H_layers: which encoder Linears ``H`` caps: ``"all"`` (default; the trunk and the
            ``mu``/``logvar`` heads) or ``"hidden"`` (the trunk only, the heads free).
        estimator: the gradient estimator of the training objective, a name of
            :data:`fastair.nn.estimators.ESTIMATORS`: ``"iwae"`` (default), ``"stl"``,
            ``"dreg"``.
        likelihood: ``p(x|z)``, one of :data:`fastair.nn.LIKELIHOODS`: ``"bernoulli"``
            (default; binary data), ``"continuous_bernoulli"`` (data in [0, 1] such as grey
            levels, :class:`fastair.nn.ContinuousBernoulliMLPDecoder`) or ``"gaussian"``
            (:class:`fastair.nn.GaussianMLPDecoder`, whose learned ``log_scale``, one for all
            pixels, is a parameter of the model).

    Attributes:
        encoder: :class:`fastair.nn.GaussianMLPEncoder`.
        decoder: :class:`fastair.nn.BernoulliMLPDecoder` (the likelihood's class of
            :data:`fastair.nn.DECODERS`).
        hparams: the constructor arguments as a dict (enough to rebuild the model).
        fused_head: ``"auto"`` (default), True or False. True: the training bound goes
            through the decoder's trunk and its output layer fused with the likelihood's term
            (:func:`fastair.nn.iwae_loss` with ``head``; :func:`fastair.linear_bernoulli_log_prob`
            and its continuous Bernoulli and Gaussian twins): the ``[k, B, D]`` logits (means)
            are never stored. False: the decoder's output whole, then the bound over it (memory
            linear in ``k * D``; one fused op for the Bernoulli likelihood). ``"auto"``: the head
            for k > 1 or with ``k_chunk``, the logits at k = 1, where they are the size of the
            batch and the head's extra call costs about 1 ms a step (a k = 1 step on the
            784-200-200-50 nets: 3.9 ms through the logits, 4.8 through the head; at k = 64 the
            two are within 2%, the head 7% faster for a DVAE; Intel Xeon, one thread). The same
            bound and gradients either way, to rounding, for every likelihood.
        k_chunk: None (default) or ``c``: the training bound's samples go through the decoder
            ``c`` at a time, each chunk remade in the backward, so that memory stays flat in k
            (``fastair train --k-chunk``); the same draws, bound and gradients.
    """

    def __init__(self, x_dim=784, z_dim=50, hidden=(200, 200), k=1, sigma=0.0, alpha=1.0, H=None,
                 estimator="iwae", H_layers="all", likelihood="bernoulli"):
        super().__init__()
        if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood: expected one of {LIKELIHOODS}, got {likelihood!r}")
        self.likelihood = likelihood
        self.estimator = estimator
        self._estimate = get_estimator(estimator)
        self.k = _check_k(k)
        self.sigma = _check_float("sigma", sigma, low=0.0)
        self.alpha = _check_float("alpha", alpha, low=0.0, high=1.0)
        if H is not None:
            H = _check_float("H", H, low=0.0, low_open=True)
        self.H = H
        if H_layers not in H_LAYERS:
            raise ValueError(f"H_layers: expected one of {H_LAYERS}, got {H_layers!r}")
        self.H_layers = H_layers
        hidden = tuple(hidden)
        if H_layers == "hidden" and not hidden:
            raise ValueError("H_layers='hidden' needs at least one hidden layer")
        self.x_dim, self.z_dim, self.hidden = x_dim, z_dim, hidden
        self.encoder = GaussianMLPEncoder(x_dim, z_dim, hidden)
        self.decoder = DECODERS[likelihood](z_dim, x_dim, hidden[::-1])
        if H is not None:
            capped_weight_norm_(self.encoder if H_layers == "all" else self.encoder.trunk, H)
        self.k_chunk = None
        self.fused_head = "auto"

    @property
    def hparams(self):
        """The constructor's arguments (``estimator``, ``H_layers`` and ``likelihood`` only where
        they are not the default, so that runs saved before they existed compare equal)."""
        out = dict(x_dim=self.x_dim, z_dim=self.z_dim, hidden=list(self.hidden), k=self.k,
                   sigma=self.sigma, alpha=self.alpha, H=self.H)
        if self.estimator != "iwae":
            out["estimator"] = self.estimator
        if self.H_layers != "all":
            out["H_layers"] = self.H_layers
        if self.likelihood != "bernoulli":
            out["likelihood"] = self.likelihood
        return out

    def extra_repr(self):
        return ", ".join(f"{n}={v}" for n, v in self.hparams.items()
                         if n not in ("x_dim", "z_dim", "hidden"))

    # -- checks -------------------------------------------------------------------------------
    def _check_x(self, x, name="x"):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor [B, {self.x_dim}], "
                            f"got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.x_dim:
            raise ValueError(f"{name}: expected shape [B, x_dim] = [B, {self.x_dim}], "
                             f"got [{', '.join(map(str, x.shape))}]")

    def _k(self, k):
        return self.k if k is None else _check_k(k)

    # -- the pieces ---------------------------------------------------------------------------
    def _through_head(self, k):
        if self.fused_head == "auto":
            return k > 1 or self.k_chunk is not None
        if not isinstance(self.fused_head, bool):
            raise ValueError(f"fused_head: expected 'auto', True or False, got "
                             f"{self.fused_head!r}")
        return self.fused_head

    def encode(self, x):
        """``x [B, D] -> (mu, logvar)``, each ``[B, Z]`` (no noise added)."""
        self._check_x(x)
        return self.encoder(x)

    def decode_logits(self, z):
        """``z [..., Z] -> logits [..., D]`` of ``p(x|z)`` (the decoder's output: the continuous
        Bernoulli's logits, the Gaussian's mean, for those likelihoods)."""
        return self.decoder(z)

    def pixel_means(self, z):
        """``z [..., Z] -> E[x | z] [..., D]``, the mean of ``p(x|z)`` per pixel (what a picture
        of a sample shows): ``sigmoid(l)`` (Bernoulli); ``1 / (1 - exp(-l)) - 1 / l`` at the
        logits ``l`` (continuous Bernoulli: not ``sigmoid(l)``, whose values it pulls towards
        1/2); the decoder's mean (Gaussian)."""
        out = self.decode_logits(z)
        if self.likelihood == "bernoulli":
            return torch.sigmoid(out)
        if self.likelihood == "continuous_bernoulli":
            return _cb_mean(out.double()).to(out.dtype)
        return out

    @torch.no_grad()
    def init_decoder_bias(self, train_x, eps=_BIAS_EPS):
        """Set the decoder output bias from the training data's mean ``m = mean(train_x, 0)``:
        ``logit(clamp(m, eps, 1 - eps))`` (Bernoulli); the logits whose continuous Bernoulli
        mean is ``clamp(m, eps, 1 - eps)`` (continuous Bernoulli: not the plain logit, the
        distribution's mean is not ``sigmoid(l)``); ``m`` itself (Gaussian).

        ``train_x``: ``[N, D]`` training data (any device). Returns the bias ``[D]``.
        """
        self._check_x(train_x, "train_x")
        mean = train_x.double().mean(0)
        if self.likelihood == "bernoulli":
            value = torch.logit(mean.clamp(eps, 1 - eps))
        elif self.likelihood == "continuous_bernoulli":
            value = _cb_logit_of_mean(mean.clamp(eps, 1 - eps))
        else:
            value = mean
        bias = self.decoder.out.bias
        bias.copy_(value.to(bias))
        return bias

    def _randn(self, shape, like, generator):
        return torch.randn(shape, device=like.device, dtype=like.dtype, generator=generator)

    def bound_from(self, x_enc, x, eps):
        """``L_k(x; q(.|x_enc))`` per example ``[B]``, for given standard normal ``eps [k, B, Z]``.

        ``z = mu + exp(logvar / 2) * eps`` with ``(mu, logvar) = encode(x_enc)``; the decoder
        scores ``x [B, D]``. The building block of :meth:`bound` (k = ``eps.shape[0]``).
        """
        self._check_x(x)
        mu, logvar = self.encode(x_enc)
        bernoulli = self.likelihood == "bernoulli"
        logvar_x = self.decoder.logvar_x if self.likelihood == "gaussian" else None
        likelihood = dict(likelihood=self.likelihood, logvar_x=logvar_x)
        if not self._through_head(eps.shape[0]):
            if bernoulli:  # the logits whole, then the one-pass fused bound
                z = mu + torch.exp(0.5 * logvar) * eps
                return self._estimate(x, self.decode_logits(z), z, mu, logvar)
            return -iwae_loss(x, mu, logvar, self.decoder, k=eps.shape[0],  # the output whole
                              estimator=self.estimator, reduction="none", check_input=False,
                              k_chunk=self.k_chunk, eps=eps, **likelihood)
        return -iwae_loss(x, mu, logvar, self.decoder.trunk, k=eps.shape[0],
                          estimator=self.estimator, reduction="none", check_input=False,
                          head=self.decoder.out, k_chunk=self.k_chunk, eps=eps, **likelihood)

    def log_weights(self, x, k=None, *, generator=None, mu=None, logvar=None, z=None):
        """Log importance weights ``log p(x|z) + log p(z) - log q(z)`` ``[k, B]``, in ``mu``'s
        dtype; the decoder term through ``decoder.log_prob`` (the fused head: no ``[k, B, D]``
        logits are stored).

        By default ``q`` is the clean encoder's ``q(z|x)`` and ``z`` are ``k`` fresh draws from
        it; ``mu, logvar`` ``[B, Z]`` give another Gaussian ``q`` (IW-SVI's fitted one) and
        ``z`` ``[n, B, Z]`` given draws. ``iwae_bound(log_weights(x, k))`` is the clean bound
        ``L_k(x)`` (same draws as :meth:`clean_bound` under the same seed).
        """
        if mu is None:
            if logvar is not None:
                raise ValueError("log_weights: give mu and logvar together")
            mu, logvar = self.encode(x)
        if z is None:
            eps = self._randn((self._k(k),) + tuple(mu.shape), mu, generator)
            z = mu + torch.exp(0.5 * logvar) * eps
        return (self.decoder.log_prob(z, x) + gaussian_log_prob(z)
                - gaussian_log_prob(z, mu, logvar)).to(mu.dtype)

    def clean_bound(self, x, k=None, *, generator=None):
        """``L_k(x)`` per example ``[B]`` with the clean encoder (the evaluation bound)."""
        self._check_x(x)
        k = self._k(k)
        eps = self._randn((k, x.shape[0], self.z_dim), x, generator)
        return self.bound_from(x, x, eps)

    def objective(self, x, k=None, *, generator=None, draws=None):
        """The training objective per example ``[B]``.

        ``alpha * L_k(x; q(.|x + sigma * n)) + (1 - alpha) * L_k(x; q(.|x))``,
        ``n ~ N(0, I) [B, D]``; a term of weight 0 is skipped, and with ``sigma = 0`` it is the
        clean bound. Random draws (:meth:`objective_draws`), in order: ``n`` (only if the noisy
        term is used), then ``eps [k, T*B, Z]`` for the ``T`` terms used (the noisy term's
        block first); both terms run as one batch of ``T*B``. ``draws`` gives them instead
        (``(n or None, eps)``, e.g. a rank's rows of a global batch's, :meth:`draw_rows`).
        """
        self._check_x(x)
        k = self._k(k)
        n, eps = draws if draws is not None else self.objective_draws(x, k, generator)
        b = x.shape[0]
        if n is None:
            if self.sigma > 0 and self.alpha > 0:
                raise ValueError("objective: the noisy term needs the input noise n")
            return self.bound_from(x, x, eps)
        x_enc = x + self.sigma * n
        if self.alpha >= 1:
            return self.bound_from(x_enc, x, eps)
        both = self.bound_from(torch.cat([x_enc, x]), torch.cat([x, x]), eps)
        return self.alpha * both[:b] + (1 - self.alpha) * both[b:]

    def objective_draws(self, x, k=None, generator=None):
        """``(n [B, D] or None, eps [k, T*B, Z])``: the random draws of :meth:`objective` on
        ``x [B, D]``, in its order."""
        k, b = self._k(k), x.shape[0]
        if not (self.sigma > 0 and self.alpha > 0):
            return None, self._randn((k, b, self.z_dim), x, generator)
        n = self._randn(x.shape, x, generator)
        terms = 1 if self.alpha >= 1 else 2
        return n, self._randn((k, terms * b, self.z_dim), x, generator)

    @staticmethod
    def draw_rows(draws, b, lo, hi):
        """Rows ``lo:hi`` of a ``b``-example batch's :meth:`objective_draws` ``draws``: what
        the objective of ``x[lo:hi]`` uses of them (every term's block)."""
        n, eps = draws
        blocks = eps.shape[1] // b
        eps = torch.cat([eps[:, t * b + lo:t * b + hi] for t in range(blocks)], 1)
        return (None if n is None else n[lo:hi]), eps

    def bound(self, x, k=None, *, generator=None, draws=None):
        """Per-example bound ``[B]``: :meth:`objective` in train mode, :meth:`clean_bound` in eval
        mode. ``k`` defaults to ``self.k``; ``generator`` (optional) drives the random draws;
        ``draws`` (train mode) gives them (:meth:`objective`)."""
        if self.training:
            return self.objective(x, k, generator=generator, draws=draws)
        return self.clean_bound(x, k, generator=generator)

    forward = bound
