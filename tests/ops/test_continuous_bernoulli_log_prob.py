"""continuous_bernoulli_log_prob on every backend: its series against mpmath, its values and
gradients against mpmath at 50 digits, float32 against the float64 reference, agreement with
torch.distributions, gradcheck at and near l = 0, extreme logits, argument errors, and
float16/bfloat16 logits (docs/design.md §1.13)."""
import math

import mpmath
import pytest
import torch
from compare import assert_matches_reference

import fastair
from fastair.backends import reference

ALL_BACKENDS = ("reference", "native", "triton")
MAGNITUDES = (1e-8, 1e-4, 0.01, 0.1, 1.0, 5.0, 20.0, 80.0)
LOGITS = (0.0,) + tuple(s * m for m in MAGNITUDES for s in (1.0, -1.0))
# either side of the switch points (1 in float64, 2 in float32) and of the float32 one in float64
NEAR_SWITCH = (0.999999, 1.0000001, 1.5, 1.9999, 2.0, 2.0001, 3.0)
XS = (0.0, 0.3, 1.0)
ULPS = 4


def _mp(v):
    return mpmath.mpf(float(v))


def _exact(l, x):
    """``(log p(x|l), d/dl log p(x|l), mean(l))`` at 50 digits from the definition
    ``x l - softplus(l) + log(l / tanh(l / 2))``."""
    with mpmath.workdps(50):
        l, x = _mp(l), _mp(x)
        if l == 0:
            return mpmath.mpf(0), x - mpmath.mpf(0.5), mpmath.mpf(0.5)
        value = x * l - mpmath.log1p(mpmath.exp(l)) + mpmath.log(l / mpmath.tanh(l / 2))
        mean = 1 / (-mpmath.expm1(-l)) - 1 / l
        return value, x - mean, mean


def _errors(l, x, value, grad, eps):
    """``(value error, gradient error)`` in units of ``eps`` times the scale each is held to.

    The value ``f`` is held to ``|f|`` times its condition number ``kappa = 1 + (|x l| +
    |l (x - mean)|) / |f|`` (its sensitivity to relative changes of ``x`` and ``l``; about 1
    except near the zeros of ``f``, where no float computation is accurate relative to ``f``),
    the gradient ``x - mean`` to ``|x| + |mean|``, the terms whose difference it is."""
    f, g, mean = _exact(l, x)
    lm, xm = _mp(l), _mp(x)
    value_scale = abs(f) + abs(xm * lm) + abs(lm * g)
    value_err = abs(_mp(value) - f) / value_scale if value_scale else abs(_mp(value) - f)
    grad_err = abs(_mp(grad) - g) / (abs(xm) + abs(mean))
    return float(value_err) / eps, float(grad_err) / eps


def _run(backend, logits, x):
    leaf = logits.clone().requires_grad_()
    with fastair.use_backend(backend):
        out = fastair.continuous_bernoulli_log_prob(leaf, x)
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    return out.detach(), grad


def _pointwise(backend, dtype, points, x):
    """Each logit of ``points`` against the same ``x``, one per row ([n, 1] logits: the
    one-element tail of the kernels), and again as one row of D = n (their vector loops)."""
    logits = torch.tensor(points, dtype=torch.float64).to(dtype)
    xs = torch.full_like(logits, x)
    out, grad = _run(backend, logits[:, None], xs[:, None])
    row, row_grad = _run(backend, logits[None, :], xs[None, :])
    return logits, xs, out, grad[:, 0], row, row_grad[0]


