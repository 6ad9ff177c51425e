"""Capped weight norm (WNI): the op against the reference, its invariants, and the layer."""
import io
import math

import pytest
import torch
from compare import assert_matches_reference
from torch import nn

import fastair
from fastair.nn import CappedWeightNorm, CappedWeightNormLinear, capped_weight_norm_

# (3, 10000): rows longer than ONE_PASS_MAX, swept twice in LOOP_BLOCK tiles (the others
# take one pass)
SHAPES = [(1, 1), (7, 3), (200, 784), (784, 200), (3, 10000), (4096, 4096)]


def make(out, inp, dtype=torch.float32, seed=0, H=None):
    """v, u and an H that leaves roughly half of the rows capped."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(out, inp, generator=g, dtype=torch.float64) / math.sqrt(inp)
    u = torch.randn(out, generator=g, dtype=torch.float64) * 2
    H = H if H is not None else 1.6
    return v.to(dtype), u.to(dtype), H


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(backend, shape, dtype):
    if shape == (4096, 4096) and backend == "triton":
        pytest.skip("4096x4096 through the Triton interpreter: (200, 784) takes the same one-pass "
                    "path; test_cuda and test_compiled_kernels run this shape compiled")
    v, u, H = make(*shape, dtype=dtype, seed=shape[0])
    assert_matches_reference(backend, lambda v, u: fastair.capped_weight_norm(v, u, H), (v, u),
                             [True, True])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_weights(backend, dtype):
    v, u, H = make(200, 784, dtype=torch.float32)
    def widened(v, u):  # w comes back in v's dtype; compare it in float32 (float64 reference)
        w = fastair.capped_weight_norm(v, u, H)
        return w.float() if w.dtype in (torch.float16, torch.bfloat16) else w

    out, (dv, du) = assert_matches_reference(backend, widened, (v.to(dtype), u), [True, True],
                                             tol_dtype=dtype)
    assert dv.dtype == dtype and du.dtype == torch.float32
    with fastair.use_backend(backend):
        assert fastair.capped_weight_norm(v.to(dtype), u, H).dtype == dtype


@pytest.mark.parametrize("seed", range(3))
def test_norm_is_capped_and_inactive_rows_unchanged(backend, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(300, 50, generator=g) * torch.rand(300, 1, generator=g) * 0.5
    u = torch.randn(300, generator=g) * 3
    H = float(torch.rand(1, generator=g)) * 3 + 0.1
    with fastair.use_backend(backend):
        w = fastair.capped_weight_norm(v, u, H)
    norms = torch.linalg.vector_norm(w.double(), dim=1)
    assert (norms <= H * (1 + 1e-6)).all()
    inactive = torch.linalg.vector_norm(v.double(), dim=1) <= H * torch.sigmoid(u.double())
    assert 0 < inactive.sum() < 300
    assert torch.equal(w[inactive], v[inactive])


def test_zero_row_and_tie(backend):
    # sigmoid(0) = 1/2 exactly, so with H = 2 the cap is exactly 1 = ||v_i|| for rows 0, 2, 3.
    v = torch.zeros(4, 6, dtype=torch.float64)
    v[0, 0], v[2, 3], v[3, 5] = 1.0, -1.0, 1.0
    u = torch.zeros(4, dtype=torch.float64)
    u[1] = -50.0  # row 1 is zero, with a tiny cap
    v.requires_grad_(True)
    u.requires_grad_(True)
    with fastair.use_backend(backend):
        w = fastair.capped_weight_norm(v, u, 2.0)
    dw = torch.randn_like(w)
    dv, du = torch.autograd.grad(w, (v, u), dw)
    assert torch.isfinite(dv).all() and torch.isfinite(du).all()
    # Documented subgradient: at the tie (and for the zero row) the cap counts as inactive.
    assert torch.equal(w, v.detach())
    assert torch.equal(dv, dw)
    assert torch.equal(du, torch.zeros_like(du))


def test_extreme_u(backend):
    v, _, H = make(9, 5, dtype=torch.float64)
    u = torch.tensor([100.0, -100.0, 40.0, -40.0, 0.0, 800.0, -800.0, 1.0, -1.0],
                     dtype=torch.float64)
    out, grads = assert_matches_reference(backend, lambda v, u: fastair.capped_weight_norm(v, u, H),
                                          (v, u), [True, True])
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)


def test_gradcheck(backend):
    v, u, H = make(7, 3, dtype=torch.float64, seed=5)
    v.requires_grad_(True)
    u.requires_grad_(True)
    with fastair.use_backend(backend):
        assert torch.autograd.gradcheck(lambda v, u: fastair.capped_weight_norm(v, u, H), (v, u))


@pytest.mark.parametrize("H,error", [(0.0, ValueError), (-1.0, ValueError),
                                     (float("nan"), ValueError), (float("inf"), ValueError),
                                     ("2", TypeError), (True, TypeError)])
def test_invalid_H(H, error):
    with pytest.raises(error, match=r"H: expected a (finite )?float > 0"):
        fastair.capped_weight_norm(torch.zeros(3, 2), torch.zeros(3), H)


def test_invalid_shapes():
    with pytest.raises(ValueError, match=r"v: expected shape \[out, in\], got \[3\]"):
        fastair.capped_weight_norm(torch.zeros(3), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"u: expected shape \[out\].*= \[3\], got \[4\]"):
        fastair.capped_weight_norm(torch.zeros(3, 2), torch.zeros(4), 1.0)
    with pytest.raises(TypeError, match=r"u: expected a floating"):
        fastair.capped_weight_norm(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match=r"H: expected"):
        CappedWeightNormLinear(3, 2, H=-1.0)


def test_layer_bounds_its_rows_and_behaves_like_weight_norm(backend):
    torch.manual_seed(0)
    layer = CappedWeightNormLinear(20, 10, H=0.5)
    assert "H=0.5" in repr(layer)
    assert set(layer.state_dict()) == {"bias", "parametrizations.weight.original0",
                                       "parametrizations.weight.original1"}
    with fastair.use_backend(backend):
        assert (torch.linalg.vector_norm(layer.weight, dim=1) <= 0.5 + 1e-6).all()
        x = torch.randn(5, 20)
        y = layer(x)
        y.sum().backward()
    assert y.shape == (5, 10)
    assert layer.parametrizations.weight.original0.grad is not None
    assert layer.parametrizations.weight.original1.grad is not None


def test_conversion_starts_equal_where_the_cap_allows(backend):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(30, 20), nn.Tanh(), nn.Linear(20, 4))
    before = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]
    x = torch.randn(6, 30)
    H = 1.0
    with fastair.use_backend(backend):
        capped_weight_norm_(model, H)
        capped_weight_norm_(model, H)  # a second call leaves converted layers alone
        after = [m.weight for m in model if isinstance(m, nn.Linear)]
        for w0, w1 in zip(before, after):
            small = torch.linalg.vector_norm(w0, dim=1) < H
            assert small.any()
            torch.testing.assert_close(w1[small], w0[small])
            assert (torch.linalg.vector_norm(w1, dim=1) <= H * (1 + 1e-6)).all()
        assert len(model[0].parametrizations.weight) == 1
        out = model(x)
    assert out.shape == (6, 4)


def test_saved_and_loaded_module_gives_the_same_outputs(backend):
    torch.manual_seed(2)
    model = capped_weight_norm_(nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3)), 0.7)
    with torch.no_grad():
        model[0].parametrizations.weight.original1.add_(torch.randn(6))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = capped_weight_norm_(nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3)), 0.7)
    fresh.load_state_dict(torch.load(buffer))
    x = torch.randn(4, 8)
    with fastair.use_backend(backend):
        torch.testing.assert_close(fresh(x), model(x))


@pytest.mark.slow
def test_compile_fullgraph_equals_eager(backend):
    torch._dynamo.reset()
    torch.manual_seed(3)
    layer = CappedWeightNormLinear(12, 7, H=0.6)
    x = torch.randn(5, 12)

    def loss(x):
        return torch.tanh(layer(x)).square().sum()

    with fastair.use_backend(backend):
        eager = loss(x)
        eager_grads = torch.autograd.grad(eager, list(layer.parameters()))
        compiled = torch.compile(loss, fullgraph=True)(x)
        compiled_grads = torch.autograd.grad(compiled, list(layer.parameters()))
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b)


def test_parametrization_rejects_bad_H():
    with pytest.raises(ValueError, match=r"H: expected a finite float > 0"):
        CappedWeightNorm(float("nan"))


def test_row_norm_stats_reports_the_effective_norms_and_the_rows_held_at_their_cap():
    from fastair.nn import row_norm_stats
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    with torch.no_grad():  # row norms 1, 2, 3, 4, 5 in the first layer
        w = torch.randn(5, 6)
        net[0].weight.copy_(w / w.norm(dim=1, keepdim=True) * torch.arange(1.0, 6.0)[:, None])
    free = row_norm_stats(net, quantiles=(0.0, 0.5, 1.0))
    assert [r["name"] for r in free] == ["0", "2"] and free[0]["rows"] == 5
    assert free[0]["quantiles"] == pytest.approx([1.0, 3.0, 5.0], rel=1e-5)
    assert free[0]["H"] is None and free[0]["capped_share"] is None
    expect = torch.linalg.vector_norm(net[2].weight, dim=1)
    assert free[1]["quantiles"][2] == pytest.approx(expect.max().item(), rel=1e-6)
    # a cap of 2.5: rows of norm 3, 4, 5 are held at it (sigmoid(u) ~ 1 for them), 1 and 2 not
    capped_weight_norm_(net[0], 2.5)
    stats = row_norm_stats(net)[0]
    assert stats["H"] == 2.5 and stats["capped_share"] == pytest.approx(3 / 5)
    assert stats["quantiles"][2] <= 2.5 + 1e-5 and stats["quantiles"][2] > 2.49
    held = row_norm_stats(net, quantiles=(0.0,))[0]["quantiles"][0]
    assert held == pytest.approx(1.0, rel=1e-5)  # the shortest row is untouched


def test_capped_scale_is_the_factor_of_the_op():
    """The factor that a layer applying the cap itself uses (the stacked models) is the op's:
    ``capped_scale(||v_i||^2, u, H) v_i == capped_weight_norm(v, u, H)_i``; a NaN cap is none."""
    from fastair.nn.capped_weight_norm import capped_scale, is_capped
    v, u, H = make(300, 50, dtype=torch.float64, seed=4)
    v[7] = 0.0  # a zero row keeps a zero row
    scale = capped_scale((v * v).sum(1), u, H)
    with fastair.use_backend("reference"):
        w = fastair.capped_weight_norm(v, u, H)
    torch.testing.assert_close(scale[:, None] * v, w, rtol=1e-12, atol=0)
    assert 0 < (scale < 1).float().mean() < 1 and scale[7] == 1
    caps = torch.full((300,), H, dtype=torch.float64)
    caps[::2] = math.nan
    mixed = capped_scale((v * v).sum(1), u, caps)
    assert (mixed[::2] == 1).all() and torch.equal(mixed[1::2], scale[1::2])
    layer = nn.Linear(3, 2)
    assert not is_capped(layer) and is_capped(capped_weight_norm_(layer, 1.0))
