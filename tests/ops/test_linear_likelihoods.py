"""The fused decoder heads of the grey-level likelihoods (issue 35):
``linear_continuous_bernoulli_log_prob(h, weight, bias, x)`` and
``linear_gaussian_log_prob(h, weight, bias, x, logvar)``.

Each op, on the C++ kernels and the Triton kernels (through the interpreter on CPU), equals the
unfused composition run by the float64 reference (``continuous_bernoulli_log_prob`` /
``gaussian_log_prob`` of ``F.linear(h, weight, bias)``) on fresh random inputs, values and the
gradients of h, weight, bias and logvar (in each of its shapes), under an upstream gradient that
differs per row: shapes across the C++ kernel's 256-row tiles and D off the SIMD width, with and
without bias, float32, float64 and bfloat16; continuous Bernoulli logits exactly 0 and near 0;
gradcheck; autocast. Then the wiring: ``iwae_loss(..., head=, likelihood=)`` with and without
``k_chunk`` and ``VAE(likelihood=...)`` through its head equal the unfused paths (float64, every
gradient, ``logvar_x``'s included) and run the fused op without storing ``[k, B, D]``.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fastair
from fastair.models import VAE
from fastair.nn import iwae_loss

CB, GAUSS = "continuous_bernoulli", "gaussian"
OPS = {CB: fastair.linear_continuous_bernoulli_log_prob, GAUSS: fastair.linear_gaussian_log_prob}
OP_NAMES = {CB: "linear_continuous_bernoulli_log_prob", GAUSS: "linear_gaussian_log_prob"}
ESTIMATORS = ("iwae", "stl", "dreg")
# (rtol, atol relative to 1 + the largest reference magnitude) by the inputs' dtype
TOL = {torch.float64: (1e-9, 1e-10), torch.float32: (2e-5, 2e-6),
       torch.bfloat16: (1.6e-2, 1.5e-2)}

# (k, B, H, D), R = k * B rows. Native: one row; D = 17, 13, 37 off the AVX-512 widths (16 floats,
# 8 doubles); R = 257 and 1100 across the kernel's 256-row tiles. Triton (the interpreter is
# slow): smaller ones, still several row blocks (R = 260) and masked column blocks.
NATIVE_SHAPES = [(1, 1, 1, 1), (1, 7, 17, 17), (257, 1, 9, 13), (11, 100, 20, 37)]
TRITON_SHAPES = [(1, 1, 1, 1), (2, 5, 7, 19), (65, 4, 9, 13)]
LOGVAR_SHAPES = {"scalar": lambda k, b, d: (), "pixel": lambda k, b, d: (d,),
                 "row": lambda k, b, d: (b, 1), "full": lambda k, b, d: (b, d)}


def _unit(g, *shape):
    """Data in [0, 1] with exact 0s, 1s and 1/2s among it."""
    u = torch.rand(*shape, generator=g, dtype=torch.float64)
    return torch.where(u < 0.15, 0.0, torch.where(u > 0.85, 1.0, torch.where(
        (u > 0.45) & (u < 0.5), 0.5, u)))


def make(lik, k, b, hdim, d, dtype=torch.float64, seed=0, with_bias=True, logvar="full"):
    """``(inputs, differentiable)`` of the op ``lik``: h, weight, bias (or None), x (and logvar);
    logits spread over both sides of the continuous Bernoulli's switch points (|l| of 1 and 2)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.tanh(torch.randn(k, b, hdim, generator=g, dtype=torch.float64))
    weight = torch.randn(d, hdim, generator=g, dtype=torch.float64) * 2 / hdim ** 0.5
    bias = torch.randn(d, generator=g, dtype=torch.float64) if with_bias else None
    if lik == CB:
        x = _unit(g, b, d)
        extra = ()
    else:
        x = torch.randn(b, d, generator=g, dtype=torch.float64)
        lv_shape = LOGVAR_SHAPES[logvar](k, b, d)
        extra = (0.4 * torch.randn(lv_shape, generator=g, dtype=torch.float64),)
    inputs = tuple(None if t is None else t.to(dtype) for t in (h, weight, bias, x) + extra)
    differentiable = (True, True, with_bias, False) + (True,) * len(extra)
    return inputs, differentiable


