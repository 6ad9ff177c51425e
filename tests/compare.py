"""Run an op under a fused backend and under the float64 reference; compare values and grads."""
import torch

import fastair

# (rtol, atol) of a backend's result against the float64 reference, by the inputs' dtype.
TOLERANCE = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (2e-5, 2e-4),
    torch.float16: (2e-3, 2e-2),
    torch.bfloat16: (1.6e-2, 1.5e-1),
}


def _run(backend, fn, inputs, differentiable, grad_seed, dtype_of_ref=None):
    ins = []
    for t, diff in zip(inputs, differentiable):
        if isinstance(t, torch.Tensor):
            t = t.detach().clone()
            if dtype_of_ref is not None and t.is_floating_point():
                t = t.to(dtype_of_ref)
            t.requires_grad_(diff)
        ins.append(t)
    with fastair.use_backend(backend):
        out = fn(*ins)
    gen = torch.Generator(device=out.device).manual_seed(grad_seed)
    upstream = torch.rand(out.shape, generator=gen, device=out.device, dtype=torch.float64) + 0.5
    wrt = [t for t, diff in zip(ins, differentiable) if diff]
    grads = torch.autograd.grad((out * upstream.to(out.dtype)).sum(), wrt) if wrt else ()
    return out, grads


def assert_matches_reference(backend, fn, inputs, differentiable, tol_dtype=None, seed=0):
    """``fn(*inputs)`` under ``backend`` equals the float64 reference, values and gradients.

    ``differentiable[i]`` says whether input i gets a gradient; ``tol_dtype`` picks the
    tolerance (default: the dtype of the first floating input).
    """
    tol_dtype = tol_dtype or next(t.dtype for t in inputs if isinstance(t, torch.Tensor))
    rtol, atol = TOLERANCE[tol_dtype]
    out, grads = _run(backend, fn, inputs, differentiable, seed)
    ref, ref_grads = _run("reference", fn, inputs, differentiable, seed, torch.float64)
    expected_dtype = torch.float64 if tol_dtype == torch.float64 else torch.float32
    assert out.dtype == expected_dtype, f"output dtype {out.dtype}, expected {expected_dtype}"
    assert out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol, equal_nan=True)
    for i, (g, r, t) in enumerate(zip(grads, ref_grads, [t for t, d in zip(inputs, differentiable)
                                                          if d])):
        assert g.dtype == t.dtype and g.shape == t.shape, f"gradient {i}: {g.dtype} {g.shape}"
        torch.testing.assert_close(g.double(), r, rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m, i=i: f"gradient {i}: {m}")
    return out, grads


def assert_as_accurate_as_reference(backend, fn, inputs, differentiable, factor=4.0, seed=0):
    """For ill-conditioned inputs in float32: the backend's error against the float64 reference
    is at most ``factor`` times that of the pure-torch reference run in the inputs' own dtype
    (plus a float32-rounding floor), for the value and every gradient."""
    out, grads = _run(backend, fn, inputs, differentiable, seed)
    low, low_grads = _run("reference", fn, inputs, differentiable, seed)
    ref, ref_grads = _run("reference", fn, inputs, differentiable, seed, torch.float64)
    for name, a, b, r in [("value", out, low, ref)] + [
            (f"gradient {i}", g, lg, rg) for i, (g, lg, rg) in
            enumerate(zip(grads, low_grads, ref_grads))]:
        assert torch.isfinite(a).all(), f"{name}: not finite"
        err = (a.double() - r).abs().max().item()
        ref_err = (b.double() - r).abs().max().item()
        floor = 1e-6 * (1 + r.abs().max().item())
        assert err <= factor * ref_err + floor, (
            f"{name}: error {err:.3g} against float64, the float32 reference has {ref_err:.3g}")
    return out, grads