# -- the series ---------------------------------------------------------------------------------
def test_series_coefficients_against_mpmath():
    """``log(sinh(l/2) / (l/2)) = sum_n d_n l^2n`` and its derivative ``sum_n c_n l^(2n-1)``
    (Taylor coefficients at 50 digits), ``d_n = B_2n / (2n (2n)!)``; and the series of the
    normalizer as written in logits: ``log C(l) = log 2 + l^2/12 - 7 l^4/1440 + ...``,
    ``d log C / dl = 1/l - 1/sinh(l) = l/6 - 7 l^3/360 + ...``."""
    with mpmath.workdps(50):
        taylor = mpmath.taylor(lambda t: mpmath.log(mpmath.sinh(t / 2) / (t / 2)) if t else 0,
                               0, 24)
        for n, (d, c) in enumerate(zip(reference.CB_VALUE_SERIES, reference.CB_GRAD_SERIES), 1):
            exact = mpmath.bernoulli(2 * n) / (2 * n * mpmath.factorial(2 * n))
            assert abs(taylor[2 * n] - exact) < 1e-40 * abs(exact)
            assert d == float(exact), (n, d, exact)
            assert c == float(2 * n * exact), (n, c)
            assert taylor[2 * n - 1] == 0
        log_c = mpmath.taylor(lambda t: mpmath.log(t / mpmath.tanh(t / 2)) if t else
                              mpmath.log(2), 0, 4)
        assert abs(log_c[0] - mpmath.log(2)) < 1e-45
        assert abs(log_c[2] - mpmath.mpf(1) / 12) < 1e-45
        assert abs(log_c[4] + mpmath.mpf(7) / 1440) < 1e-45
        dlog_c = mpmath.taylor(lambda t: 1 / t - 1 / mpmath.sinh(t) if t else 0, 0, 3)
        assert abs(dlog_c[1] - mpmath.mpf(1) / 6) < 1e-45
        assert abs(dlog_c[3] + mpmath.mpf(7) / 360) < 1e-45


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_series_truncation_below_rounding_at_the_switch(dtype):
    """The first term each series drops is below a quarter of the unit roundoff of the sum it
    belongs to at the switch point, for the value and for the gradient."""
    s, terms = reference.CB_SWITCH[dtype]
    u = torch.finfo(dtype).eps / 2
    with mpmath.workdps(50):
        n = terms + 1
        dropped = abs(mpmath.bernoulli(2 * n) / (2 * n * mpmath.factorial(2 * n)))
        value = mpmath.log(mpmath.sinh(_mp(s) / 2) / (_mp(s) / 2))
        deriv = mpmath.coth(_mp(s) / 2) / 2 - 1 / _mp(s)
        assert dropped * _mp(s) ** (2 * n) < 0.25 * u * value
        assert 2 * n * dropped * _mp(s) ** (2 * n - 1) < 0.25 * u * deriv


# -- values and gradients against mpmath ---------------------------------------------------------
@pytest.mark.parametrize("x", XS)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_float64_against_mpmath(backend, x):
    logits, xs, out, grad, row, row_grad = _pointwise(backend, torch.float64,
                                                      LOGITS + NEAR_SWITCH, x)
    eps = torch.finfo(torch.float64).eps
    for l, v, g in zip(logits.tolist(), out.tolist(), grad.tolist()):
        value_err, grad_err = _errors(l, x, v, g, eps)
        assert value_err <= ULPS, f"l = {l}, x = {x}: value {v} off by {value_err:.2f} ulps"
        assert grad_err <= ULPS, f"l = {l}, x = {x}: gradient {g} off by {grad_err:.2f} ulps"
    with mpmath.workdps(50):
        total = sum(_exact(l, x)[0] for l in logits.tolist())
        scale = sum(abs(_exact(l, x)[0]) + abs(_mp(x * l)) + abs(_mp(l)) for l in logits.tolist())
    assert abs(_mp(row.item()) - total) <= ULPS * eps * scale
    torch.testing.assert_close(row_grad, grad, rtol=0, atol=0)  # one formula per element


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_series_branch_relative_to_itself(backend, dtype):
    """At ``x = 1/2`` the value is ``-log(sinh(l/2) / (l/2))`` and the gradient
    ``1/l - coth(l/2)/2``, nothing cancelling against ``x``: below the switch point (up to just
    under it, where a series cut short would show) both are accurate relative to themselves."""
    s, _ = reference.CB_SWITCH[dtype]
    points = [s * f for f in (1e-6, 0.01, 0.3, 0.7, 0.9, 0.99, 0.99999)]
    points += [-p for p in points]
    logits, xs, out, grad, _, _ = _pointwise(backend, dtype, points, 0.5)
    eps = torch.finfo(dtype).eps
    for l, v, g in zip(logits.tolist(), out.tolist(), grad.tolist()):
        assert abs(l) < s
        f, gr, _ = _exact(l, 0.5)
        assert abs(_mp(v) - f) <= 3 * eps * abs(f), (l, v, float(f))
        assert abs(_mp(g) - gr) <= 3 * eps * abs(gr), (l, g, float(gr))


def test_well_conditioned_points_are_accurate_relative_to_the_value():
    """Where the value's condition number is below 2, the reference's error relative to the
    value itself is at most a few ulps."""
    eps = torch.finfo(torch.float64).eps
    for x in XS:
        logits, xs, out, grad, _, _ = _pointwise("reference", torch.float64, LOGITS, x)
        for l, v in zip(logits.tolist(), out.tolist()):
            f, g, _ = _exact(l, x)
            if f == 0:
                assert v == 0.0
                continue
            kappa = 1 + (abs(_mp(x * l)) + abs(_mp(l) * g)) / abs(f)
            if kappa < 2:
                assert abs(_mp(v) - f) / abs(f) <= ULPS * eps, (l, x, v)


