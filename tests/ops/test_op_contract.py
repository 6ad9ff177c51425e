"""The contract every public op keeps, checked from one table (tests/op_specs.py) under each
fused backend: the values and gradients of the float64 reference, ``torch.library.opcheck`` of
every fastair operator the op dispatches to (schema, fake tensor, autograd registration, AOT
dispatch), gradcheck in float64, ``torch.compile(fullgraph=True)`` equal to eager, and the same
on CUDA where a GPU exists. The edge cases of the table (``EDGES``: -inf log weights and logits,
float32 overflow) hold for every backend, the reference included."""
import pytest
import torch
from compare import assert_matches_reference
from op_specs import BY_NAME, EDGES, SPECS
from torch.utils._python_dispatch import TorchDispatchMode

import fastair

IDS = [spec.name for spec in SPECS]
EDGE_IDS = [case.name for case in EDGES]
ALL_BACKENDS = ("reference", "native", "triton")


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


def _edge_case(case, backend, dtype, device):
    spec = BY_NAME[case.op]
    leaves = [t.requires_grad_(d) for t, d in zip(case.make(dtype, device), spec.differentiable)]
    with fastair.use_backend(backend):
        out = spec.call(*leaves)
    case.expect(out.detach(), _grads(out, leaves, spec), [t.detach() for t in leaves])
    return out


@pytest.mark.parametrize("case", EDGES, ids=EDGE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_edge_cases_on_every_backend(case, dtype, backend):
    """-inf log weights and logits, float32 overflow: the reference (the specification and the
    fallback of a failed C++ build), the C++ kernels and the Triton kernels all give what the
    table says (e.g. gradient 0, never NaN, where an example has no mass; -inf, never +inf,
    where the bound overflows downwards)."""
    if dtype not in case.dtypes:
        pytest.skip(f"{case.name}: not defined for {dtype}")
    _edge_case(case, backend, dtype, "cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("case", EDGES, ids=EDGE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend_name", ["auto", "triton"])
def test_edge_cases_on_cuda(case, dtype, backend_name):
    if dtype not in case.dtypes:
        pytest.skip(f"{case.name}: not defined for {dtype}")
    assert _edge_case(case, backend_name, dtype, "cuda").is_cuda
