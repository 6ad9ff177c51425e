"""Test set-up: without a GPU the Triton kernels run through the interpreter on CPU tensors;
with one they run compiled on CUDA tensors (tests marked ``cuda``), and the interpreter is off.

TRITON_INTERPRET must be set before fastair's Triton kernels are imported (triton.jit reads it
when the kernels are decorated), so it is set here, before any test module imports fastair.
"""
import os

import pytest
import torch

GPU = torch.cuda.is_available()
if not GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"

# Under pytest-xdist (`make test` runs `pytest -n auto`) the workers share the cores: each one, and
# every process a test starts, gets its share of threads, so that no OpenMP pool oversubscribes.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

FUSED = ("native", "triton")


def _uses_interpreter(item):
    """A CPU test that runs the Triton kernels: marked ``interpreter``, or given the ``triton``
    backend as a parameter."""
    if "interpreter" in item.keywords:
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return "cuda" not in item.keywords and "triton" in (params.get("backend"),
                                                        params.get("backend_name"))


def pytest_collection_modifyitems(config, items):
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    no_interpreter = pytest.mark.skip(
        reason="the Triton interpreter is off (TRITON_INTERPRET is not 1, as on a GPU machine, "
               "where the cuda tests run the kernels compiled)")
    for item in items:
        if "cuda" in item.keywords and not GPU:
            item.add_marker(no_gpu)
        elif _uses_interpreter(item) and not INTERPRETER:
            item.add_marker(no_interpreter)


@pytest.fixture(params=FUSED)
def backend(request):
    """Each fused backend in turn (on CPU tensors: C++ kernels, Triton interpreter)."""
    return request.param


@pytest.fixture
def tiny_data(monkeypatch):
    """Replace load_dataset by a tiny random binary data set (the CLI imports it lazily); the
    same on every call for one name, as a real data set is, and other data for another name
    (helpers.tiny_load_dataset)."""
    from helpers import tiny_load_dataset

    import fastair.data
    monkeypatch.setattr(fastair.data, "load_dataset", tiny_load_dataset)