@pytest.mark.parametrize("x", XS)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_float32_against_the_float64_reference(backend, x):
    points = LOGITS + NEAR_SWITCH + tuple(-p for p in NEAR_SWITCH)
    logits, xs, out, grad, _, _ = _pointwise(backend, torch.float32, points, x)
    assert out.dtype == torch.float32 and grad.dtype == torch.float32
    ref, ref_grad = _run("reference", logits.double()[:, None], xs.double()[:, None])
    torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(grad.double(), ref_grad[:, 0], rtol=2e-6, atol=1e-7)
    eps = torch.finfo(torch.float32).eps  # and each within a few float32 ulps of mpmath
    for l, xv, v, g in zip(logits.tolist(), xs.tolist(), out.tolist(), grad.tolist()):
        value_err, grad_err = _errors(l, xv, v, g, eps)
        assert value_err <= ULPS, f"l = {l}, x = {xv}: value {v} off by {value_err:.2f} ulps"
        assert grad_err <= ULPS, f"l = {l}, x = {xv}: gradient {g} off by {grad_err:.2f} ulps"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_inputs_match_the_reference(backend, dtype):
    g = torch.Generator().manual_seed(7)
    scale = torch.logspace(-6, 1.5, 37, dtype=torch.float64)
    logits = (torch.randn(5, 6, 37, generator=g, dtype=torch.float64) * scale).to(dtype)
    x = torch.rand(6, 37, generator=g, dtype=torch.float64).to(dtype)
    assert_matches_reference(backend, fastair.continuous_bernoulli_log_prob, (logits, x),
                             [True, False])


@pytest.mark.parametrize("shape,x_shape", [((1,), (1,)), ((7, 17), (17,)), ((3, 7, 784), (7, 784)),
                                           ((4, 3, 5), (4, 1, 5)), ((4, 3, 5), (1, 1, 1)),
                                           ((2, 3, 4, 9), (4, 9))])
def test_shapes_and_broadcasting(backend, shape, x_shape):
    g = torch.Generator().manual_seed(sum(shape))
    logits = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    x = torch.rand(x_shape, generator=g, dtype=torch.float64)
    assert_matches_reference(backend, fastair.continuous_bernoulli_log_prob, (logits, x),
                             [True, False])


def test_bool_data(backend):
    logits = torch.randn(3, 4, 6, dtype=torch.float64)
    x = torch.rand(4, 6) < 0.5
    assert_matches_reference(backend, fastair.continuous_bernoulli_log_prob, (logits, x),
                             [True, False])


# -- torch.distributions ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_matches_torch_distributions_where_it_is_accurate(backend):
    """torch's ``ContinuousBernoulli`` goes through ``probs`` and a Taylor expansion only for
    ``probs`` in (0.499, 0.501); for ``|l|`` in [0.05, 15] its float64 values are accurate."""
    g = torch.Generator().manual_seed(3)
    mags = torch.logspace(math.log10(0.05), math.log10(15.0), 40, dtype=torch.float64)
    logits = torch.cat([mags, -mags]).reshape(8, 10)
    x = torch.rand(8, 10, generator=g, dtype=torch.float64)
    x[0] = 0.0
    x[1] = 1.0
    leaf = logits.clone().requires_grad_()
    with fastair.use_backend(backend):
        out = fastair.continuous_bernoulli_log_prob(leaf[..., None], x[..., None])
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    tleaf = logits.clone().requires_grad_()
    theirs = torch.distributions.ContinuousBernoulli(logits=tleaf,
                                                     validate_args=False).log_prob(x)
    (tgrad,) = torch.autograd.grad(theirs.sum(), tleaf)
    torch.testing.assert_close(out, theirs.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, tgrad, rtol=1e-7, atol=1e-9)


# -- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("points", [(0.0, 1e-6, -1e-6, 1e-3, -1e-3),
                                    (0.5, -0.999999, 1.0, -1.9999, 2.0001, 3.0, -30.0)],
                         ids=["at-and-near-0", "elsewhere"])
def test_gradcheck(backend, points):
    logits = torch.tensor(points, dtype=torch.float64)[:, None].expand(-1, 3).contiguous()
    x = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    with fastair.use_backend(backend):
        assert torch.autograd.gradcheck(
            lambda l: fastair.continuous_bernoulli_log_prob(l, x),
            (logits.requires_grad_(),), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gradient_at_zero_is_exactly_x_minus_half(backend, dtype):
    x = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7, 1.0, 0.25, 0.9], dtype=dtype)
    logits = torch.zeros(3, 8, dtype=dtype)
    out, grad = _run(backend, logits, x)
    assert (out == 0).all(), out
    assert torch.equal(grad, (x - 0.5).expand(3, 8)), grad


