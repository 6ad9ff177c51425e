"""How many device kernels one forward and backward of the fused bound costs on the Triton
backend: Triton launches plus every torch kernel the functional and op layers run (counted
through the interpreter on CPU, where the same Python runs as on CUDA), and no host sync."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile, record_function

import fastair

pytestmark = pytest.mark.interpreter

# aten ops that launch no kernel (allocations, views, metadata), skipped with what they call
_NO_KERNEL = {"empty", "empty_like", "empty_strided", "view", "_unsafe_view", "as_strided",
              "_reshape_alias", "expand", "t", "transpose", "permute", "unsqueeze", "squeeze",
              "select", "slice", "detach", "alias", "lift_fresh", "resolve_conj", "resolve_neg",
              "result_type", "unbind", "split", "chunk", "narrow", "set_"}
# aten ops that only launch what they call (a copy where one is needed)
_THROUGH = {"contiguous", "to", "reshape", "expand_as", "view_as", "type_as"}
_SYNC = {"item", "_local_scalar_dense", "nonzero", "is_nonzero", "equal"}


def _count(events):
    """``(kernels, syncs, names)`` over the profiled event tree."""
    kernels, syncs, names = 0, 0, []

    def walk(ev):
        nonlocal kernels, syncs
        name = ev.name
        if name.startswith("triton_launch::"):
            kernels += 1
            names.append(name)
            return  # the interpreter's own torch calls are not device kernels
        if name.startswith("aten::"):
            op = name[len("aten::"):]
            if op in _SYNC:
                syncs += 1
            if op in _NO_KERNEL:
                return
            if op not in _THROUGH:
                kernels += 1
                names.append(name)
                return
        for child in ev.cpu_children:
            walk(child)

    for ev in events:
        if ev.cpu_parent is None:
            walk(ev)
    return kernels, syncs, names


@pytest.fixture
def counted_launches(monkeypatch):
    from triton.runtime.interpreter import InterpretedFunction
    run = InterpretedFunction.run

    def labelled(self, *args, **kwargs):
        with record_function(f"triton_launch::{self.fn.__name__}"):
            return run(self, *args, **kwargs)
    monkeypatch.setattr(InterpretedFunction, "run", labelled)


def _inputs(k, b, d=784, zd=50):
    g = torch.Generator().manual_seed(k)
    x = (torch.rand(b, d, generator=g) < 0.5).float()
    logits = (torch.randn(k, b, d, generator=g) * 3).requires_grad_()
    z = torch.randn(k, b, zd, generator=g).requires_grad_()
    mu = torch.randn(b, zd, generator=g).requires_grad_()
    logvar = (torch.randn(b, zd, generator=g) * 0.5).requires_grad_()
    return x, logits, z, mu, logvar


@pytest.mark.parametrize("k,b,d", [(64, 100, 128), (8, 100, 33), (1, 7, 33), (600, 4, 33)])
def test_forward_and_backward_take_at_most_six_kernels(counted_launches, k, b, d):
    """k = 64, B = 100 is the training step of the issue (D only changes the kernels' inner
    loop, not how many there are); k = 600 takes the two-launch log-sum-exp and k = 1, 8 the
    single-split backward."""
    x, logits, z, mu, logvar = _inputs(k, b, d)
    grad = torch.randn(b)
    with fastair.use_backend("triton"):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            bound = fastair.iwae_bernoulli_gaussian(x, logits, z, mu, logvar)
            torch.autograd.grad(bound, (logits, z, mu, logvar), grad)
    kernels, syncs, names = _count(prof.events())
    assert syncs == 0, names
    assert kernels <= 6, names
    assert sum(n.startswith("triton_launch::") for n in names) == kernels, names  # no torch


def test_the_log_weights_gradient_adds_no_kernel(counted_launches):
    """``return_log_w``: both gradients go into the same two backward kernels."""
    x, logits, z, mu, logvar = _inputs(64, 100, 33)
    grads = (torch.randn(100), torch.randn(64, 100))
    with fastair.use_backend("triton"):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            bound, log_w = fastair.iwae_bernoulli_gaussian(x, logits, z, mu, logvar,
                                                           return_log_w=True)
            torch.autograd.grad((bound, log_w), (logits, z, mu, logvar), grads)
    kernels, syncs, names = _count(prof.events())
    assert syncs == 0 and kernels <= 5, names


def test_launches_fill_the_gpu_they_are_given(monkeypatch):
    """With the program target of a 132-SM GPU (2 per SM), the long log-sum-exp and the head's
    dweight launch at least that many programs (they launched 20 and 150 at a fixed 128)."""
    from triton.runtime.interpreter import InterpretedFunction

    from fastair.kernels import common
    from fastair.kernels.iwae_bound import iwae_bound_fwd
    from fastair.kernels.linear_bernoulli_log_prob import linear_bernoulli_log_prob_bwd
    monkeypatch.setattr(common, "MIN_PROGRAMS", 264)  # what min_programs gives a 132-SM GPU
    grids = []

    def record(self, *args, grid, **kwargs):
        grids.append((self.fn.__name__, tuple(grid)))
    monkeypatch.setattr(InterpretedFunction, "run", record)
    iwae_bound_fwd(torch.randn(5000, 100))
    h, w, x = torch.randn(6400, 200), torch.randn(784, 200), torch.ones(100, 784)
    linear_bernoulli_log_prob_bwd(torch.randn(6400), h, w, None, x)
    programs = {name: torch.tensor(grid).prod().item() for name, grid in grids}
    assert grids[0][0] == "_logsumexp_kernel" and torch.tensor(grids[0][1]).prod() >= 264
    assert programs["_lb_dw_kernel"] >= 264
