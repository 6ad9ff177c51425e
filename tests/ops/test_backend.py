"""The backend switch: names, the context manager, the environment variable, the fallback."""
import os
import subprocess
import sys
import warnings

import pytest
import torch

import fastair
from fastair import backends
from fastair.backends import native


def test_default_is_auto_and_context_manager_restores():
    assert backends.backend_setting() == "auto"
    with fastair.use_backend("reference"):
        assert backends.backend_setting() == fastair.get_backend() == "reference"
        with fastair.use_backend("native"):
            assert backends.backend_setting() == fastair.get_backend() == "native"
        assert fastair.get_backend() == "reference"
    assert backends.backend_setting() == "auto"


def test_get_backend_names_the_backend_that_runs():
    """Under ``auto`` fastair.get_backend() answers what runs, never ``auto``."""
    assert backends.backend_setting() == "auto"
    assert fastair.get_backend() in ("triton", "native", "reference")
    assert fastair.get_backend() == backends.active_backend(
        "cuda" if torch.cuda.is_available() else "cpu")
    assert backends.active_backend("cpu") == "native"
    assert backends.plan("cpu") == ("native", "C++ kernels loaded")


def test_set_backend_and_bad_names():
    try:
        fastair.set_backend("Triton")
        assert fastair.get_backend() == "triton"
    finally:
        fastair.set_backend("auto")
    with pytest.raises(ValueError, match=r"backend: expected one of"):
        fastair.set_backend("cuda")
    with pytest.raises(ValueError, match=r"backend: expected one of"):
        with fastair.use_backend("fast"):
            pass


def test_auto_uses_native_on_cpu():
    assert backends.resolve("auto", "cpu") == "native"


@pytest.mark.interpreter
def test_triton_runs_on_cpu_through_the_interpreter():
    assert backends.resolve("triton", "cpu") == "triton"


def test_native_refuses_cuda_tensors():
    with pytest.raises(RuntimeError, match=r"CPU tensors only"):
        backends.resolve("native", "cuda")


def test_environment_variable_sets_the_default():
    code = "import fastair; print(fastair.get_backend())"
    env = dict(os.environ, FASTAIR_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "reference", out.stderr
    env["FASTAIR_BACKEND"] = "bogus"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "backend: expected one of" in out.stderr


def test_failed_build_falls_back_to_reference_with_one_warning(monkeypatch):
    monkeypatch.setattr(native, "_state", {"loaded": False, "error": "no compiler"})
    monkeypatch.setattr(backends, "_warned", set())
    logits, x = torch.randn(3, 4), torch.ones(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fastair.bernoulli_log_prob(logits, x)
        fastair.bernoulli_log_prob(logits, x)
    messages = [str(w.message) for w in caught if "unavailable" in str(w.message)]
    assert len(messages) == 1 and "no compiler" in messages[0]
    with fastair.use_backend("reference"):
        torch.testing.assert_close(out, fastair.bernoulli_log_prob(logits, x))
    with pytest.raises(RuntimeError, match=r"could not be built \(no compiler\)"):
        with fastair.use_backend("native"):
            fastair.bernoulli_log_prob(logits, x)


def test_import_builds_nothing():
    code = ("import sys, fastair; import torch; "
            "print(hasattr(torch.ops.fastair_native, 'iwae_bernoulli_gaussian_fwd'), "
            "'fastair.kernels' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_without_triton_nothing_imports_it_and_the_ops_run():
    """With triton absent (None in sys.modules: ``import triton`` fails), fastair imports, runs
    an op on the C++ kernels, says what ``auto`` does on CUDA tensors, and never sets
    TRITON_INTERPRET nor imports its Triton kernels."""
    code = """if True:
        import sys, warnings
        sys.modules["triton"] = None
        import torch, fastair
        from fastair import backends
        x = torch.zeros(2, 3)
        print(float(fastair.bernoulli_log_prob(x, x).sum()) < 0)
        print(backends.active_backend("cpu"))
        print(backends.plan("cuda")[0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(backends.resolve("auto", "cuda"))
        print(any("triton" in str(w.message) for w in caught))
        try:
            with fastair.use_backend("triton"):
                fastair.bernoulli_log_prob(x, x)
        except RuntimeError as err:
            print("not installed" in str(err))
        import os
        print("TRITON_INTERPRET" in os.environ, "fastair.kernels" in sys.modules,
              "fastair.backends.triton" in sys.modules)
    """
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTAIR_BACKEND")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "native", "reference", "reference", "True", "True",
                                  "False", "False", "False"], (out.stdout, out.stderr[-2000:])