# -- extremes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("magnitude", [1e4, 1e30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_extreme_logits_are_finite(backend, magnitude, dtype):
    x = torch.tensor([0.0, 0.3, 1.0], dtype=dtype)
    logits = torch.tensor([[magnitude], [-magnitude]], dtype=dtype).expand(2, 3).contiguous()
    out, grad = _run(backend, logits[..., None], x[:, None])
    assert torch.isfinite(out).all() and torch.isfinite(grad).all(), (out, grad)
    for (i, j), v in zip([(i, j) for i in range(2) for j in range(3)], out.flatten().tolist()):
        l, xv = logits[i, j].item(), x[j].item()
        f, gr, _ = _exact(l, xv)
        assert abs(_mp(v) - f) <= 4 * torch.finfo(dtype).eps * (abs(f) + abs(_mp(l))), (l, xv, v)
        assert abs(_mp(grad[i, j, 0].item()) - gr) <= 4 * torch.finfo(dtype).eps, (l, xv)


# -- errors ------------------------------------------------------------------------------------
ARGUMENT_ERRORS = [
    (TypeError, (torch.zeros(3, dtype=torch.int32), torch.zeros(3))),
    (TypeError, ([0.0, 1.0], torch.zeros(2))),
    (ValueError, (torch.zeros(3, 4, 5), torch.zeros(7, 5))),
    (ValueError, (torch.zeros(4, 5), torch.zeros(2, 4, 5))),
    (ValueError, (torch.tensor(0.0), torch.tensor(0.0))),
    (ValueError, (torch.zeros(3), torch.zeros(3, device="meta"))),
]


@pytest.mark.parametrize("error,args", ARGUMENT_ERRORS)
def test_argument_errors_are_those_of_bernoulli_log_prob(error, args):
    with pytest.raises(error) as theirs:
        fastair.bernoulli_log_prob(*args)
    with pytest.raises(error) as ours:
        fastair.continuous_bernoulli_log_prob(*args)
    assert str(ours.value) == str(theirs.value)
    assert str(ours.value).split(":")[0] in ("x", "logits")


@pytest.mark.parametrize("bad,message", [
    (math.nan, r"x: 1 entries are not finite \(NaN\); expected Bernoulli targets in \[0, 1\]"),
    (math.inf, r"x: 1 entries are not finite \(inf\)"),
    (1.5, r"x: values range over \[0, 1\.5\], outside \[0, 1\]"),
    (-0.1, r"x: values range over \[-0\.1, 1\], outside \[0, 1\] \(logits or centred data"),
])
def test_check_x_raises_the_named_target_errors(bad, message):
    """``check_x=True`` raises what the losses and the trainer raise for Bernoulli targets
    (``fastair._checks.check_bernoulli_targets``); by default the op, like
    ``bernoulli_log_prob``, reads no values on the host."""
    x = torch.tensor([[0.0, 0.5, 1.0], [0.2, bad, 0.9]])
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=message):
        fastair.continuous_bernoulli_log_prob(logits, x, check_x=True)
    fastair.continuous_bernoulli_log_prob(logits, x)  # no check, no error
    ok = torch.tensor([[0.0, 0.5, 1.0]])
    fastair.continuous_bernoulli_log_prob(logits, ok, check_x=True)


# -- reduced precision ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_reduced_precision_logits(backend, dtype):
    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(8, 7, 101, generator=g) * 3).to(dtype)
    logits[0, 0, :3] = 0.0
    x = torch.rand(7, 101, generator=g)
    out, (grad,) = assert_matches_reference(backend, fastair.continuous_bernoulli_log_prob,
                                            (logits, x), [True, False], tol_dtype=dtype)
    assert out.dtype == torch.float32 and grad.dtype == dtype
    # the same logits widened to float32 beforehand give the same float32 sums
    with fastair.use_backend(backend):
        wide = fastair.continuous_bernoulli_log_prob(logits.float(), x)
    torch.testing.assert_close(out, wide, rtol=1e-6, atol=1e-5)


def test_exported():
    assert "continuous_bernoulli_log_prob" in fastair.functional.__all__
    assert "continuous_bernoulli_log_prob" in fastair.__all__
    assert fastair.continuous_bernoulli_log_prob is fastair.functional.continuous_bernoulli_log_prob
