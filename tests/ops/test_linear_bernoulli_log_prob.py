"""The fused decoder head ``bernoulli_log_prob(h @ weight.T + bias, x)`` against the reference."""
import pytest
import torch
from compare import assert_matches_reference

import fastair

# (k, B, H, D): rows R = k * B below, at and across the C++ kernel's 256-row tiles.
SHAPES = [(1, 1, 1, 1), (1, 7, 17, 17), (3, 100, 200, 784), (5, 60, 50, 33), (64, 7, 20, 784)]
TRITON_INTERPRETER_LIMIT = 10_000_000  # multiply-adds k*B*H*D; (3, 100, 200, 784) is 47M


def make(k, b, hdim, d, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    h = torch.tanh(torch.randn(k, b, hdim, generator=g, dtype=torch.float64)).to(dtype)
    weight = (torch.randn(d, hdim, generator=g, dtype=torch.float64) * scale
              / hdim ** 0.5).to(dtype)
    bias = torch.randn(d, generator=g, dtype=torch.float64).to(dtype)
    x = (torch.rand(b, d, generator=g) < 0.4).to(dtype)
    return h, weight, bias, x


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_reference(backend, shape, dtype, with_bias):
    k, b, hdim, d = shape
    if backend == "triton" and k * b * hdim * d > TRITON_INTERPRETER_LIMIT:
        pytest.skip("too slow through the Triton interpreter; smaller shapes cover the kernel")
    if backend == "triton" and dtype == torch.float64 and k * b * hdim * d > 1_000_000:
        pytest.skip("float64 at 7M multiply-adds through the Triton interpreter: float32 covers "
                    "this shape, float64 the smaller ones")
    h, weight, bias, x = make(*shape, dtype=dtype, seed=sum(shape))
    if with_bias:
        fn, inputs, diff = fastair.linear_bernoulli_log_prob, (h, weight, bias, x), [True] * 3
    else:
        def fn(h, weight, x):
            return fastair.linear_bernoulli_log_prob(h, weight, None, x)
        inputs, diff = (h, weight, x), [True, True]
    assert_matches_reference(backend, fn, inputs, diff + [False])


def test_extreme_logits(backend):
    h, weight, bias, x = make(2, 5, 8, 40, scale=200.0)
    logits = torch.nn.functional.linear(h, weight, bias)
    assert logits.abs().max() > 80
    out, grads = assert_matches_reference(backend, fastair.linear_bernoulli_log_prob,
                                          (h, weight, bias, x), [True, True, True, False])
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)


def test_equals_linear_then_bernoulli(backend):
    h, weight, bias, x = make(4, 9, 12, 30)
    with fastair.use_backend(backend):
        fused = fastair.linear_bernoulli_log_prob(h, weight, bias, x)
        unfused = fastair.bernoulli_log_prob(torch.nn.functional.linear(h, weight, bias), x)
    torch.testing.assert_close(fused, unfused)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision(backend, dtype):
    h, weight, bias, x = make(2, 7, 16, 50, dtype=dtype)
    out, grads = assert_matches_reference(backend, fastair.linear_bernoulli_log_prob,
                                          (h, weight, bias, x), [True, True, True, False],
                                          tol_dtype=dtype)
    assert out.dtype == torch.float32 and all(g.dtype == dtype for g in grads)


@pytest.mark.parametrize("native_bf16", [True, False])
def test_bf16_on_the_cpu_kernels_with_and_without_native_bf16(monkeypatch, native_bf16):
    """On a CPU with native bf16 the C++ head multiplies bfloat16 tiles (their weight gradients
    summed over tiles in float32); elsewhere it widens them: both match the reference, across
    the kernel's 256-row tiles."""
    monkeypatch.setattr(fastair.functional, "native_bf16", lambda device: native_bf16)
    h, weight, bias, x = make(3, 100, 64, 200, dtype=torch.bfloat16, seed=3)
    out, grads = assert_matches_reference("native", fastair.linear_bernoulli_log_prob,
                                          (h, weight, bias, x), [True, True, True, False],
                                          tol_dtype=torch.bfloat16)
    assert out.dtype == torch.float32 and all(g.dtype == torch.bfloat16 for g in grads)
    if native_bf16:  # the product rounded to bfloat16 (as autocast's Linear), the bias float32
        with fastair.use_backend("native"):
            logits = torch.nn.functional.linear(h, weight).float() + bias.float()
            unfused = fastair.bernoulli_log_prob(logits, x)
        torch.testing.assert_close(out, unfused, rtol=0, atol=1e-4)  # widened: 0.05 off


def test_gradcheck(backend):
    h, weight, bias, x = make(2, 3, 4, 5)
    inputs = tuple(t.requires_grad_(True) for t in (h, weight, bias))
    with fastair.use_backend(backend):
        assert torch.autograd.gradcheck(
            lambda h, w, b: fastair.linear_bernoulli_log_prob(h, w, b, x), inputs)


def test_errors():
    h, weight, bias, x = make(2, 3, 4, 5, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"weight: expected shape \[D, H\] with H = 4"):
        fastair.linear_bernoulli_log_prob(h, weight.t(), bias, x)
    with pytest.raises(ValueError, match=r"bias: expected shape \[D\].*= \[5\], got \[4\]"):
        fastair.linear_bernoulli_log_prob(h, weight, bias[:4], x)
    with pytest.raises(ValueError, match=r"x: expected a shape that broadcasts to the shape of "
                                         r"h @ weight.T, \[2, 3, 5\]"):
        fastair.linear_bernoulli_log_prob(h, weight, bias, x[:2])
    with pytest.raises(TypeError, match=r"h: expected a floating"):
        fastair.linear_bernoulli_log_prob(h.long(), weight, bias, x)


@pytest.mark.slow
def test_compile_fullgraph_equals_eager(backend):
    torch._dynamo.reset()
    h, weight, bias, x = make(3, 4, 6, 9, dtype=torch.float32)
    leaves = [t.requires_grad_(True) for t in (h, weight, bias)]

    def loss(h, w, b):
        return fastair.linear_bernoulli_log_prob(torch.tanh(h), w, b, x).sum()

    with fastair.use_backend(backend):
        eager = loss(*leaves)
        eager_grads = torch.autograd.grad(eager, leaves)
        compiled = torch.compile(loss, fullgraph=True)(*leaves)
        compiled_grads = torch.autograd.grad(compiled, leaves)
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b)
