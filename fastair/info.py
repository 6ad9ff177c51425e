"""``fastair info`` (also ``python -m fastair --info``): what a bug report needs, in one screen.

Versions (python, torch, numpy, triton, ninja, the C++ compiler, fastair), the backend the ops
use on each device type and why, whether the C++ kernels are built and where, threads, the CPU
(model, SIMD level, the AVX-512 / AMX / bf16 flags) and the CUDA devices.

Gathering it builds nothing, loads no kernel and imports no Triton (:func:`fastair.backends.plan`
and :func:`fastair.backends.native.status` answer from the file system), so it is safe to run
first on a broken install.
"""
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys

import torch

__all__ = ["collect", "report", "CPU_FLAGS"]

CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
"""The ``/proc/cpuinfo`` flags that matter to the kernels and to bf16 speed (Linux x86)."""


def _version(dist):
    """The installed version of distribution ``dist``, read from its metadata (not imported)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _triton():
    try:
        found = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return "not installed"
    return _version("triton") or _version("pytorch-triton") or "installed, version unknown"


def _ninja():
    path = shutil.which("ninja")
    version = _version("ninja")
    if path is None and version is None:
        return "not found (the C++ kernels cannot be built: pip install ninja)"
    parts = [version or "not pip-installed"]
    if path:
        parts.append(f"on PATH: {path}")
    return ", ".join(parts)


def _compiler():
    cxx = os.environ.get("CXX")
    if cxx and not shutil.which(cxx):
        return f"CXX={cxx} not found (the C++ kernels cannot be built)"
    for name in (cxx, "c++", "g++", "clang++"):
        path = name and shutil.which(name)
        if not path:
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
            first = (out.stdout or out.stderr).strip().splitlines()
            return f"{path} ({first[0].strip()})" if first else path
        except (OSError, subprocess.SubprocessError):
            return path
    return "not found (the C++ kernels cannot be built)"


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags_report():
    from fastair.precision import cpu_flags

    present = cpu_flags()
    if not present:
        return "unknown (no /proc/cpuinfo)"
    have = " ".join(f for f in CPU_FLAGS if f in present) or "none"
    lack = " ".join(f for f in CPU_FLAGS if f not in present)
    return have + (f" (not: {lack})" if lack else "")


def _threads():
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    env = ", ".join(f"{v}={os.environ[v]}" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
                    if v in os.environ) or "OMP_NUM_THREADS unset"
    return (f"torch {torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} "
            f"inter-op; {usable} of {os.cpu_count()} CPUs usable; {env}")


def _cuda():
    if not torch.cuda.is_available():
        built = torch.version.cuda
        return "none" + (f" (torch built with CUDA {built}, no device visible)" if built
                         else " (a CPU build of torch)")
    names = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        names.append(f"{i}: {p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB)")
    return (f"{len(names)} (CUDA {torch.version.cuda}, bf16 "
            f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}): " + "; ".join(names))


def _backend_line(device_type):
    from fastair.backends import plan

    backend, note = plan(device_type)
    return f"{backend or 'none'}" + (f" ({note})" if note else "")


def _kernels():
    from fastair.backends import native

    st = native.status()
    if st["library"] is None:
        return f"no C++ sources found ({st['error']})"
    if st["error"]:
        return f"failed in this process ({st['error']}); expected at {st['library']}"
    if st["built"]:
        return f"built ({st['simd']}): {st['library']}"
    return (f"not built ({st['simd']}): `fastair build` builds them (about a minute), else the "
            f"first op on CPU tensors does; they will be at {st['library']}")


def collect():
    """The report as ``{field: text}``, in print order. Builds and imports nothing."""
    import numpy

    import fastair
    from fastair import functional
    from fastair.backends import backend_setting
    from fastair.precision import native_bf16

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover - older torch
        capability = "unknown"
    setting = backend_setting()
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    source = ("FASTAIR_BACKEND" if os.environ.get("FASTAIR_BACKEND") else "default")
    info = {
        "fastair": f"{fastair.__version__} ({os.path.dirname(fastair.__file__)})",
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "torch": f"{torch.__version__} ({build} build)",
        "numpy": numpy.__version__,
        "triton": _triton(),
        "ninja": _ninja(),
        "c++ compiler": _compiler(),
        "backend setting": f"{setting} ({source})",
        "backend on cpu": _backend_line("cpu"),
        "backend on cuda": (_backend_line("cuda") if torch.cuda.is_available()
                            else f"{_backend_line('cuda')} [no CUDA device here]"),
        "ops": ", ".join(functional.__all__) + " (each on the backend of its tensors' device)",
        "C++ kernels": _kernels(),
        "build cache": str(_build_root()),
        "threads": _threads(),
        "cpu": f"{_cpu_model()} ({platform.machine()}); torch CPU capability {capability}",
        "cpu flags": _cpu_flags_report(),
        "bf16 matmul": ("native (AVX512-BF16 or AMX)" if native_bf16("cpu")
                        else "emulated on this CPU (bf16 slower than fp32)"),
        "cuda devices": _cuda(),
    }
    interpret = os.environ.get("TRITON_INTERPRET")
    if interpret is not None:
        info["TRITON_INTERPRET"] = interpret
    return info


def _build_root():
    from fastair.backends import native

    return native.cache_root()


def report():
    """The report as text: one ``field: value`` line each."""
    info = collect()
    width = max(len(k) for k in info) + 1
    return "\n".join(f"{k + ':':<{width}} {v}" for k, v in info.items())


def main():
    """Print :func:`report`; returns 0."""
    print(report())
    return 0
