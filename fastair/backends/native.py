"""The ``native`` backend: C++ CPU kernels from csrc/, compiled once per machine and cached.

Every ``csrc/cpu/*.cpp`` is compiled into one library, and each source registers its own
operators (``TORCH_LIBRARY_FRAGMENT(fastair_native, ...)``), so adding a kernel edits no list
here: after :func:`load`, ``native.NAME`` is the operator ``torch.ops.fastair_native.NAME``.

The build goes to ``$FASTAIR_BUILD_DIR`` (default ``~/.cache/fastair``), in a folder named after
the torch version, the CPU's SIMD level and a hash of the sources and flags (:func:`status` says
which, without building). Once that folder holds the library it is loaded directly, without
running ninja again: another ``ninja`` on PATH or another checkout of the same sources (whose
build files name other absolute paths) does not cause a rebuild.

When the build happens:

1. Ahead of time, by the install: ``fastair build`` (or ``python -m fastair build``, or
   :func:`build`) compiles the kernels into that very cache, so that the first op finds them.
   ``make install`` (and so ``make test`` and ``make demo``) runs it after ``pip install -e``;
   after a plain ``pip install fastair``, run ``fastair build`` once. setup.py does not build:
   with pip's build isolation torch is not importable there, and listing torch among the build
   requirements would download another (CUDA) torch just to build.
2. As a fallback, just in time: the first op on CPU tensors builds whatever is missing (new
   sources, another torch or CPU). The build prints one line to stderr when it starts (what,
   where, about how long: about a minute on two cores) and one when it ends (the seconds), and
   processes that start together build once (a file lock).

Where the build fails (no C++ compiler, no ninja), ``auto`` falls back to the pure-torch
reference with one warning. ninja comes with fastair (a dependency: the ``ninja`` wheel, used
when no ``ninja`` is on PATH); the compiler is the system's (``c++``, e.g. g++).
"""
import hashlib
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

import torch

_SIMD_FLAGS = {  # what torch.compile's C++ code generator uses for the same levels
    "AVX512": ["-DCPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw",
               "-mfma"],
    "AVX2": ["-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma", "-mf16c"],
}
_state = {"loaded": False, "error": None}


def source_dir():
    """The folder holding the C++ sources (``csrc/cpu`` of the repository or the install)."""
    spec = importlib.util.find_spec("fastair.csrc")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastair.csrc (the C++ sources) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "cpu"


def _simd_level():
    try:
        level = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover - torch without the query
        level = "DEFAULT"
    return "AVX512" if level.startswith("AVX512") else level if level in _SIMD_FLAGS else "DEFAULT"


def cache_root():
    """The folder of the build cache: ``$FASTAIR_BUILD_DIR`` or ``~/.cache/fastair``."""
    return Path(os.environ.get("FASTAIR_BUILD_DIR") or Path.home() / ".cache" / "fastair")


def _target():
    """What a build of the current sources makes, computed without building or creating
    anything: ``(name, build_dir, library, sources, flags)``."""
    folder = source_dir()
    sources = sorted(folder.glob("*.cpp"))
    files = sources + sorted(folder.glob("*.h"))
    simd = _simd_level()
    flags = ["-O3", "-fopenmp", "-DNDEBUG"] + _SIMD_FLAGS.get(simd, [])
    digest = hashlib.sha256(" ".join([torch.__version__] + flags).encode())
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    name = f"fastair_native_{simd.lower()}_{digest.hexdigest()[:12]}"
    build_dir = cache_root() / f"torch-{torch.__version__}" / name
    return name, build_dir, build_dir / f"{name}.so", sources, flags


