"""One spec per public op, for the table-driven contract test (tests/ops/test_op_contract.py):
how to call it, how to make inputs of a dtype on a device, which inputs get gradients.

Adding an op to fastair adds one :class:`OpSpec` here; every contract check then runs on it.
:data:`EDGES` lists inputs at the edge of the float range (-inf log weights and logits, float32
overflow) with what every backend, the reference included, must give there.
"""
import math
from dataclasses import dataclass
from typing import Callable

import torch

import fastair


@dataclass(frozen=True)
class OpSpec:
    name: str
    call: Callable  # (*inputs) -> Tensor: the public op with its fixed non-tensor arguments
    make: Callable  # (dtype, device, generator) -> tuple of input tensors
    differentiable: tuple  # per input: does it get a gradient?

    def inputs(self, dtype=torch.float64, device="cpu", seed=0):
        return self.make(dtype, device, torch.Generator().manual_seed(seed))


def _randn(g, dtype, device, *shape, scale=1.0):
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)


def _bits(g, dtype, device, *shape):
    return (torch.rand(*shape, generator=g) < 0.4).to(dtype).to(device)


def _unit(g, dtype, device, *shape):
    """Data in [0, 1], not binary, with exact 0s and 1s among it (continuous Bernoulli)."""
    u = torch.rand(*shape, generator=g, dtype=torch.float64)
    return torch.where(u < 0.15, 0.0, torch.where(u > 0.85, 1.0, u)).to(dtype).to(device)


def _cb_logits(g, dtype, device, *shape):
    """Logits on both sides of the series' switch (|l| < 1 or 2) and exact zeros among them."""
    l = torch.randn(*shape, generator=g, dtype=torch.float64) * 2.5
    l[..., 0] = 0.0
    return l.to(dtype).to(device)


def _capped_rows(dtype, device, g):
    """Rows of norm 0.5 to 3 against caps ``H sigmoid(u)`` near 1: some capped, none tied."""
    v = torch.randn(6, 5, generator=g, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True) * torch.linspace(0.5, 3.0, 6, dtype=torch.float64)[:, None]
    u = torch.randn(6, generator=g, dtype=torch.float64) * 0.3 + 1.0
    return v.to(dtype).to(device), u.to(dtype).to(device)


SPECS = [
    OpSpec("bernoulli_log_prob", fastair.bernoulli_log_prob,
           lambda dt, dev, g: (_randn(g, dt, dev, 3, 4, 7, scale=3), _bits(g, dt, dev, 4, 7)),
           (True, False)),
    OpSpec("gaussian_log_prob", fastair.gaussian_log_prob,
           lambda dt, dev, g: (_randn(g, dt, dev, 3, 4, 5), _randn(g, dt, dev, 4, 5),
                               _randn(g, dt, dev, 4, 5, scale=0.5)),
           (True, True, True)),
    OpSpec("iwae_bound", lambda v: fastair.iwae_bound(v, dim=0),
           lambda dt, dev, g: (_randn(g, dt, dev, 6, 4, scale=5),), (True,)),
    OpSpec("iwae_bernoulli_gaussian", fastair.iwae_bernoulli_gaussian,
           lambda dt, dev, g: (_bits(g, dt, dev, 4, 7), _randn(g, dt, dev, 3, 4, 7, scale=3),
                               _randn(g, dt, dev, 3, 4, 5), _randn(g, dt, dev, 4, 5),
                               _randn(g, dt, dev, 4, 5, scale=0.5)),
           (False, True, True, True, True)),
    OpSpec("capped_weight_norm", lambda v, u: fastair.capped_weight_norm(v, u, 1.5),
           _capped_rows, (True, True)),
    OpSpec("linear_bernoulli_log_prob", fastair.linear_bernoulli_log_prob,
           lambda dt, dev, g: (_randn(g, dt, dev, 2, 3, 6), _randn(g, dt, dev, 7, 6),
                               _randn(g, dt, dev, 7), _bits(g, dt, dev, 3, 7)),
           (True, True, True, False)),
    OpSpec("continuous_bernoulli_log_prob", fastair.continuous_bernoulli_log_prob,
           lambda dt, dev, g: (_cb_logits(g, dt, dev, 3, 4, 7), _unit(g, dt, dev, 4, 7)),
           (True, False)),
    OpSpec("linear_continuous_bernoulli_log_prob", fastair.linear_continuous_bernoulli_log_prob,
           lambda dt, dev, g: (_randn(g, dt, dev, 2, 3, 6), _randn(g, dt, dev, 7, 6, scale=2),
                               _randn(g, dt, dev, 7), _unit(g, dt, dev, 3, 7)),
           (True, True, True, False)),
    OpSpec("linear_gaussian_log_prob", fastair.linear_gaussian_log_prob,
           lambda dt, dev, g: (_randn(g, dt, dev, 2, 3, 6), _randn(g, dt, dev, 7, 6),
                               _randn(g, dt, dev, 7), _randn(g, dt, dev, 3, 7),
                               _randn(g, dt, dev, 7, scale=0.5)),
           (True, True, True, False, True)),
]
BY_NAME = {spec.name: spec for spec in SPECS}


