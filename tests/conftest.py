"""Test set-up: the Triton kernels run through the interpreter on CPU tensors.

TRITON_INTERPRET must be set before fastair's Triton kernels are imported (triton.jit reads it
when the kernels are decorated), so it is set here, before any test module imports fastair.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

FUSED = ("native", "triton")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=FUSED)
def backend(request):
    """Each fused backend in turn (on CPU tensors: C++ kernels, Triton interpreter)."""
    return request.param


@pytest.fixture
def tiny_data(monkeypatch):
    """Replace load_dataset by a tiny random binary data set (the CLI imports it lazily); the
    same on every call for one name, as a real data set is, and other data for another name."""

    def load(name, root=None):
        g = torch.Generator().manual_seed(sum(map(ord, name)))

        def split(n):
            return (torch.rand(n, 784, generator=g) < 0.3).float()
        from fastair.data import Splits
        return Splits(name, split(120), split(40), split(40))

    import fastair.data
    monkeypatch.setattr(fastair.data, "load_dataset", load)
