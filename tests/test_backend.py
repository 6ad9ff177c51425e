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
    assert fastair.get_backend() == "auto"
    with fastair.use_backend("reference"):
        assert fastair.get_backend() == "reference"
        with fastair.use_backend("native"):
            assert fastair.get_backend() == "native"
        assert fastair.get_backend() == "reference"
    assert fastair.get_backend() == "auto"


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
        backends._resolve("native", "cuda")


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
            "print(hasattr(torch.ops.fastair_native, 'iwae_bg_fwd'), "
            "'fastair.kernels' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"], out.stderr
