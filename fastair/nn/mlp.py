"""The encoder and decoder MLPs of the VAE family (the IWAE paper's architecture by default).

``GaussianMLPEncoder``: ``x [..., D] -> (mu, logvar)``, each ``[..., Z]``: a tanh trunk
``D-h1-...-hn`` and two linear heads. ``BernoulliMLPDecoder``: ``z [..., Z] -> logits [..., D]``:
``Z-h1-...-hn-D`` with tanh between the layers and none on the output; its ``log_prob(z, x)`` is
the likelihood seam: a decoder knows how it scores data (a Gaussian decoder would bring its own).
"""
import torch
from torch import nn

from fastair.functional import bernoulli_log_prob, linear_bernoulli_log_prob

__all__ = ["tanh_mlp", "GaussianMLPEncoder", "BernoulliMLPDecoder"]


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


class BernoulliMLPDecoder(nn.Module):
    """``z [..., z_dim] -> logits [..., x_dim]`` of a factorized Bernoulli ``p(x|z)``.

    The output layer is ``self.out``; its bias is usually set from the data mean
    (:meth:`fastair.models.VAE.init_decoder_bias`).
    """

    def __init__(self, z_dim, x_dim, hidden=(200, 200)):
        super().__init__()
        hidden = tuple(hidden)
        _check_sizes(x_dim=x_dim, z_dim=z_dim, hidden=hidden)
        self.trunk = tanh_mlp((z_dim,) + hidden)
        self.out = nn.Linear(hidden[-1] if hidden else z_dim, x_dim)

    def forward(self, z):
        return self.out(self.trunk(z))

    def log_prob(self, z, x):
        """``log p(x|z)`` ``[..., B]`` for ``z [..., B, Z]`` and data ``x`` broadcastable to
        ``[..., B, D]``: the output layer and the Bernoulli term fused
        (:func:`fastair.linear_bernoulli_log_prob`), so the ``[..., B, D]`` logits are never
        stored. Equal to ``bernoulli_log_prob(self(z), x)``, which is what runs under autocast
        (the reduced-precision matmul then the fused Bernoulli term on its logits)."""
        if torch.is_autocast_enabled(z.device.type):
            return bernoulli_log_prob(self(z), x)
        return linear_bernoulli_log_prob(self.trunk(z), self.out.weight, self.out.bias, x)
