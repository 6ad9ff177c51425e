#!/usr/bin/env python
"""Every Triton kernel of fastair compiled for a real GPU, on a machine without one.

The launchers of ``fastair.kernels`` run on CPU tensors of realistic shapes, in each dtype they
accept, with ``JITFunction.run`` replaced by a recorder: each launch gives the kernel, its
argument types and its constexprs. Each distinct launch is then compiled by ``triton.compile``
for ``GPUTarget("cuda", arch, 32)`` (sm_90 and sm_80 by default) with the ``ptxas`` of the
Triton wheel; ``ptxas -v`` gives registers and spills, ``cuobjdump -sass`` the instructions.
For the kernels that stream the logits, the instructions of the loop over D are divided by the
logits one thread handles per iteration (``BLOCK_R * BLOCK_D / (32 * num_warps)``): the
instructions per logit.

    python -m bench.compiled_kernels                       # table on stdout
    python -m bench.compiled_kernels --json out.json --arch 90
    python -m bench.compiled_kernels --out bench/results   # compiled_kernels.md and .csv

Must run without ``TRITON_INTERPRET=1`` (the kernels are compiled, not interpreted).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import torch

from bench.common import command_line, machine_line, write_results

COLUMNS = ("kernel", "arch", "signature", "num_warps", "registers", "spill_stores",
           "spill_loads", "shared", "sass", "loop_sass", "logits_per_iteration",
           "sass_per_logit", "mma")
_DTYPES = {torch.float32: "fp32", torch.float64: "fp64", torch.float16: "fp16",
           torch.bfloat16: "bf16", torch.int32: "i32", torch.int64: "i64"}
# kernels whose inner loop streams the logits [BLOCK_R, BLOCK_D] per iteration
STREAMING = ("_iwae_bg_fwd_kernel", "_bernoulli_fwd_kernel", "_bernoulli_bwd_kernel")


def cuda_target_available():
    """``(True, "")`` where the installed Triton can compile for CUDA here, else
    ``(False, why)``."""
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.backends.nvidia import compiler  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means no CUDA target
        return False, f"the installed Triton cannot target CUDA ({err})"
    if not os.path.exists(_tool("ptxas")):
        return False, f"no ptxas in the Triton wheel ({_tool('ptxas')})"
    return True, ""


def _tool(name):
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _cases():
    """``(label, launcher call)`` pairs: every launcher at realistic shapes and dtypes."""
    from fastair.kernels import bernoulli_log_prob as bern
    from fastair.kernels import capped_weight_norm as cwn
    from fastair.kernels import gaussian_log_prob as gauss
    from fastair.kernels import iwae_bernoulli_gaussian as iwae
    from fastair.kernels import iwae_bound as bound
    from fastair.kernels import linear_bernoulli_log_prob as lin
    from fastair.kernels import linear_head as head
    out = []
    k, b, d, z_dim = 64, 100, 784, 50
    for acc in (torch.float32, torch.float64):
        logit_types = [acc] + ([torch.float16, torch.bfloat16] if acc == torch.float32 else [])
        x = torch.zeros(b, d, dtype=acc)
        z, mu, lv = (torch.zeros(k, b, z_dim, dtype=acc), torch.zeros(b, z_dim, dtype=acc),
                     torch.zeros(b, z_dim, dtype=acc))
        g = torch.zeros(k, b, dtype=acc)
        for lt in logit_types:
            logits = torch.zeros(k, b, d, dtype=lt)
            out += [(f"iwae_bernoulli_gaussian_fwd {lt}", lambda lg=logits, x=x, z=z, mu=mu, lv=lv:
                     iwae.iwae_bernoulli_gaussian_fwd(x, lg, z, mu, lv)),
                    (f"iwae_bernoulli_gaussian_bwd {lt}",
                     lambda lg=logits, x=x, z=z, mu=mu, lv=lv, g=g: (
                         iwae.iwae_bernoulli_gaussian_bwd(g[0], None, g, g[0], x, lg, z, mu, lv),
                         iwae.iwae_bernoulli_gaussian_bwd(g[0], g, g, g[0], x, lg, z, mu, lv))),
                    (f"bernoulli_log_prob_fwd {lt}", lambda lg=logits, x=x:
                     bern.bernoulli_log_prob_fwd(lg, x)),
                    (f"bernoulli_log_prob_bwd {lt}", lambda lg=logits, x=x, g=g:
                     bern.bernoulli_log_prob_bwd(g, lg, x))]
        out += [(f"gaussian_log_prob {acc}", lambda z=z, mu=mu, lv=lv, g=g:
                 (gauss.gaussian_log_prob_fwd(z, mu, lv),
                  gauss.gaussian_log_prob_bwd(g, z, mu, lv)))]
        for n in (64, 5000):
            v = torch.zeros(n, b, dtype=acc)
            out += [(f"iwae_bound n={n} {acc}", lambda v=v: (
                bound.iwae_bound_fwd(v), bound.iwae_bound_bwd(v[0], v, v[0])))]
        for shape in ((200, 784), (784, 200), (4096, 4096)):
            for vt in logit_types:
                v, u = torch.zeros(shape, dtype=vt), torch.zeros(shape[0], dtype=acc)
                out += [(f"capped_weight_norm {shape} {vt}", lambda v=v, u=u: (
                    cwn.capped_weight_norm_fwd(v, u, 1.0),
                    cwn.capped_weight_norm_bwd(v, v, u, u, 1.0)))]
        for rows in (6400, 100):
            h, w = torch.zeros(rows, 200, dtype=acc), torch.zeros(d, 200, dtype=acc)
            bias, gr = torch.zeros(d, dtype=acc), torch.zeros(rows, dtype=acc)
            for with_bias in (bias, None):
                out += [(f"linear_bernoulli_log_prob R={rows} {acc}",
                         lambda h=h, w=w, bb=with_bias, x=x, gr=gr: (
                             lin.linear_bernoulli_log_prob_fwd(h, w, bb, x),
                             lin.linear_bernoulli_log_prob_bwd(gr, h, w, bb, x)))]
            if acc == torch.float32:  # the user allows TF32: tl.dot on the tensor cores
                out += [(f"linear_bernoulli_log_prob R={rows} tf32",
                         lambda h=h, w=w, bb=bias, x=x, gr=gr: _with_tf32(lambda: (
                             lin.linear_bernoulli_log_prob_fwd(h, w, bb, x),
                             lin.linear_bernoulli_log_prob_bwd(gr, h, w, bb, x))))]
                for low in (torch.bfloat16, torch.float16):  # as a GPU launch takes them
                    hl, wl, bl = h.to(low), w.to(low), bias.to(low)
                    out += [(f"linear_bernoulli_log_prob R={rows} {low}",
                             lambda h=hl, w=wl, bb=bl, x=x, gr=gr: _as_on_gpu(head, lambda: (
                                 lin.linear_bernoulli_log_prob_fwd(h, w, bb, x),
                                 lin.linear_bernoulli_log_prob_bwd(gr, h, w, bb, x))))]
    return out


def _as_on_gpu(module, call):
    """``call()`` with the head's ``tl.dot`` mode (``module.dot_mode``, of
    :mod:`fastair.kernels.linear_head`) chosen as for CUDA tensors."""
    original = module.dot_mode
    module.dot_mode = lambda dtype, on_gpu: original(dtype, True)
    try:
        return call()
    finally:
        module.dot_mode = original


def _with_tf32(call):
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        return call()
    finally:
        torch.set_float32_matmul_precision(before)


def record_launches():
    """Run every case with launches recorded instead of run: ``[(case, kernel, args,
    kwargs)]``."""
    from triton.runtime.jit import JITFunction
    launches, current = [], [None]
    original = JITFunction.run

    def recorder(self, *args, grid, warmup, **kwargs):
        launches.append((current[0], self, args, kwargs))

    JITFunction.run = recorder
    try:
        for label, call in _cases():
            current[0] = label
            call()
    finally:
        JITFunction.run = original
    return launches


def _signature(kernel, args, kwargs):
    sig, const = {}, {}
    for p in kernel.params:
        name = p.name
        v = args[p.num] if p.num < len(args) else kwargs.get(name, p.default)
        if p.is_constexpr:
            sig[name], const[name] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            sig[name] = "*" + _DTYPES[v.dtype]
        elif isinstance(v, bool):
            sig[name] = "i1"
        elif isinstance(v, int):
            sig[name] = "i64" if not -2 ** 31 <= v < 2 ** 31 else "i32"
        elif isinstance(v, float):
            sig[name] = "fp32"
        elif v is None:
            sig[name], const[name] = "constexpr", None
        else:
            raise TypeError(f"{kernel.fn.__name__}: argument {name} of type {type(v).__name__}")
    return sig, const


def _ptxas_for(arch):
    """The ptxas Triton itself uses for ``arch`` (newer wheels ship two)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        return get_ptxas(arch).path
    except ImportError:
        pass
    try:
        from triton import knobs
        return knobs.nvidia.ptxas.path
    except (ImportError, AttributeError):
        return _tool("ptxas")


