"""The ``native`` backend: C++ CPU kernels from csrc/, built with ninja on first use and cached.

Every ``csrc/cpu/*.cpp`` is compiled into one library, and each source registers its own
operators (``TORCH_LIBRARY_FRAGMENT(fastair_native, ...)``), so adding a kernel edits no list
here: after :func:`load`, ``native.NAME`` is the operator ``torch.ops.fastair_native.NAME``.

The build goes to ``$FASTAIR_BUILD_DIR`` (default ``~/.cache/fastair``), in a folder named after
the torch version, the CPU's SIMD level and a hash of the sources and flags. Once that folder
holds the library it is loaded directly, without running ninja again: another ``ninja`` on PATH
or another checkout of the same sources (whose build files name other absolute paths) does not
cause a rebuild. A build prints a line when it starts and one when it ends (it takes about a
minute on two cores), and processes that start together build once (a file lock).
"""
import hashlib
import importlib.util
import os
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


def _build():
    from torch.utils import cpp_extension

    folder = source_dir()
    sources = sorted(folder.glob("*.cpp"))
    files = sources + sorted(folder.glob("*.h"))
    simd = _simd_level()
    flags = ["-O3", "-fopenmp", "-DNDEBUG"] + _SIMD_FLAGS.get(simd, [])
    digest = hashlib.sha256(" ".join([torch.__version__] + flags).encode())
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    name = f"fastair_native_{simd.lower()}_{digest.hexdigest()[:12]}"
    root = Path(os.environ.get("FASTAIR_BUILD_DIR", Path.home() / ".cache" / "fastair"))
    build_dir = root / f"torch-{torch.__version__}" / name
    build_dir.mkdir(parents=True, exist_ok=True)
    library = build_dir / f"{name}.so"
    if library.exists():  # built before from these very sources and flags
        torch.ops.load_library(str(library))
        return
    with _build_lock(build_dir):
        if library.exists():  # another process built it while this one waited
            torch.ops.load_library(str(library))
            return
        print(f"fastair: building the C++ kernels (once per machine and torch version, about a "
              f"minute) in {build_dir}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        cpp_extension.load(name=name, sources=[str(f) for f in sources],
                           extra_cflags=flags, extra_ldflags=["-fopenmp"],
                           build_directory=str(build_dir), is_python_module=False,
                           verbose=False)
        print(f"fastair: C++ kernels built in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)


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
            _build()
            _state["loaded"] = True
            return
        except Exception as err:  # compiler missing, build error: remember, do not retry
            _state["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1]}"
    raise RuntimeError(f"the C++ kernels could not be built ({_state['error']})")


def __getattr__(name):
    """``native.bernoulli_fwd`` etc.: the registered operator, after building and loading."""
    if name.startswith("_"):
        raise AttributeError(name)
    load()
    try:
        return getattr(torch.ops.fastair_native, name)
    except (AttributeError, RuntimeError):
        raise AttributeError(f"the C++ kernels register no operator {name!r} (see "
                             f"csrc/cpu/*.cpp)") from None