# -- edge cases: where the float range ends ------------------------------------------------------
@dataclass(frozen=True)
class EdgeCase:
    """Inputs at the edge of the float range and what every backend, the float64 reference
    included, must give there (README, docs/design.md §1.11).

    ``make(dtype, device)`` returns the inputs of the op ``op`` (a name of :data:`SPECS`);
    ``expect(out, grads, inputs)`` asserts on its value and on the gradients of ``out.sum()``
    for the op's differentiable inputs, in the order of the inputs.
    """
    name: str
    op: str
    make: Callable
    expect: Callable
    dtypes: tuple = (torch.float32, torch.float64)


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


def _finite(name, t):
    assert torch.isfinite(t).all(), f"{name}: not finite where it must be: {t}"


def _all_minus_inf_column(dtype, device):
    log_w = torch.randn(8, 3, generator=_seeded(1), dtype=torch.float64)
    log_w[:, 1] = -math.inf
    return (log_w.to(dtype).to(device),)


def _expect_all_minus_inf_column(out, grads, inputs):
    (grad,), (log_w,) = grads, inputs
    assert out[1].item() == -math.inf, f"bound of the all -inf column: {out[1].item()}"
    _finite("bound of the other columns", out[[0, 2]])
    _finite("gradient", grad)
    assert (grad[:, 1] == 0).all(), f"gradient of the all -inf column: {grad[:, 1]}"
    torch.testing.assert_close(grad[:, [0, 2]], torch.softmax(log_w.detach()[:, [0, 2]], 0))


def _scattered_minus_inf(dtype, device):
    log_w = torch.randn(8, 5, generator=_seeded(2), dtype=torch.float64)
    log_w[3, 1] = -math.inf
    log_w[:7, 4] = -math.inf  # one finite weight left in the column
    return (log_w.to(dtype).to(device),)


def _expect_scattered_minus_inf(out, grads, inputs):
    (grad,) = grads
    _finite("bound", out)
    _finite("gradient", grad)
    assert grad[3, 1] == 0 and (grad[:7, 4] == 0).all(), "a -inf log weight got a gradient"
    assert grad[7, 4].item() == 1.0, f"the one finite weight of a column: {grad[7, 4].item()}"


def _bound_inputs(seed, k=4, b=3, d=7, z=5):
    """``(x, logits, mu, logvar, eps)`` for the fused bound, float64, moderate values."""
    g = _seeded(seed)
    x = (torch.rand(b, d, generator=g) < 0.5).double()
    x[:, 0] = 1.0  # every example has a 1 at pixel 0
    logits = torch.randn(k, b, d, generator=g, dtype=torch.float64) * 2
    mu = torch.randn(b, z, generator=g, dtype=torch.float64) * 0.5
    logvar = torch.randn(b, z, generator=g, dtype=torch.float64) * 0.3
    eps = torch.randn(k, b, z, generator=g, dtype=torch.float64)
    return x, logits, mu, logvar, eps


def _as(dtype, device, *tensors):
    return tuple(t.to(dtype).to(device) for t in tensors)


def _minus_inf_logit_where_x_is_one(samples):
    def make(dtype, device):
        x, logits, mu, logvar, eps = _bound_inputs(seed=3)
        logits[samples, 0, 0] = -math.inf  # example 0: p(x_0 = 1 | z) = 0 in these samples
        z = mu + torch.exp(0.5 * logvar) * eps
        return _as(dtype, device, x, logits, z, mu, logvar)
    return make


def _expect_example_0_without_mass(out, grads, inputs):
    """Example 0 has no mass (every sample's log weight is -inf): bound -inf, gradient 0."""
    assert out[0].item() == -math.inf, f"bound of example 0: {out[0].item()} (expected -inf)"
    _finite("bound of examples 1, 2", out[1:])
    dlogits, dz, dmu, dlogvar = grads
    for name, g, ex0 in (("logits", dlogits, dlogits[:, 0]), ("z", dz, dz[:, 0]),
                         ("mu", dmu, dmu[0]), ("logvar", dlogvar, dlogvar[0])):
        _finite(f"gradient of {name}", g)
        assert (ex0 == 0).all(), f"gradient of {name} for example 0: {ex0} (expected 0)"