def _ptxas_info(ptx, arch):
    """``(registers, spill store bytes, spill load bytes)`` from ``ptxas -v`` with the options
    Triton compiles with."""
    suffix = "a" if arch >= 90 else ""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        log = subprocess.run([_ptxas_for(arch), "-lineinfo", "-v", "--regAllocOptLevel=2",
                              f"--gpu-name=sm_{arch}{suffix}", path, "-o",
                              os.path.join(tmp, "k.cubin")], capture_output=True, text=True)
    if log.returncode != 0:
        raise RuntimeError(f"ptxas failed: {log.stderr[-1000:]}")
    text = log.stderr + log.stdout
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return (int(regs.group(1)) if regs else 0,
            int(spills.group(1)) if spills else 0, int(spills.group(2)) if spills else 0)


def sass_lines(cubin):
    """The SASS instructions of ``cubin`` (bytes) as ``[(address, text)]``, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        dump = subprocess.run([_tool("cuobjdump"), "-sass", path], capture_output=True,
                              text=True, check=True).stdout
    return [(int(m.group(1), 16), m.group(2).strip()) for m in
            re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;/]*?)\s*;", dump)]


def _opcode(text):
    """The opcode of one SASS instruction, without its predicate (``@P0``, ``@!P1``)."""
    words = text.split()
    return words[1] if words and words[0].startswith("@") and len(words) > 1 else (
        words[0] if words else "")


def largest_loop(instructions):
    """Instructions in the largest loop body: from the target of a backward branch to the
    branch itself."""
    index = {address: i for i, (address, _) in enumerate(instructions)}
    best = 0
    for i, (address, text) in enumerate(instructions):
        m = re.search(r"\bBRA\s+(?:\S+\s+)?0x([0-9a-f]+)", text)
        if m:
            target = int(m.group(1), 16)
            if target < address and target in index:
                best = max(best, i - index[target] + 1)
    return best


def compile_launch(kernel, args, kwargs, arch):
    """``triton.compile`` of one recorded launch for ``sm_<arch>``, specialized as the JIT
    specializes a real launch (16-byte alignment and divisibility by 16 of the arguments);
    with a plain signature where this Triton's internals differ."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    target = GPUTarget("cuda", arch, 32)
    try:
        from triton.compiler import make_backend
        from triton.runtime.jit import create_function_from_signature
        backend = make_backend(target)
        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
        kw = dict(kwargs)
        kw.setdefault("debug", False)
        bound, spec, options = binder(*args, **kw)
        options, sig, const, attrs = kernel._pack_args(backend, kw, bound, spec, options)
        return triton.compile(ASTSource(kernel, sig, const, attrs), target=target,
                              options=options.__dict__)
    except (ImportError, AttributeError, TypeError):
        sig, const = _signature(kernel, args, kwargs)
        index = {p.name: p.num for p in kernel.params}
        src = ASTSource(fn=kernel, signature=sig,
                        constexprs={(index[n],): v for n, v in const.items()})
        return triton.compile(src, target=target,
                              options={"num_warps": kwargs.get("num_warps", 4)})


