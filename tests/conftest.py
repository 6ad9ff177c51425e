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
