"""`fastair info` (and `python -m fastair --info`): the fields a bug report needs, without
building or importing anything; `fastair build`: the C++ kernels ahead of time, into the cache
that the ops load them from."""
import os
import subprocess
import sys

import pytest
import torch

from fastair import cli, info
from fastair.backends import native

FIELDS = ("fastair", "python", "torch", "numpy", "triton", "ninja", "c++ compiler",
          "backend setting", "backend on cpu", "backend on cuda", "ops", "C++ kernels",
          "build cache", "threads", "cpu", "cpu flags", "bf16 matmul", "cuda devices")


def _run(args, env_extra, hide_triton=False):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTAIR_BACKEND")}
    env.update(env_extra)
    prefix = "import sys; sys.modules['triton'] = None; " if hide_triton else ""
    code = (prefix + "import runpy, sys; sys.argv = ['fastair'] + sys.argv[1:]; "
            "runpy.run_module('fastair', run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=300)


def _fields(text):
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@pytest.mark.parametrize("args", [["info"], ["--info"]])
def test_info_prints_every_field_and_builds_nothing(tmp_path, args):
    cache = tmp_path / "cache"
    out = _run(args, {"FASTAIR_BUILD_DIR": str(cache)})
    assert out.returncode == 0, out.stderr[-2000:]
    fields = {k.strip(): v.strip() for k, v in _fields(out.stdout).items()}
    for field in FIELDS:
        assert field in fields, field
    assert fields["torch"].startswith(torch.__version__)
    assert fields["C++ kernels"].startswith("not built") and str(cache) in fields["C++ kernels"]
    assert "fastair build" in fields["backend on cpu"]
    assert "building" not in out.stderr
    assert not cache.exists(), "fastair info created the build cache"


def test_info_without_triton_says_so(tmp_path):
    out = _run(["info"], {"FASTAIR_BUILD_DIR": str(tmp_path)}, hide_triton=True)
    assert out.returncode == 0, out.stderr[-2000:]
    fields = {k.strip(): v.strip() for k, v in _fields(out.stdout).items()}
    assert fields["triton"] == "not installed"
    assert fields["backend on cuda"].startswith("reference (triton not installed")
    assert fields["backend on cpu"].startswith("native")


def test_collect_loads_no_kernel_in_a_fresh_process():
    code = ("import sys, torch, fastair.info as i; i.report(); "
            "print(hasattr(torch.ops.fastair_native, 'bernoulli_log_prob_fwd'), "
            "'fastair.kernels' in sys.modules, 'fastair.backends.triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["False", "False", "False"], out.stderr[-2000:]


def test_collect_reports_the_loaded_kernels():
    native.load()
    fields = info.collect()
    assert fields["backend on cpu"] == "native (C++ kernels loaded)"
    assert fields["C++ kernels"].startswith("built") and native.status()["library"] in (
        fields["C++ kernels"])


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """``fastair build`` against an empty cache, with the compiler replaced: ``calls`` records
    the builds; ``fail`` makes the next one raise."""
    from torch.utils import cpp_extension
    calls, state = [], {"fail": None}

    def load(**kwargs):
        if state["fail"]:
            raise RuntimeError(state["fail"])
        calls.append(kwargs)
        name = kwargs["name"]
        open(os.path.join(kwargs["build_directory"], f"{name}.so"), "w").close()

    monkeypatch.setenv("FASTAIR_BUILD_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setattr(torch.ops, "load_library", lambda path: calls.append(path))
    monkeypatch.setattr(native, "_state", {"loaded": False, "error": None})
    return calls, state


def test_build_builds_once_into_the_cache(fake_build, tmp_path, capsys):
    calls, _ = fake_build
    assert cli.main(["build"]) == 0
    captured = capsys.readouterr()
    library = native.status()["library"]
    assert library.startswith(str(tmp_path / "cache")) and os.path.exists(library)
    assert "fastair: building the C++ kernels" in captured.err
    assert "C++ kernels built in" in captured.out and library in captured.out
    assert len(calls) == 1
    assert cli.main(["build"]) == 0  # built already: the library is loaded, nothing compiled
    captured = capsys.readouterr()
    assert "built already" in captured.out and "building" not in captured.err
    assert calls[1:] == [library]


def test_build_failure_exits_1_with_a_sentence(fake_build, capsys):
    _, state = fake_build
    state["fail"] = "Error building extension 'fastair_native'\ng++: not found"
    assert cli.main(["build"]) == 1
    err = capsys.readouterr().err
    assert "fastair build: error: the C++ kernels could not be built" in err
    assert "g++: not found" in err and "Traceback" not in err