def _row(case, kernel, args, kwargs, arch):
    sig, const = _signature(kernel, args, kwargs)
    warps = kwargs.get("num_warps", 4)
    compiled = compile_launch(kernel, args, kwargs, arch)
    regs, stores, loads = _ptxas_info(compiled.asm["ptx"], arch)
    sass = sass_lines(compiled.asm["cubin"])
    name = kernel.fn.__name__
    row = {"kernel": name, "case": case, "arch": arch,
           "signature": " ".join(t for t in sig.values() if t != "constexpr"),
           "constexprs": {n: v for n, v in const.items()}, "num_warps": warps,
           "registers": regs, "spill_stores": stores, "spill_loads": loads,
           "shared": compiled.metadata.shared, "sass": len(sass),
           "loop_sass": largest_loop(sass),
           "mma": sum(_opcode(text).startswith(("HMMA", "HGMMA")) for _, text in sass)}
    if name in STREAMING:
        per = const["BLOCK_R"] * const["BLOCK_D"] / (32 * warps)
        row["logits_per_iteration"] = per
        row["sass_per_logit"] = round(row["loop_sass"] / per, 1)
    return row


def measure(archs=(90, 80), workers=None):
    """A row per distinct (kernel, argument types, constexprs, num_warps, arch), compiled on
    ``workers`` threads (default: one per CPU; most of the time is in ptxas subprocesses)."""
    from concurrent.futures import ThreadPoolExecutor
    jobs, seen = [], set()
    for case, kernel, args, kwargs in record_launches():
        sig, const = _signature(kernel, args, kwargs)
        for arch in archs:
            key = (kernel.fn.__name__, tuple(sig.items()), repr(sorted(const.items())),
                   kwargs.get("num_warps", 4), arch)
            if key not in seen:
                seen.add(key)
                jobs.append((case, kernel, args, kwargs, arch))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda job: _row(*job), jobs))