def status():
    """Where the C++ kernels stand, without building or loading anything (for ``fastair info``):
    a dict with ``library`` (the path the build makes, or None without sources), ``built`` (that
    file exists), ``loaded`` (in this process), ``error`` (why a build or load here failed, or
    None) and ``simd`` (the SIMD level the kernels are compiled for)."""
    try:
        _, _, library, _, _ = _target()
    except (RuntimeError, OSError) as err:
        return {"library": None, "built": False, "loaded": _state["loaded"],
                "error": _state["error"] or str(err), "simd": _simd_level()}
    return {"library": str(library), "built": library.exists(), "loaded": _state["loaded"],
            "error": _state["error"], "simd": _simd_level()}


def _ninja_on_path():
    """Put the ``ninja`` of the ``ninja`` wheel on PATH when no ``ninja`` is there (a venv's
    ``bin`` is not on PATH when its python is run by path); torch runs ``ninja`` by name."""
    if shutil.which("ninja"):
        return
    folders = [Path(sys.executable).parent]
    try:
        import ninja
        folders.insert(0, Path(ninja.BIN_DIR))
    except (ImportError, AttributeError):
        pass
    for folder in folders:
        if shutil.which("ninja", path=str(folder)):
            os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
            return


def load_or_build(jit=True):
    """Load the library of the current sources, building it first if the cache lacks it
    (``jit``: on first use, rather than by :func:`build`). Returns ``(library path, seconds
    spent building or None when it was built before)``."""
    from torch.utils import cpp_extension

    name, build_dir, library, sources, flags = _target()
    if library.exists():  # built before from these very sources and flags
        torch.ops.load_library(str(library))
        return library, None
    build_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(build_dir):
        if library.exists():  # another process built it while this one waited
            torch.ops.load_library(str(library))
            return library, None
        ahead = "; `fastair build` does it ahead of time" if jit else ""
        print(f"fastair: building the C++ kernels (once per machine and torch version, about a "
              f"minute{ahead}) in {build_dir}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        _ninja_on_path()
        try:
            cpp_extension.load(name=name, sources=[str(f) for f in sources],
                               extra_cflags=flags, extra_ldflags=["-fopenmp"],
                               build_directory=str(build_dir), is_python_module=False,
                               verbose=False)
        except BaseException:
            print(f"fastair: the C++ kernel build failed after "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            raise
        seconds = time.perf_counter() - start
        print(f"fastair: C++ kernels built in {seconds:.0f} s", file=sys.stderr, flush=True)
        return library, seconds


class _build_lock:
    """An exclusive ``flock`` on ``build_dir/.build.lock`` (no-op where fcntl is missing)."""

    def __init__(self, build_dir):
        self.path = Path(build_dir) / ".build.lock"

    def __enter__(self):
        self.file = open(self.path, "a")
        try:
            import fcntl
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        return self

    def __exit__(self, *exc):
        self.file.close()


def load():
    """Build (first time) and load the C++ kernels; raise RuntimeError if that is impossible."""
    if _state["loaded"]:
        return
    if _state["error"] is None:
        try:
            load_or_build()
            _state["loaded"] = True
            return
        except Exception as err:  # compiler missing, build error: remember, do not retry
            _state["error"] = f"{type(err).__name__}: {_last_line(err)}"
    raise RuntimeError(f"the C++ kernels could not be built ({_state['error']})")


def _last_line(err):
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else ""


def build():
    """Build the C++ kernels now, unless the cache already holds them, and load them: what
    ``fastair build`` runs. Returns ``(library path, seconds spent building or None when it was
    built before)``; raises the build's own error (with the compiler's output) on failure."""
    library, seconds = load_or_build(jit=False)
    _state["loaded"], _state["error"] = True, None
    return library, seconds


def __getattr__(name):
    """``native.bernoulli_log_prob_fwd`` etc.: the registered operator, after building and
    loading."""
    if name.startswith("_"):
        raise AttributeError(name)
    load()
    try:
        return getattr(torch.ops.fastair_native, name)
    except (AttributeError, RuntimeError):
        raise AttributeError(f"the C++ kernels register no operator {name!r} (see "
                             f"csrc/cpu/*.cpp)") from None
