"""The encoder and decoder MLPs of the VAE family (the IWAE paper's architecture by default).

``GaussianMLPEncoder``: ``x [..., D] -> (mu, logvar)``, each ``[..., Z]``: a tanh trunk
``D-h1-...-hn`` and two linear heads. The decoders map ``z [..., Z] -> [..., D]`` through
``Z-h1-...-hn-D`` with tanh between the layers and none on the output (``trunk``, then the
``nn.Linear`` ``out``), and each scores data with its own ``log_prob(z, x)``, the likelihood
seam (:data:`DECODERS`, by likelihood name):

- ``BernoulliMLPDecoder``: Bernoulli logits, binary data;
- ``ContinuousBernoulliMLPDecoder``: continuous Bernoulli logits, data in [0, 1] (grey levels);
- ``GaussianMLPDecoder``: the Gaussian mean, with a learned log-scale ``log_scale`` (one, or
  one per pixel), real-valued data.

Each ``log_prob`` runs the output layer fused with its likelihood's term (the fused heads of
docs/design.md §1.7), so the ``[..., B, D]`` output is never stored.
"""
import torch
from torch import nn

from fastair.nn.likelihoods import head_log_likelihood, log_likelihood

__all__ = ["tanh_mlp", "GaussianMLPEncoder", "BernoulliMLPDecoder",
           "ContinuousBernoulliMLPDecoder", "GaussianMLPDecoder", "DECODERS", "GAUSSIAN_SCALES"]

GAUSSIAN_SCALES = ("scalar", "pixel")
"""The Gaussian likelihood's learned scale: one for all pixels, or one per pixel."""


def _check_sizes(**sizes):
    for name, value in sizes.items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected positive int(s), got {value!r}")


def tanh_mlp(sizes):
    """``nn.Sequential`` of ``Linear(sizes[i], sizes[i+1])`` each followed by ``Tanh``."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.Tanh()]
    return nn.Sequential(*layers)


class GaussianMLPEncoder(nn.Module):
    """``x [..., x_dim] -> (mu, logvar)``, each ``[..., z_dim]``, of a diagonal Gaussian ``q(z|x)``.

    Args:
        x_dim: the data size.
        z_dim: the latent size.
        hidden: sizes of the tanh trunk (may be empty: then the heads read ``x`` directly).
    """

    def __init__(self, x_dim, z_dim, hidden=(200, 200)):
        super().__init__()
        hidden = tuple(hidden)
        _check_sizes(x_dim=x_dim, z_dim=z_dim, hidden=hidden)
        self.trunk = tanh_mlp((x_dim,) + hidden)
        width = hidden[-1] if hidden else x_dim
        self.mu = nn.Linear(width, z_dim)
        self.logvar = nn.Linear(width, z_dim)

    def forward(self, x):
        h = self.trunk(x)
        return self.mu(h), self.logvar(h)


class _MLPDecoder(nn.Module):
    """``z [..., z_dim] -> [..., x_dim]``: the tanh ``trunk`` then the ``nn.Linear`` ``out``."""

    def __init__(self, z_dim, x_dim, hidden=(200, 200)):
        super().__init__()
        hidden = tuple(hidden)
        _check_sizes(x_dim=x_dim, z_dim=z_dim, hidden=hidden)
        self.trunk = tanh_mlp((z_dim,) + hidden)
        self.out = nn.Linear(hidden[-1] if hidden else z_dim, x_dim)

    likelihood = None
    """The likelihood's name (:data:`fastair.nn.likelihoods.LIKELIHOODS`), set by each class."""
    logvar_x = None
    """The Gaussian's log-variance (a tensor there); None for the other likelihoods."""

    def forward(self, z):
        return self.out(self.trunk(z))

    def log_prob(self, z, x):
        """``log p(x|z)`` ``[..., B]`` for ``z [..., B, Z]`` and data ``x`` broadcastable to
        ``[..., B, D]``: the output layer and the likelihood's term fused
        (:func:`fastair.nn.likelihoods.head_log_likelihood`: e.g.
        :func:`fastair.linear_bernoulli_log_prob`), so the ``[..., B, D]`` output is never
        stored. Equal to ``log_likelihood(self.likelihood, self(z), x, self.logvar_x)``, which
        is what runs under autocast (the reduced-precision layer, then the fused likelihood op
        on its output, float32 result)."""
        if torch.is_autocast_enabled(z.device.type):
            return log_likelihood(self.likelihood, self(z), x, self.logvar_x)
        return head_log_likelihood(self.likelihood, self.trunk(z), self.out.weight,
                                   self.out.bias, x, self.logvar_x)


class BernoulliMLPDecoder(_MLPDecoder):
    """``z [..., z_dim] -> logits [..., x_dim]`` of a factorized Bernoulli ``p(x|z)``.

    The output layer is ``self.out``; its bias is usually set from the data mean
    (:meth:`fastair.models.VAE.init_decoder_bias`).
    """

    likelihood = "bernoulli"


class ContinuousBernoulliMLPDecoder(_MLPDecoder):
    """``z [..., z_dim] -> logits [..., x_dim]`` of a factorized continuous Bernoulli ``p(x|z)``
    (Loaiza-Ganem and Cunningham, 2019): a normalized density for data in [0, 1] such as grey
    levels (:func:`fastair.continuous_bernoulli_log_prob`, docs/design.md §1.13)."""

    likelihood = "continuous_bernoulli"


class GaussianMLPDecoder(_MLPDecoder):
    """``z [..., z_dim] -> mean [..., x_dim]`` of a diagonal Gaussian ``p(x|z) = N(mean,
    exp(log_scale)^2)`` with a learned log standard deviation ``log_scale`` (a parameter of the
    decoder, so the model's optimizer trains it): one for every pixel (``scale="scalar"``, shape
    ``[]``) or one per pixel (``"pixel"``, ``[x_dim]``), starting at ``init_log_scale``.

    A per-pixel scale lets the likelihood grow without bound on pixels that are constant in
    the data (MNIST's border: the scale shrinks towards 0); the scalar one does not.
    """

    likelihood = "gaussian"

    def __init__(self, z_dim, x_dim, hidden=(200, 200), scale="scalar", init_log_scale=0.0):
        super().__init__(z_dim, x_dim, hidden)
        if scale not in GAUSSIAN_SCALES:
            raise ValueError(f"scale: expected one of {GAUSSIAN_SCALES}, got {scale!r}")
        self.scale = scale
        shape = () if scale == "scalar" else (x_dim,)
        self.log_scale = nn.Parameter(torch.full(shape, float(init_log_scale)))

    @property
    def logvar_x(self):
        """``2 * log_scale``: the log-variance of ``p(x|z)``, ``[]`` or ``[x_dim]``."""
        return 2 * self.log_scale

    def extra_repr(self):
        return f"scale={self.scale!r}"


DECODERS = {"bernoulli": BernoulliMLPDecoder,
            "continuous_bernoulli": ContinuousBernoulliMLPDecoder,
            "gaussian": GaussianMLPDecoder}
"""Likelihood name -> decoder class (what :class:`fastair.models.VAE` builds)."""