def summary(rows, command):
    import triton
    lines = [f"# fastair's Triton kernels compiled without a GPU (Triton {triton.__version__})\n",
             machine_line() + "\n", f"Command: `{command}`\n",
             "Each distinct launch of the launchers at the shapes of `_cases()` (k = 64, B = "
             "100, D = 784, Z = 50; iwae_bound at n = 64 and 5000; capped weight norm at 200 x "
             "784, 784 x 200 and 4096 x 4096; the decoder head at 6400 and 100 rows), compiled "
             "for each arch; registers and spills from `ptxas -v`, instructions from "
             "`cuobjdump -sass`.\n",
             "| kernel | case | arch | argument types | warps | registers | spills (st/ld bytes) | "
             "SASS | largest loop | SASS per logit | tensor-core MMA |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = r.get("sass_per_logit")
        lines.append(f"| {r['kernel']} | {r['case']} | sm_{r['arch']} | {r['signature']} | "
                     f"{r['num_warps']} | {r['registers']} | {r['spill_stores']}/"
                     f"{r['spill_loads']} | {r['sass']} | {r['loop_sass']} | "
                     f"{'' if per is None else per} | {r['mma']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, nargs="+", default=[90, 80])
    p.add_argument("--json", default=None, help="write the rows as JSON here")
    p.add_argument("--out", default=None, help="directory for compiled_kernels.md and .csv")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        p.error("unset TRITON_INTERPRET: the kernels must be compiled, not interpreted")
    ok, why = cuda_target_available()
    if not ok:
        print(f"compiled_kernels: {why}", file=sys.stderr)
        return 3
    rows = measure(tuple(args.arch))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    text = summary(rows, command_line("bench.compiled_kernels", argv))
    print(text)
    if args.out:
        write_results(args.out, "compiled_kernels", rows, COLUMNS + ("case", "constexprs"),
                      text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