def unfused(lik, h, weight, bias, x, logvar=None):
    """The composition the op fuses: the layer, then the elementwise op on its output."""
    out = F.linear(h, weight, bias)
    if lik == CB:
        return fastair.continuous_bernoulli_log_prob(out, x)
    return fastair.gaussian_log_prob(out, x, logvar)  # N(x; m, v) = N(m; x, v)


def run(fn, inputs, differentiable, backend, dtype=None, seed=0):
    """``fn(*inputs)`` under ``backend`` (inputs cast to ``dtype`` first) and the gradients of
    ``sum(out * u)`` for the differentiable inputs, ``u`` in [0.5, 1.5] differing per row."""
    leaves = [None if t is None else
              (t.detach().to(dtype) if dtype is not None else t.detach().clone()).requires_grad_(d)
              for t, d in zip(inputs, differentiable)]
    with fastair.use_backend(backend):
        out = fn(*leaves)
    u = torch.rand(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    wrt = [t for t, d in zip(leaves, differentiable) if d]
    grads = torch.autograd.grad((out * (u + 0.5).to(out.dtype)).sum(), wrt)
    return out, grads, wrt


def assert_matches_unfused(lik, backend, inputs, differentiable, tol_dtype=None):
    """The fused op under ``backend`` against the unfused composition in float64 (the reference
    backend): values and gradients, dtypes and shapes. Returns the op's value and gradients."""
    tol_dtype = tol_dtype or inputs[0].dtype
    rtol, atol = TOL[tol_dtype]
    out, grads, leaves = run(OPS[lik], inputs, differentiable, backend)
    ref, ref_grads, _ = run(lambda *a: unfused(lik, *a), inputs, differentiable, "reference",
                            torch.float64)
    want_dtype = torch.float64 if tol_dtype == torch.float64 else torch.float32
    assert out.dtype == want_dtype and out.shape == ref.shape == inputs[0].shape[:-1]
    torch.testing.assert_close(out.double(), ref.detach(), rtol=rtol,
                               atol=atol * (1 + ref.abs().max().item()))
    for i, (g, r, t) in enumerate(zip(grads, ref_grads, leaves)):
        assert g.dtype == t.dtype and g.shape == t.shape, (i, g.dtype, g.shape)
        torch.testing.assert_close(g.double(), r, rtol=rtol, atol=atol * (1 + r.abs().max().item()),
                                   msg=lambda m, i=i: f"gradient {i}: {m}")
    return out, grads


# --- the ops against the float64 reference ---------------------------------------------------

CASES = [(backend, s, dt, wb) for backend, shapes in (("native", NATIVE_SHAPES),
                                                      ("triton", TRITON_SHAPES))
         for s in shapes for dt in (torch.float32, torch.float64) for wb in (True, False)
         if backend == "native" or s[0] * s[1] < 256 or dt == torch.float32]  # interpreter time


def _case_id(case):
    backend, shape, dtype, with_bias = case
    return (f"{backend}-{'x'.join(map(str, shape))}-{str(dtype).split('.')[-1]}-"
            f"{'bias' if with_bias else 'nobias'}")


@pytest.mark.parametrize("lik", [CB, GAUSS])
@pytest.mark.parametrize("backend,shape,dtype,with_bias", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_the_unfused_reference(lik, backend, shape, dtype, with_bias):
    inputs, diff = make(lik, *shape, dtype=dtype, seed=sum(shape), with_bias=with_bias)
    out, grads = assert_matches_unfused(lik, backend, inputs, diff)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("logvar", list(LOGVAR_SHAPES))
@pytest.mark.parametrize("backend,shape", [("native", (3, 100, 8, 37)), ("triton", (3, 5, 6, 21))],
                         ids=["native", "triton"])
def test_gaussian_logvar_of_every_shape_gets_its_gradient(backend, shape, logvar):
    """``logvar`` ``[]``, ``[D]``, ``[B, 1]`` or ``[B, D]``: its gradient in its own shape, each
    entry summed over the rows (samples, examples) it is shared by."""
    inputs, diff = make(GAUSS, *shape, seed=5, logvar=logvar)
    _, grads = assert_matches_unfused(GAUSS, backend, inputs, diff)
    assert grads[-1].shape == inputs[-1].shape and (grads[-1] != 0).all()


def test_gaussian_logvar_may_have_more_dims_than_x():
    """``logvar [k, B, D]`` with ``x [D]``: both expanded to rows of ``[k * B, D]``."""
    inputs, diff = make(GAUSS, 3, 4, 6, 9, seed=2)
    h, weight, bias, x, _ = inputs
    logvar = 0.3 * torch.randn(3, 4, 9, generator=torch.Generator().manual_seed(1),
                               dtype=torch.float64)
    assert_matches_unfused(GAUSS, "native", (h, weight, bias, x[0], logvar), diff)


@pytest.mark.parametrize("backend", ["native", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_bernoulli_logits_at_and_near_zero(backend, dtype):
    """Columns whose weight row is 0 have logits equal to the bias: exactly 0, 1e-7, 1e-3 and
    either side of the float32 and float64 switch points (|l| = 2, 1), with x in {0, 1/2, 1}
    and between; the gradient at ``l = 0`` is exactly ``u (x - 1/2)`` per element."""
    (h, weight, bias, x), diff = make(CB, 3, 5, 6, 20, seed=9)
    special = torch.tensor([0.0, 0.0, 1e-7, -1e-7, 1e-3, -1e-3, 1.0, -1.0 + 1e-9, 2.0,
                            -2.0 + 1e-7], dtype=torch.float64)
    weight[:len(special)] = 0.0
    bias[:len(special)] = special
    x[:, 0], x[0, :4] = 0.5, torch.tensor([0.0, 1.0, 0.3, 1.0], dtype=torch.float64)
    inputs = tuple(t.to(dtype) for t in (h, weight, bias, x))
    out, grads = assert_matches_unfused(CB, backend, inputs, diff)
    # column 1: l = 0 exactly in every row, so dbias[1] = sum_r u_r (x[r % B, 1] - 1/2)
    u = torch.rand(out.shape, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64) + 0.5
    want = (u.to(dtype) * (x[:, 1].to(dtype) - 0.5)).sum()
    torch.testing.assert_close(grads[2][1], want, rtol=1e-6 if dtype == torch.float32 else 1e-12,
                               atol=0)


@pytest.mark.parametrize("lik", [CB, GAUSS])
@pytest.mark.parametrize("backend,native_bf16", [("native", True), ("native", False),
                                                  ("triton", False)])
def test_bfloat16_inputs(monkeypatch, lik, backend, native_bf16):
    """bfloat16 h, weight, bias: a float32 result, gradients in bfloat16, close to the float64
    reference of the same values (the C++ kernels multiply bfloat16 tiles where the CPU does,
    widen them to float32 elsewhere)."""
    monkeypatch.setattr(fastair.functional, "native_bf16", lambda device: native_bf16)
    shape = (3, 100, 32, 50) if backend == "native" else (2, 7, 16, 50)  # R = 300: two tiles
    inputs, diff = make(lik, *shape, seed=3)
    inputs = tuple(t.to(torch.bfloat16) if i < 3 else t.float() for i, t in enumerate(inputs))
    out, grads = assert_matches_unfused(lik, backend, inputs, diff, tol_dtype=torch.bfloat16)
    assert out.dtype == torch.float32
    assert [g.dtype for g in grads] == [torch.bfloat16] * 3 + [torch.float32] * (lik == GAUSS)


@pytest.mark.parametrize("lik,logvar", [(CB, None), (GAUSS, "full"), (GAUSS, "scalar")])
@pytest.mark.parametrize("backend", ["native", "reference"])  # Triton: test_op_contract.py
def test_gradcheck(backend, lik, logvar):
    inputs, diff = make(lik, 2, 3, 4, 5, logvar=logvar or "full")
    leaves = [t.requires_grad_(d) for t, d in zip(inputs, diff)]
    x = leaves.pop(3)

    def fn(h, w, b, *lv):
        return OPS[lik](h, w, b, x, *lv)
    with fastair.use_backend(backend):
        assert torch.autograd.gradcheck(fn, leaves)


def _round_through(t, dtype):
    return t.to(dtype).to(torch.float32)


@pytest.mark.parametrize("lik", [CB, GAUSS])
@pytest.mark.parametrize("native_bf16", [True, False])
def test_under_autocast_the_layer_is_that_of_nn_linear(monkeypatch, lik, native_bf16):
    """Under bf16 autocast h, weight and bias are rounded to bfloat16 (logvar is read as it
    is): the tiles are their products summed in float32, rounded to bfloat16 (the bias then
    added in float32) where the CPU multiplies bfloat16 natively; a float32 result; gradients
    of the float32 parameters in float32."""
    monkeypatch.setattr(fastair.functional, "native_bf16", lambda device: native_bf16)
    (h, weight, bias, x, *lv), diff = make(lik, 3, 7, 40, 50, dtype=torch.float32, seed=4)
    low = torch.bfloat16
    if native_bf16:
        out = F.linear(h.to(low), weight.to(low)).float() + _round_through(bias, low)
    else:
        out = F.linear(_round_through(h, low), _round_through(weight, low),
                       _round_through(bias, low))
    emulated = (fastair.continuous_bernoulli_log_prob(out, x) if lik == CB
                else fastair.gaussian_log_prob(out, x, *lv))
    leaves = [t.requires_grad_(d) for t, d in zip((h, weight, bias, x, *lv), diff)]
    with torch.autocast("cpu", dtype=low):
        got = OPS[lik](*leaves)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, emulated, rtol=1e-6, atol=5e-5)
    exact = OPS[lik](h, weight, bias, x, *lv)
    assert (exact - emulated).abs().max() > 1e-3  # what the check tells apart
    grads = torch.autograd.grad(got.sum(), [t for t in leaves if t.requires_grad])
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_errors_and_exports():
    (h, weight, bias, x, logvar), _ = make(GAUSS, 2, 3, 4, 5, dtype=torch.float32)
    for name in OP_NAMES.values():
        assert name in fastair.__all__ and name in fastair.functional.__all__
        assert getattr(fastair, name) is getattr(fastair.functional, name)
    with pytest.raises(ValueError, match=r"logvar: expected a shape that broadcasts to the shape "
                                         r"of h @ weight.T, \[2, 3, 5\]"):
        fastair.linear_gaussian_log_prob(h, weight, bias, x, logvar[:2])
    with pytest.raises(TypeError, match=r"logvar: expected a torch.Tensor"):
        fastair.linear_gaussian_log_prob(h, weight, bias, x, 0.5)
    with pytest.raises(ValueError, match=r"weight: expected shape \[D, H\] with H = 4"):
        fastair.linear_continuous_bernoulli_log_prob(h, weight.t(), bias, x)
    with pytest.raises(ValueError, match=r"x: expected a shape that broadcasts"):
        fastair.linear_continuous_bernoulli_log_prob(h, weight, bias, x[:2])


# --- the wiring: the loss and the VAE through the fused heads -----------------------------------

class _FastairCalls(TorchDispatchMode):
    """The names of the ``fastair::`` operators called."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fastair":
            self.names.add(func.name().split("::")[-1])
        return func(*args, **(kwargs or {}))


def _largest_saved(fn):
    """``(the most elements of a tensor saved for the backward, fn())``."""
    sizes = [0]

    def pack(t):
        sizes.append(t.numel())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return max(sizes), out


B, Z, D, H, K = 5, 3, 23, 11, 7


class Net:
    """A float64 encoder, a decoder split into ``trunk`` and ``head``, grey data and draws."""

    def __init__(self, lik, logvar_shape, seed=0):
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(D, 13), nn.Tanh(), nn.Linear(13, 2 * Z)).double()
        self.trunk = nn.Sequential(nn.Linear(Z, H), nn.Tanh()).double()
        self.head = nn.Linear(H, D).double()
        self.decoder = nn.Sequential(self.trunk, self.head)
        g = torch.Generator().manual_seed(seed + 1)
        self.x = _unit(g, B, D)
        self.eps = torch.randn(K, B, Z, generator=g, dtype=torch.float64)
        self.logvar_x = None
        if lik == GAUSS:
            self.logvar_x = (0.3 * torch.randn(logvar_shape, generator=g, dtype=torch.float64)
                             ).requires_grad_()
        self.wrt = (list(self.encoder.parameters()) + list(self.trunk.parameters())
                    + list(self.head.parameters()) + [t for t in [self.logvar_x] if t is not None])

    def loss(self, lik, estimator, head=False, k_chunk=None):
        mu, logvar = self.encoder(self.x).chunk(2, dim=-1)
        decoder, kw = (self.trunk, dict(head=self.head)) if head else (self.decoder, {})
        return iwae_loss(self.x, mu, logvar, decoder, K, estimator, "none", eps=self.eps,
                         k_chunk=k_chunk, likelihood=lik, logvar_x=self.logvar_x, **kw)

    def run(self, *args, **kw):
        calls = _FastairCalls()
        with calls:
            saved, loss = _largest_saved(lambda: self.loss(*args, **kw))
            grads = torch.autograd.grad(loss.sum(), self.wrt)
        return loss.detach(), grads, saved, calls.names


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("lik,logvar_shape", [(CB, None), (GAUSS, ()), (GAUSS, (D,)),
                                              (GAUSS, (B, D))])
def test_iwae_loss_through_the_head_equals_the_unfused_path(lik, logvar_shape, estimator):
    """On the same draws the head path, whole and in chunks (3 does not divide k = 7), gives
    the unfused path's loss and every gradient (logvar_x's included) to 1e-9; the head path
    runs the fused op and saves no [k, B, D] tensor (the unfused path does)."""
    net = Net(lik, logvar_shape)
    want, want_grads, plain_saved, plain_calls = net.run(lik, estimator)
    assert plain_saved >= K * B * D and OP_NAMES[lik] not in plain_calls
    for k_chunk in (None, 3, K):
        got, grads, saved, calls = net.run(lik, estimator, head=True, k_chunk=k_chunk)
        assert OP_NAMES[lik] in calls and f"{OP_NAMES[lik]}_backward" in calls, calls
        assert saved < K * B * D, (k_chunk, saved)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
        for i, (g, w) in enumerate(zip(grads, want_grads)):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9, msg=f"{i}, k_chunk={k_chunk}")
    if lik == GAUSS:
        assert grads[-1].shape == net.logvar_x.shape and (grads[-1] != 0).all()


def _vae_bound_and_grads(model, x, k, seed=3):
    model.zero_grad(set_to_none=True)
    calls = _FastairCalls()
    with calls:
        out = model.bound(x, k, generator=torch.Generator().manual_seed(seed))
        out.sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, calls.names


@pytest.mark.parametrize("estimator", ["iwae", "dreg"])
@pytest.mark.parametrize("lik", [CB, GAUSS])
def test_vae_training_through_the_fused_head_equals_the_unfused_path(lik, estimator):
    """``VAE(likelihood=...)``'s training bound with ``fused_head=True``, whole or ``k_chunk``
    at a time, gives that of ``fused_head=False`` (the decoder's output whole), values and every
    gradient (the Gaussian's ``log_scale`` included), and only the former runs the fused op."""
    torch.manual_seed(1)
    model = VAE(x_dim=D, z_dim=Z, hidden=(16, 12), k=5, sigma=0.3, alpha=0.5, likelihood=lik,
                estimator=estimator).double()
    if lik == GAUSS:
        with torch.no_grad():
            model.decoder.log_scale.fill_(-0.4)
    x = _unit(torch.Generator().manual_seed(2), 6, D)
    model.train()
    model.fused_head = False
    want, want_grads, calls = _vae_bound_and_grads(model, x, 5)
    assert OP_NAMES[lik] not in calls
    for k_chunk in (None, 2):
        model.fused_head, model.k_chunk = True, k_chunk
        got, grads, calls = _vae_bound_and_grads(model, x, 5)
        assert OP_NAMES[lik] in calls, calls
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
        for name in want_grads:
            torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-9, atol=1e-9,
                                       msg=f"{name}, k_chunk={k_chunk}")
    if lik == GAUSS:
        assert grads["decoder.log_scale"].abs() > 0
    model.fused_head = "auto"  # k > 1: the head
    assert OP_NAMES[lik] in _vae_bound_and_grads(model, x, 5)[2]


@pytest.mark.parametrize("lik", [CB, GAUSS])
def test_the_decoders_log_prob_runs_the_fused_op(lik):
    """``decoder.log_prob`` (what the model's log weights, and so evaluation, use) is the fused
    op, equal to the unfused likelihood of the decoder's output; under autocast it is the
    unfused one (float32)."""
    torch.manual_seed(0)
    model = VAE(x_dim=D, z_dim=Z, hidden=(16,), likelihood=lik).double()
    dec = model.decoder
    z = torch.randn(4, B, Z, dtype=torch.float64)
    x = _unit(torch.Generator().manual_seed(1), B, D)
    calls = _FastairCalls()
    with calls:
        got = dec.log_prob(z, x)
    assert OP_NAMES[lik] in calls.names
    lv = (dec.logvar_x,) if lik == GAUSS else ()
    with fastair.use_backend("reference"):
        want = unfused(lik, dec.trunk(z), dec.out.weight, dec.out.bias, x, *lv)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    model.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = dec.log_prob(z.float(), x.float())
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.double(), want, rtol=0.05, atol=0.5)
