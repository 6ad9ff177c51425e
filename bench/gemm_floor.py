#!/usr/bin/env python
"""The matmul floor of what users run: every GEMM a workload issues (recorded with a
``TorchDispatchMode``: ``mm``, ``addmm``, ``bmm``, ``baddbmm`` with their shapes, strides and
dtypes), replayed alone, in the workload's precision. The replay is the time the workload would
take if everything else (activations, the bound, the draws, Adam, Python) were free.

    python -m bench.gemm_floor --out bench/results/train_cpu     # all workloads below
    python -m bench.gemm_floor --workloads train64 --repeats 3   # one of them
    python -m bench.gemm_floor --rates --out bench/results/train_cpu  # GEMM rates by layout

Workloads (mnist5k shapes, the real model code):

* ``train64`` / ``train1``: one training step of the k = 64 (k = 1) VAE, batch 100, in fp32 and
  under bf16 autocast; the full step is timed beside its replay.
* ``stack1``: one step of the 9 single-term members of the reproduce grid stacked (bf16), beside
  one step of each of them trained alone, per member.
* ``iwsvi``: IW-SVI (``k_svi`` 16, ``k_eval`` 1000, ``chunk`` 100) on 100 test digits for 20
  steps, fp32 and bf16.

For a ratio ``T_fp32 / T_bf16`` the replay gives the ceiling ``G_fp32 / G_bf16`` that no
reduction of the other work can pass while that work costs the same in both precisions (it
runs the same kernels); the ``other`` column (full minus replay) shows how large that work is.
Writes ``gemm_floor.csv`` and ``gemm_floor.md``.
"""
import argparse
import statistics
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastair
from bench.common import command_line, median_ms, report_header, write_markdown, write_results
from fastair.data import load_dataset
from fastair.models import VAE
from fastair.precision import autocast

COLUMNS = ("workload", "precision", "full_ms", "gemm_ms", "other_ms", "gemm_share", "gemms",
           "gflop", "gflops", "adam_ms", "casts_ms", "draws_ms", "likelihood_ms", "torch",
           "fastair", "threads")
_GEMMS = {"mm", "addmm", "bmm", "baddbmm"}


def _flops(name, tensors):
    a, b = (tensors[0], tensors[1]) if name in ("mm", "bmm") else (tensors[1], tensors[2])
    batch = a.shape[0] if a.dim() == 3 else 1
    return 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


class _Recorder(TorchDispatchMode):
    """Records ``(op, [(shape, stride, dtype) or scalar, ...], kwargs)`` of every GEMM."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in _GEMMS and func._overloadname in ("default", "out"):
            spec = [(tuple(a.shape), a.stride(), a.dtype) if isinstance(a, torch.Tensor) else a
                    for a in args]
            self.calls.append((func, spec, {n: v for n, v in kwargs.items() if n != "out"}))
        return func(*args, **kwargs)


def record(fn):
    """The GEMMs that ``fn()`` issues, in order."""
    with _Recorder() as rec:
        fn()
    return rec.calls


def _materialize(spec):
    out = []
    for a in spec:
        if isinstance(a, tuple) and len(a) == 3 and isinstance(a[2], torch.dtype):
            shape, stride, dtype = a
            t = torch.empty_strided(shape, stride, dtype=dtype)
            t.as_strided((t.untyped_storage().nbytes() // t.element_size(),), (1,)).normal_()
            out.append(t)
        else:
            out.append(a)
    return out


def replay_ms(calls, repeats=5):
    """Median wall time (ms) of running every recorded GEMM once, on fresh tensors of the same
    shapes, strides and dtypes; and the GFLOP of one pass."""
    prepared = [(func, _materialize(spec), kw) for func, spec, kw in calls]
    gflop = sum(_flops(f.overloadpacket.__name__, [a for a in args if isinstance(a, torch.Tensor)])
                for f, args, _ in prepared) / 1e9
    for func, args, kw in prepared:  # warm-up: oneDNN primitives are created on first use
        func(*args, **kw)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for func, args, kw in prepared:
            func(*args, **kw)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), gflop


def _row(workload, precision, full, gemm, gflop, n):
    return {"workload": workload, "precision": precision, "full_ms": round(full, 2),
            "gemm_ms": round(gemm, 2), "other_ms": round(full - gemm, 2),
            "gemm_share": round(gemm / full, 3), "gemms": n, "gflop": round(gflop, 3),
            "gflops": round(gflop / gemm * 1e3, 1), "torch": torch.__version__,
            "fastair": fastair.__version__, "threads": torch.get_num_threads()}


def train_step_fn(model, x, precision, steps=1):
    """``steps`` training steps of ``model`` on ``x`` as the trainer takes them."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)

    def run():
        for _ in range(steps):
            with autocast("cpu", precision):
                loss = -model.bound(x, model.k).float().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def workload_train(k, data, repeats):
    rows = []
    x = data.train[:100]
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = VAE(k=k)
        model.init_decoder_bias(data.train)
        step = train_step_fn(model, x, precision)
        full = median_ms(step, repeats)
        calls = record(step)
        gemm, gflop = replay_ms(calls, repeats)
        rows.append(_row(f"train{k}", precision, full, gemm, gflop, len(calls)))
    return rows


