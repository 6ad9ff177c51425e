"""A decoder's output layer fused with the Bernoulli log-likelihood, and its gradients.

For ``h [R, H]``, ``weight [D, H]``, ``bias [D]`` (or None) and ``x [N, D]`` (row r of h pairs
with row ``r % N`` of x), with the logits ``l = h @ weight^T + bias``, never stored:
``out[r] = sum_d x[r % N, d] l[r, d] - softplus(l[r, d])``. With ``dl = grad[r] (x - sigmoid(l))``:
``dh = dl @ weight``, ``dweight = dl^T @ h``, ``dbias = sum_r dl``. The kernels are those of
:mod:`.linear_head` with ``LIK`` = :data:`~.linear_head.BERNOULLI`.
"""
from .common import on_input_device
from .linear_head import BERNOULLI, head_bwd, head_fwd

# The launchers; fastair.backends.triton collects them.
__all__ = ["linear_bernoulli_log_prob_fwd", "linear_bernoulli_log_prob_bwd"]


@on_input_device
def linear_bernoulli_log_prob_fwd(h, weight, bias, x):
    """``h [R, H]``, ``weight [D, H]``, ``bias [D]`` or None, ``x [N, D]`` (all contiguous, one
    float dtype) -> ``out [R]``: ``sum_d x l - softplus(l)`` with ``l = h @ weight^T + bias``."""
    return head_fwd(BERNOULLI, h, weight, bias, x)


@on_input_device
def linear_bernoulli_log_prob_bwd(grad, h, weight, bias, x):
    """``grad [R]`` and the forward's inputs -> ``(dh [R, H], dweight [D, H], dbias [D])`` with
    ``dl = grad[r] (x - sigmoid(l))``: ``dh = dl @ weight``, ``dweight = dl^T @ h``,
    ``dbias = sum_r dl`` (returned also when bias is None)."""
    return head_bwd(BERNOULLI, grad, h, weight, bias, x)