def _expect_some_samples_without_mass(out, grads, inputs):
    """Samples 0 and 2 of example 0 have log weight -inf: weight 0, gradient 0 there."""
    _finite("bound", out)
    dlogits, dz, dmu, dlogvar = grads
    for name, g in (("logits", dlogits), ("z", dz), ("mu", dmu), ("logvar", dlogvar)):
        _finite(f"gradient of {name}", g)
    assert (dlogits[[0, 2], 0] == 0).all() and (dz[[0, 2], 0] == 0).all()
    assert (dlogits[1, 0] != 0).any(), "a sample with mass got no gradient"


def _logvar_of(value):
    """Example 0 with ``logvar = value``, ``mu = 0`` (so ``z - mu`` is ``z`` exactly) and
    ``z = exp(value / 2) eps``: ``value = 100`` makes ``z^2`` overflow float32 (``log p(z)``, and
    the bound, is about -2e43 there: -inf is the float32 answer), ``-100`` ``exp(-logvar)``."""
    def make(dtype, device):
        x, logits, mu, logvar, eps = _bound_inputs(seed=4)
        mu[0], logvar[0] = 0.0, value
        z = (mu + torch.exp(0.5 * logvar) * eps).to(dtype)
        return _as(dtype, device, x, logits, z, mu, logvar)
    return make


def _expect_overflow_downwards(out, grads, inputs):
    if out.dtype == torch.float32:  # the true -2e43 is below the float32 range
        assert out[0].item() == -math.inf, f"bound of example 0: {out[0].item()} (expected " \
            "-inf: never +inf or NaN)"
        _expect_example_0_without_mass(out, grads, inputs)
    else:
        assert -1e46 < out[0].item() < -1e40, f"bound of example 0: {out[0].item()}"
        _finite("bound", out)
        for i, g in enumerate(grads):
            _finite(f"gradient {i}", g)


def _like_float64_reference(op, rtol=1e-4, atol=1e-3):
    """Finite, and equal to the float64 reference of ``op`` on the same inputs widened (where
    float32 overflows in ``exp(-logvar)``, float64 does not)."""
    def expect(out, grads, inputs):
        from fastair.backends import reference
        _finite("value", out)
        for i, g in enumerate(grads):
            _finite(f"gradient {i}", g)
        wide = [t.detach().double().cpu().requires_grad_(d)
                for t, d in zip(inputs, BY_NAME[op].differentiable)]
        ref = getattr(reference, op)(*wide)
        ref_grads = torch.autograd.grad(ref.sum(), [t for t in wide if t.requires_grad])
        torch.testing.assert_close(out.double().cpu(), ref.detach(), rtol=rtol, atol=atol)
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            torch.testing.assert_close(g.double().cpu(), r, rtol=rtol, atol=atol,
                                       msg=lambda m, i=i: f"gradient {i}: {m}")
    return expect


def _gaussian_logvar_pm100(dtype, device):
    """``logvar`` rows of 100, -100 and 0 with ``mu = 0``, ``z = exp(logvar / 2) eps``."""
    eps = torch.randn(4, 3, 6, generator=_seeded(5), dtype=torch.float64)
    logvar = torch.tensor([100.0, -100.0, 0.0], dtype=torch.float64)[:, None].expand(3, 6)
    mu = torch.zeros(3, 6, dtype=torch.float64)
    z = (torch.exp(0.5 * logvar) * eps).to(dtype)
    return _as(dtype, device, z, mu, logvar.contiguous())


EDGES = [  # name: what every backend gives there
    EdgeCase("iwae_bound-column-all-minus-inf", "iwae_bound",  # bound -inf, gradient 0
             _all_minus_inf_column, _expect_all_minus_inf_column),
    EdgeCase("iwae_bound-some-minus-inf", "iwae_bound",  # gradient 0 at the -inf entries
             _scattered_minus_inf, _expect_scattered_minus_inf),
    EdgeCase("fused-logit-minus-inf-where-x-is-1", "iwae_bernoulli_gaussian",  # -inf, gradient 0
             _minus_inf_logit_where_x_is_one([0, 1, 2, 3]), _expect_example_0_without_mass),
    EdgeCase("fused-logit-minus-inf-where-x-is-1-in-some-samples", "iwae_bernoulli_gaussian",
             _minus_inf_logit_where_x_is_one([0, 2]), _expect_some_samples_without_mass),
    EdgeCase("fused-logvar-100-overflows-downwards", "iwae_bernoulli_gaussian",  # float32: -inf
             _logvar_of(100.0), _expect_overflow_downwards),
    EdgeCase("fused-logvar-minus-100", "iwae_bernoulli_gaussian",  # finite, as in float64
             _logvar_of(-100.0), _like_float64_reference("iwae_bernoulli_gaussian")),
    EdgeCase("gaussian-logvar-plus-minus-100", "gaussian_log_prob",  # finite, as in float64
             _gaussian_logvar_pm100, _like_float64_reference("gaussian_log_prob")),
]
"""The edge cases every backend, the reference included, is held to
(tests/ops/test_op_contract.py)."""