def workload_stack(data, repeats, precision="bf16"):
    from bench.bench_stack import GRID
    from fastair.models.stacked import StackedVAE, objective_terms
    members = [VAE(k=1, **kw) for kw in GRID]
    members = [m for m in members if objective_terms(m) == 1]
    x = data.train[:100]
    alone_full = alone_gemm = 0.0
    alone_flop, alone_n = 0.0, 0
    for m in members:
        m.init_decoder_bias(data.train)
        step = train_step_fn(m, x, precision)
        alone_full += median_ms(step, repeats)
        calls = record(step)
        g, f = replay_ms(calls, repeats)
        alone_gemm, alone_flop, alone_n = alone_gemm + g, alone_flop + f, alone_n + len(calls)
    n = len(members)
    stacked = StackedVAE(members)
    opt = torch.optim.Adam(stacked.parameters(), lr=1e-4, fused=True)
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    xs = x.expand(n, *x.shape).contiguous()

    def step():
        with autocast("cpu", precision):
            noise, eps = stacked.draws(xs, gens)
            loss = -stacked.objective(xs, noise, eps).float().mean(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    full = median_ms(step, repeats)
    calls = record(step)
    gemm, gflop = replay_ms(calls, repeats)
    # the rest of a member's unavoidable work: its Adam step, the casts of its float32 master
    # weights to bf16 and of its bf16 weight gradients back, and its random draws
    params = list(stacked.parameters())
    adam = median_ms(opt.step, repeats)
    low = [q.detach().to(torch.bfloat16) for q in params]
    casts = median_ms(lambda: ([q.detach().to(torch.bfloat16) for q in params],
                             [g.float() for g in low]), repeats)
    draws = median_ms(lambda: stacked.draws(xs, gens), repeats)
    rows = [_row(f"stack1 alone, per member ({n})", precision, alone_full / n, alone_gemm / n,
                 alone_flop / n, alone_n // n),
            _row(f"stack1 stacked, per member ({n})", precision, full / n, gemm / n, gflop / n,
                 len(calls))]
    rows[1].update(adam_ms=round(adam / n, 3), casts_ms=round(casts / n, 3),
                   draws_ms=round(draws / n, 3))
    return rows


def workload_iwsvi(data, repeats):
    from fastair.evaluation import iwsvi_log_likelihood
    torch.manual_seed(0)
    model = VAE(k=1)
    model.init_decoder_bias(data.train)
    x = data.test[:100]
    rows = []
    for precision in ("fp32", "bf16"):
        def run(precision=precision):
            iwsvi_log_likelihood(model, x, max_steps=20, k_eval=1000, progress=False,
                                 warn=False, precision=precision)
        full = median_ms(run, repeats=max(1, repeats // 2), warmup=1)
        calls = record(run)
        gemm, gflop = replay_ms(calls, repeats=max(1, repeats // 2))
        rows.append(_row("iwsvi", precision, full, gemm, gflop, len(calls)))
    # bf16 must also take the Bernoulli term of every logit its GEMMs produce: the fused
    # kernel's time per logit (bf16 in, float32 sums) times their number
    logits = sum(_out_rows(spec) * model.x_dim for f, spec, _ in calls
                 if _out_cols(spec) == model.x_dim)
    block = torch.randn(64, 100, model.x_dim).to(torch.bfloat16)
    xs = (torch.rand(100, model.x_dim) < 0.5).float()
    per_logit = median_ms(lambda: fastair.bernoulli_log_prob(block, xs), repeats) / block.numel()
    rows[-1]["likelihood_ms"] = round(per_logit * logits, 1)
    return rows


def _out_rows(spec):
    a = [t for t in spec if isinstance(t, tuple) and len(t) == 3][-2]
    return a[0][0] * (a[0][1] if len(a[0]) == 3 else 1)


def _out_cols(spec):
    return [t for t in spec if isinstance(t, tuple) and len(t) == 3][-1][0][-1]


def summary(rows, command):
    lines = [report_header("The matmul floor of each workload", command),
             "`full`: the workload as users run it; `GEMMs`: its matmuls alone, replayed with "
             "the same shapes, strides and dtypes (median of the repeats); `other` = full - "
             "GEMMs.\n",
             "| workload | precision | full (ms) | GEMMs (ms) | other (ms) | GEMM share | "
             "GEMM GFLOP/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['precision']} | {r['full_ms']:.1f} | "
                     f"{r['gemm_ms']:.1f} | {r['other_ms']:.1f} | {r['gemm_share']:.0%} | "
                     f"{r['gflops']:.0f} |")
    by = {(r["workload"], r["precision"]): r for r in rows}
    notes = []
    for w in ("train64", "train1"):
        if (w, "fp32") in by and (w, "bf16") in by:
            a, b = by[(w, "fp32")], by[(w, "bf16")]
            notes.append(f"- {w}: bf16 is {a['full_ms'] / b['full_ms']:.2f}x faster than fp32; "
                         f"its GEMMs alone are {a['gemm_ms'] / b['gemm_ms']:.2f}x faster (the "
                         "ceiling while the other work costs the same in both).")
    if ("iwsvi", "fp32") in by and ("iwsvi", "bf16") in by:
        a, b = by[("iwsvi", "fp32")], by[("iwsvi", "bf16")]
        floor = b["gemm_ms"] + b["likelihood_ms"]
        notes.append(f"- iwsvi: fp32 runs its decoder's last layer inside the fused head (not a "
                     f"recorded GEMM), bf16 as a GEMM; bf16 must at least do its GEMMs "
                     f"({b['gemm_ms']:.0f} ms) and the Bernoulli term of every logit they "
                     f"produce ({b['likelihood_ms']:.0f} ms with the fused kernel): "
                     f"{floor:.0f} ms, so it can be at most {a['full_ms'] / floor:.2f}x faster "
                     "than fp32.")
    alone = [r for r in rows if r["workload"].startswith("stack1 alone")]
    stacked = [r for r in rows if r["workload"].startswith("stack1 stacked")]
    if alone and stacked:
        a, s = alone[0], stacked[0]
        floor = s["gemm_ms"] + s["adam_ms"] + s["casts_ms"] + s["draws_ms"]
        notes.append(f"- stack1 (bf16, per member-step): alone {a['full_ms']:.2f} ms, stacked "
                     f"{s['full_ms']:.2f} ms ({a['full_ms'] / s['full_ms']:.2f}x). A stacked "
                     f"member's GEMMs take {s['gemm_ms']:.2f} ms, its Adam step "
                     f"{s['adam_ms']:.2f}, the casts of its weights to bf16 and of its weight "
                     f"gradients back {s['casts_ms']:.2f}, its draws {s['draws_ms']:.2f}: "
                     f"{floor:.2f} ms, so a stack can be at most {a['full_ms'] / floor:.2f}x "
                     "faster than a run alone even if every activation, likelihood and Python "
                     "line were free.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


WORKLOADS = ("train64", "train1", "stack1", "iwsvi")
RATE_SHAPES = ((2048, 2048, 2048), (6400, 200, 784), (6400, 784, 200), (784, 6400, 200))


def rates_text(command, repeats=10):
    """GFLOP/s of ``[m, k] x [k, n]`` in float32 and bfloat16, plain and with either operand
    transposed (as autograd passes them), a markdown table."""
    lines = [report_header("GEMM rates", command),
             "| m, k, n | layout | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 |",
             "|---|---|---|---|---|"]
    for m, k, n in RATE_SHAPES:
        for layout in ("a @ b", "a.T @ b", "a @ b.T"):
            got = {}
            for dtype in (torch.float32, torch.bfloat16):
                a = torch.randn(k, m, dtype=dtype).t() if layout == "a.T @ b" else torch.randn(
                    m, k, dtype=dtype)
                b = torch.randn(n, k, dtype=dtype).t() if layout == "a @ b.T" else torch.randn(
                    k, n, dtype=dtype)
                ms = median_ms(lambda a=a, b=b: a @ b, repeats, warmup=3)
                got[dtype] = 2 * m * k * n / ms / 1e6
            lines.append(f"| {m}, {k}, {n} | {layout} | {got[torch.float32]:.0f} | "
                         f"{got[torch.bfloat16]:.0f} | "
                         f"{got[torch.bfloat16] / got[torch.float32]:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=None, help="directory for gemm_floor.csv and .md")
    p.add_argument("--rates", action="store_true",
                   help="only the GEMM rates of a few shapes and layouts (gemm_rates.md)")
    args = p.parse_args(argv)
    command = command_line("bench.gemm_floor", argv)
    if args.rates:
        text = rates_text(command)
        print(text)
        if args.out:
            write_markdown(args.out, "gemm_rates", text)
        return 0
    data = load_dataset("mnist5k")
    rows = []
    for w in args.workloads:
        if w.startswith("train"):
            new = workload_train(int(w[5:]), data, args.repeats)
        elif w == "stack1":
            new = workload_stack(data, args.repeats)
        else:
            new = workload_iwsvi(data, args.repeats)
        for r in new:
            print(r, flush=True)
        rows += new
    text = summary(rows, command)
    print(text)
    if args.out:
        write_results(args.out, "gemm_floor", rows, COLUMNS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
