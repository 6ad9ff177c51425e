"""A decoder's output layer fused with the continuous Bernoulli log-density, and its gradients.

For ``h [R, H]``, ``weight [D, H]``, ``bias [D]`` (or None) and ``x [N, D]`` (row r of h pairs
with row ``r % N`` of x), with the logits ``l = h @ weight^T + bias``, never stored:
``out[r] = sum_d (x - 1/2) l - log(sinh(l/2) / (l/2))`` (the series and closed form of
:mod:`.continuous_bernoulli_log_prob`), ``dl = grad[r] (x - mean(l))``; ``dh``, ``dweight`` and
``dbias`` as for the Bernoulli head. The kernels are those of :mod:`.linear_head` with ``LIK`` =
:data:`~.linear_head.CONTINUOUS_BERNOULLI`.
"""
from .common import on_input_device
from .linear_head import CONTINUOUS_BERNOULLI, head_bwd, head_fwd

# The launchers; fastair.backends.triton collects them.
__all__ = ["linear_continuous_bernoulli_log_prob_fwd", "linear_continuous_bernoulli_log_prob_bwd"]


@on_input_device
def linear_continuous_bernoulli_log_prob_fwd(h, weight, bias, x):
    """``h [R, H]``, ``weight [D, H]``, ``bias [D]`` or None, ``x [N, D]`` (all contiguous, one
    float dtype) -> ``out [R]``: ``sum_d (x - 1/2) l - log(sinh(l/2) / (l/2))`` with
    ``l = h @ weight^T + bias``."""
    return head_fwd(CONTINUOUS_BERNOULLI, h, weight, bias, x)


@on_input_device
def linear_continuous_bernoulli_log_prob_bwd(grad, h, weight, bias, x):
    """``grad [R]`` and the forward's inputs -> ``(dh [R, H], dweight [D, H], dbias [D])`` with
    ``dl = grad[r] (x - mean(l))`` (dbias returned also when bias is None)."""
    return head_bwd(CONTINUOUS_BERNOULLI, grad, h, weight, bias, x)
