"""Denormal floats (docs/design.md §1.12): the C++ kernels flush them inside their own parallel
regions, write gradients below 2^-100 as exact zeros, and leave the caller's floating-point mode
as they found it; fastair's commands flush for the whole process unless told not to, importing
fastair never does."""
import subprocess
import sys

import pytest
import torch

import fastair
from fastair.backends import reference, use_backend
from fastair.cli import build_parser
from fastair.precision import flush_denormals, flushing_denormals

TINY = torch.finfo(torch.float32).tiny
FLUSH = 2.0 ** -100  # the documented cut of the kernels' gradients


def _denormals(t):
    return int(((t != 0) & (t.abs() < TINY)).sum())


def _hostile_inputs(k=16, B=6, D=40, Z=5, seed=0):
    """Logits of size 88-100 that predict every pixel (``x - sigmoid(l)`` ~ 1e-40) except
    ``j % 4`` pixels of sample ``j``: log weights ~90 nats apart, so the normalized weights of
    all but the best sample, and their products, fall through the denormal range."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, D, generator=g) < 0.4).double()
    sign = (2 * x - 1).expand(k, B, D).clone()
    for j in range(k):
        sign[j, :, :j % 4] *= -1
    logits = sign * (88 + 12 * torch.rand(k, B, D, generator=g, dtype=torch.float64))
    z = torch.randn(k, B, Z, generator=g, dtype=torch.float64)
    mu = torch.randn(B, Z, generator=g, dtype=torch.float64) * 0.1
    logvar = torch.randn(B, Z, generator=g, dtype=torch.float64) * 0.1
    return x, logits, z, mu, logvar


def _grads(fn, inputs, dtype):
    x, *rest = [t.to(dtype) for t in inputs]
    leaves = [t.clone().requires_grad_(True) for t in rest]
    out = fn(x, *leaves)
    return out.detach(), torch.autograd.grad(out.sum(), leaves)


def test_hostile_inputs_do_produce_denormals_in_plain_torch():
    """The inputs are what the other tests claim: float32 autograd of the reference maths makes
    denormal gradients from them (else the tests below could not fail)."""
    with use_backend("reference"):
        _, grads = _grads(fastair.iwae_bernoulli_gaussian, _hostile_inputs(), torch.float32)
    assert _denormals(grads[0]) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_bound_flushes_and_matches_reference(dtype):
    x, logits, z, mu, logvar = _hostile_inputs()
    cast = (x.float(), logits.to(dtype), z.float(), mu.float(), logvar.float())
    ref_out, ref_grads = _grads(reference.iwae_bernoulli_gaussian, cast, torch.float64)
    with use_backend("native"):
        out, grads = _grads(fastair.iwae_bernoulli_gaussian, cast, torch.float32) if (
            dtype == torch.float32) else _grads_mixed(cast)
    assert torch.allclose(out.double(), ref_out, rtol=1e-6, atol=1e-3)
    for name, g, r in zip(("logits", "z", "mu", "logvar"), grads, ref_grads):
        assert _denormals(g.float()) == 0, name
        # below the cut: exact zero; above it: the reference within float32 rounding (of the
        # result, and of the cancellation in dz = G ((z - mu) / var - z): relative to the max)
        tol = 1e-5 * r.abs() + 1e-6 * r.abs().max() + FLUSH
        assert ((g.double() - r).abs() <= tol).all(), name
    small = ref_grads[0].abs() < FLUSH
    assert small.any() and (grads[0][small] == 0).all()


def _grads_mixed(cast):
    x, logits, z, mu, logvar = cast
    leaves = [t.clone().requires_grad_(True) for t in (logits, z, mu, logvar)]
    out = fastair.iwae_bernoulli_gaussian(x, *leaves)
    return out.detach(), torch.autograd.grad(out.sum(), leaves)


@pytest.mark.parametrize("op", ["bernoulli_log_prob", "iwae_bound", "linear_bernoulli_log_prob"])
def test_other_kernels_write_no_denormal_gradients(op):
    x, logits, *_ = _hostile_inputs()
    if op == "bernoulli_log_prob":
        args, fn = [logits.float()], lambda l: fastair.bernoulli_log_prob(l, x.float())
    elif op == "iwae_bound":  # log weights ~90 nats apart: softmax weights below 1e-38
        lw = reference.bernoulli_log_prob(logits, x).float()
        args, fn = [lw], lambda v: fastair.iwae_bound(v, dim=0)
    else:  # a head whose logits are large and right: h [k, B, 1] of +-1, weight of 90
        h = (2 * x - 1).float()[None].expand(4, -1, -1)[..., :1].contiguous()
        weight = torch.full((x.shape[1], 1), 90.0)
        args = [h, weight]
        fn = lambda h, w: fastair.linear_bernoulli_log_prob(h, w, None, x.float())  # noqa: E731
    leaves = [a.clone().requires_grad_(True) for a in args]
    with use_backend("native"):
        out = fn(*leaves)
        grads = torch.autograd.grad(out.sum(), leaves)
    leaves64 = [a.double().requires_grad_(True) for a in args]
    with use_backend("reference"):
        ref = torch.autograd.grad(fn(*leaves64).sum(), leaves64)
    for g, r in zip(grads, ref):
        assert _denormals(g) == 0
        assert ((g.double() - r).abs() <= 1e-5 * r.abs() + FLUSH).all()


@pytest.mark.parametrize("caller_flushes", [False, True])
def test_kernels_restore_the_callers_mode(caller_flushes):
    before = flushing_denormals()
    try:
        torch.set_flush_denormal(caller_flushes)
        if flushing_denormals() != caller_flushes:
            pytest.skip("this CPU cannot flush denormals (torch.set_flush_denormal)")
        inputs = [t.float() for t in _hostile_inputs()]
        with use_backend("native"):
            _grads(fastair.iwae_bernoulli_gaussian, inputs, torch.float32)
            fastair.bernoulli_log_prob(inputs[1], inputs[0])
        assert flushing_denormals() == caller_flushes
    finally:
        torch.set_flush_denormal(before)


def test_flush_denormals_context_restores():
    before = flushing_denormals()
    with flush_denormals(True):
        if not flushing_denormals():
            pytest.skip("this CPU cannot flush denormals (torch.set_flush_denormal)")
        with flush_denormals(False):
            assert not flushing_denormals()
        assert flushing_denormals()
    assert flushing_denormals() == before


def test_every_command_has_keep_denormals():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        assert "--keep-denormals" in command._option_string_actions, name


def test_import_does_not_change_the_mode():
    code = ("import fastair, fastair.nn, fastair.evaluation, fastair.training, fastair.cli\n"
            "from fastair.precision import flushing_denormals\n"
            "import torch\n"
            "fastair.bernoulli_log_prob(torch.randn(3, 4), torch.ones(3, 4))\n"
            "print(flushing_denormals())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
