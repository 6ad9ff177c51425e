"""The likelihoods ``p(x|z)`` of the decoders, by name: one table from a name to the op that
scores the decoder's output and to the fused head that scores it from the last hidden layer.
The loss (:mod:`fastair.nn.loss`), the decoders (:mod:`fastair.nn.mlp`) and the evaluators
(:mod:`fastair.evaluation.protocol`) all score through these two functions."""
from fastair.functional import (
    bernoulli_log_prob,
    continuous_bernoulli_log_prob,
    gaussian_log_prob,
    linear_bernoulli_log_prob,
    linear_continuous_bernoulli_log_prob,
    linear_gaussian_log_prob,
)

__all__ = ["LIKELIHOODS", "log_likelihood", "head_log_likelihood"]

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")
"""``p(x|z)`` and what the decoder outputs: Bernoulli logits (binary data), continuous
Bernoulli logits (data in [0, 1]), the Gaussian mean (finite data; with a log-variance
``logvar_x``)."""


def log_likelihood(likelihood, out, x, logvar_x=None):
    """``log p(x|z) [...]`` from the decoder's output ``out [..., D]`` (the logits, or the
    Gaussian's mean) and data ``x`` broadcastable to it; ``logvar_x`` (broadcastable to
    ``[..., D]``) for ``"gaussian"`` only."""
    if likelihood == "bernoulli":
        return bernoulli_log_prob(out, x)
    if likelihood == "continuous_bernoulli":
        return continuous_bernoulli_log_prob(out, x)
    # N(x; mean, v) = N(mean; x, v): the means take gaussian_log_prob's sample slot, the data
    # (and logvar_x) broadcast against them; gradients reach all three
    return gaussian_log_prob(out, x, logvar_x)


def head_log_likelihood(likelihood, h, weight, bias, x, logvar_x=None):
    """``log_likelihood(likelihood, h @ weight.T + bias, x, logvar_x)`` by the fused head of the
    likelihood (:func:`fastair.linear_bernoulli_log_prob` and its twins): the ``[..., D]``
    output is never stored. ``h [..., H]``, ``weight [D, H]``, ``bias [D]`` or None."""
    if likelihood == "bernoulli":
        return linear_bernoulli_log_prob(h, weight, bias, x)
    if likelihood == "continuous_bernoulli":
        return linear_continuous_bernoulli_log_prob(h, weight, bias, x)
    return linear_gaussian_log_prob(h, weight, bias, x, logvar_x)
