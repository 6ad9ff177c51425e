"""The contract every public op keeps, checked from one table (tests/op_specs.py) under each
fused backend: the values and gradients of the float64 reference, ``torch.library.opcheck`` of
every fastair operator the op dispatches to (schema, fake tensor, autograd registration, AOT
dispatch), gradcheck in float64, ``torch.compile(fullgraph=True)`` equal to eager, and the same
on CUDA where a GPU exists."""
import pytest
import torch
from compare import assert_matches_reference
from op_specs import SPECS
from torch.utils._python_dispatch import TorchDispatchMode

import fastair

IDS = [spec.name for spec in SPECS]


class _FastairCalls(TorchDispatchMode):
    """Records each call of a ``fastair::`` operator with its arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "fastair":
            self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def _leaves(spec, dtype=torch.float64, device="cpu"):
    return [t.requires_grad_(d) for t, d in zip(spec.inputs(dtype, device), spec.differentiable)]


def _grads(out, leaves, spec):
    wrt = [t for t, d in zip(leaves, spec.differentiable) if d]
    return torch.autograd.grad(out.sum(), wrt)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_the_reference(spec, backend, dtype):
    assert_matches_reference(backend, spec.call, spec.inputs(dtype), spec.differentiable)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_opcheck_of_every_operator_it_dispatches_to(spec, backend):
    leaves = _leaves(spec)
    with fastair.use_backend(backend), _FastairCalls() as recorder:
        _grads(spec.call(*leaves), leaves, spec)
    names = [func.name() for func, _, _ in recorder.calls]
    assert any(not n.endswith("_backward") for n in names), names  # the fused forward ran
    assert any(n.endswith("_backward") for n in names), names  # and its fused backward
    for func, args, kwargs in recorder.calls:
        if func.name().endswith("_backward"):  # no double backward: check it as a plain op
            args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        torch.library.opcheck(func, args, kwargs)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_gradcheck_in_float64(spec, backend):
    with fastair.use_backend(backend):
        assert torch.autograd.gradcheck(spec.call, _leaves(spec), eps=1e-6, atol=1e-6,
                                        rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_compile_fullgraph_equals_eager(spec, backend):
    torch._dynamo.reset()
    leaves = _leaves(spec, torch.float32)
    with fastair.use_backend(backend):
        eager = spec.call(*leaves)
        eager_grads = _grads(eager, leaves, spec)
        compiled = torch.compile(spec.call, fullgraph=True)(*leaves)
        compiled_grads = _grads(compiled, leaves, spec)
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.cuda
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend_name", ["auto", "triton"])
def test_on_cuda(spec, dtype, backend_name):
    inputs = [t.cuda() for t in spec.inputs(dtype)]
    out, _ = assert_matches_reference(backend_name, spec.call, inputs, spec.differentiable)
    assert out.is_cuda
    leaves = _leaves(spec, torch.float32, "cuda")
    with fastair.use_backend(backend_name):
        compiled = torch.compile(spec.call, fullgraph=True)(*leaves)
        torch.testing.assert_close(compiled, spec.call(*leaves))
