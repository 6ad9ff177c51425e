"""Peak memory of one training step of the drop-in loss against k: the decoder's logits, the
fused head, and the fused head with k-chunking.

    python -m bench.bench_loss_memory --out bench/results/loss_memory     # about 2 minutes
    python -m bench.bench_loss_memory --ks 64 256 --out /tmp/lm           # a smoke run

The model is the PyTorch examples' VAE at the sizes of the memory targets: B = 64, D = 784, H = 200,
Z = 20 (encoder ``784-200`` ReLU then two ``200-20`` heads; decoder trunk ``20-200`` ReLU and
head ``nn.Linear(200, 784)``), float32, random binary ``x``. One step is the encoder, the loss
(:class:`fastair.nn.IWAELoss`, ``estimator="dreg"``), its backward and an Adam step. Paths:

- ``plain``: ``loss(x, mu, logvar, decoder)``: the decoder makes the ``[k, B, D]`` logits;
- ``head``: ``loss(x, mu, logvar, decoder.trunk, head=decoder.head)``: the fused head;
- ``chunk``: the same with ``IWAELoss(k_chunk=128)``.

Each (path, k) runs ``--repeats`` times (default 3), each in a fresh subprocess
(``python -m bench.bench_loss_memory --child ...``) with ``--threads`` threads (default 1).
The subprocess builds the model and optimizer, runs two warm-up steps at ``k = --warmup-k``
(default 8) on the same path (the C++ kernels loaded, Adam's state made), reads ``ru_maxrss``
(the process's peak resident memory so far), runs one step at ``k`` and reads ``ru_maxrss``
again: the **growth** is the step's peak resident memory beyond everything the process had
already touched, i.e. what one step at this ``k`` costs over a step at a small ``k``. The
table gives the median over the repeats (the CSV every run): glibc's heap reuse varies from
process to process by some 10-20 MB at these sizes, which matters only for the chunked path.
The subprocess then runs one more step at ``k`` under the torch profiler and records
``live_mb``, the peak of the bytes held by tensors (the running sum of the CPU allocator's
events), which the allocator's reuse does not blur.

Writes ``loss_memory.csv``, ``loss_memory.png`` and ``loss_memory.md`` (the table, the targets
(head <= 0.6x plain at k = 2048, head + k_chunk <= 0.15x and flat), the CPU from ``lscpu`` and
the command).
"""
import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from bench.common import peak_memory_mb

PATHS = ("plain", "head", "chunk")
KS = (64, 256, 1024, 2048, 4096)
B, D, H, Z = 64, 784, 200, 20
COLUMNS = ("path", "k", "k_chunk", "repeat", "growth_mb", "live_mb", "baseline_mb", "peak_mb",
           "logits_mb", "threads", "estimator")
ROOT = Path(__file__).resolve().parents[1]


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def child(path, k, k_chunk, warmup_k, threads, estimator):
    """One measurement in this (fresh) process: a dict of the CSV's columns."""
    from torch import nn

    from fastair.nn import IWAELoss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, 2 * Z))
    trunk = nn.Sequential(nn.Linear(Z, H), nn.ReLU())
    head = nn.Linear(H, D)
    decoder = nn.Sequential(trunk, head)
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    x = (torch.rand(B, D, generator=torch.Generator().manual_seed(1)) < 0.3).float()

    def step(k):
        loss_fn = IWAELoss(k=k, estimator=estimator,
                           k_chunk=k_chunk if path == "chunk" else None)
        opt.zero_grad(set_to_none=True)
        mu, logvar = encoder(x).chunk(2, dim=-1)
        if path == "plain":
            loss = loss_fn(x, mu, logvar, decoder)
        else:
            loss = loss_fn(x, mu, logvar, trunk, head=head)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(2):
        step(warmup_k)
    baseline = _rss_mb()
    step(k)
    peak = _rss_mb()
    live = peak_memory_mb(lambda: step(k), "cpu")
    return {"path": path, "k": k, "k_chunk": k_chunk if path == "chunk" else "",
            "growth_mb": round(peak - baseline, 1), "live_mb": round(live, 1),
            "baseline_mb": round(baseline, 1),
            "peak_mb": round(peak, 1), "logits_mb": round(k * B * D * 4 / 2 ** 20, 1),
            "threads": threads, "estimator": estimator}


def _measure(path, k, args):
    cmd = [sys.executable, "-m", "bench.bench_loss_memory", "--child", path, str(k),
           "--k-chunk", str(args.k_chunk), "--warmup-k", str(args.warmup_k),
           "--threads", str(args.threads), "--estimator", args.estimator]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_model():
    """``Model name`` from ``lscpu`` (``platform.processor()`` where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def medians(rows, column="growth_mb"):
    """``{(path, k): median of column over the repeats}``."""
    groups = {}
    for r in rows:
        groups.setdefault((r["path"], r["k"]), []).append(float(r[column]))
    return {key: statistics.median(v) for key, v in groups.items()}


def _fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def _times(v):
    return "n/a" if v is None else f"{v:.2f}x"


def _div(a, b):
    return None if a is None or not b else a / b


def table(rows, args, command):
    """The markdown report: growth per path and k (median over the repeats, and the range),
    the tensors' live peak, ratios to plain, and the targets."""
    ks = sorted({r["k"] for r in rows})
    got, live = medians(rows), medians(rows, "live_mb")
    spread = {}
    for r in rows:
        spread.setdefault((r["path"], r["k"]), []).append(float(r["growth_mb"]))

    def cell(path, k):
        if (path, k) not in got:
            return "n/a"
        lo, hi = min(spread[(path, k)]), max(spread[(path, k)])
        rng = f" ({lo:.0f}-{hi:.0f})" if len(spread[(path, k)]) > 1 else ""
        return f"{got[(path, k)]:.1f}{rng}"
    repeats = max(len(v) for v in spread.values())
    lines = [
        "# Peak memory of one training step of `fastair.nn.IWAELoss` against k",
        "",
        f"Machine: {cpu_model()} (`lscpu` model name), {args.threads} thread(s); torch "
        f"{torch.__version__}.",
        f"Command: `{command}`",
        "Allocator: glibc malloc, "
        + (", ".join(f"`{k}={v}`" for k, v in sorted(os.environ.items())
                     if k.startswith("MALLOC_")) or "default settings") + ".",
        "",
        f"One step = encoder, loss (`estimator=\"{args.estimator}\"`), backward, Adam; B = {B}, "
        f"D = {D}, H = {H}, Z = {Z}, float32. **RSS growth** = `ru_maxrss` after one step at k "
        f"minus `ru_maxrss` after two warm-up steps at k = {args.warmup_k} on the same path, each "
        f"run in a fresh subprocess: median of {repeats} runs (range in brackets). **Live** = "
        f"peak bytes held by tensors during one more step at k (torch profiler). MB = 2^20 "
        f"bytes; `logits` is one `[k, B, D]` float32 tensor.",
        "",
        f"| k | logits MB | plain MB | head MB | head + k_chunk={args.k_chunk} MB | head / plain "
        f"| chunk / plain | live MB: plain / head / chunk |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in ks:
        lv = " / ".join(_fmt(live.get((p, k)), 1) for p in PATHS)
        lines.append(
            f"| {k} | {k * B * D * 4 / 2 ** 20:.0f} | {cell('plain', k)} | {cell('head', k)} | "
            f"{cell('chunk', k)} | {_fmt(_div(got.get(('head', k)), got.get(('plain', k))))} | "
            f"{_fmt(_div(got.get(('chunk', k)), got.get(('plain', k))))} | {lv} |")
    flat_ks = [k for k in ks if 256 <= k <= 4096 and ("chunk", k) in got]

    def flatness(values):
        return max(values) / min(values) if len(values) > 1 else None
    flat = flatness([got[("chunk", k)] for k in flat_ks])
    flat_live = flatness([live[("chunk", k)] for k in flat_ks])
    head_2048 = _div(got.get(("head", 2048)), got.get(("plain", 2048)))
    chunk_2048 = _div(got.get(("chunk", 2048)), got.get(("plain", 2048)))

    def verdict(value, limit):
        return "n/a" if value is None else "met" if value <= limit else "NOT met"
    over = ", ".join(map(str, flat_ks))
    lines += [
        "",
        "| target | measured (RSS growth, medians) | |",
        "|---|---|---|",
        f"| head <= 0.6x plain at k = 2048 | {_times(head_2048)} | {verdict(head_2048, 0.6)} |",
        f"| head + k_chunk={args.k_chunk} <= 0.15x plain at k = 2048 | {_times(chunk_2048)} | "
        f"{verdict(chunk_2048, 0.15)} |",
        f"| head + k_chunk={args.k_chunk} within 1.3x from k = 256 to 4096 (max / min) | "
        f"{_times(flat)} over k = {over} (live tensors: {_times(flat_live)}) | "
        f"{verdict(flat, 1.3)} |",
        "",
    ]
    return "\n".join(lines)


def plot(rows, path, k_chunk):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    got = medians(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {"plain": "plain (decoder makes the logits)", "head": "fused head",
              "chunk": f"fused head + k_chunk={k_chunk}"}
    ks = sorted({r["k"] for r in rows})
    for name in PATHS:
        pts = sorted((k, v) for (p, k), v in got.items() if p == name)
        if pts:
            ax.plot([p[0] for p in pts], [max(p[1], 0.1) for p in pts], marker="o",
                    label=labels[name])
    ax.plot(ks, [k * B * D * 4 / 2 ** 20 for k in ks], "k--", lw=0.8,
            label="one [k, B, D] float32 tensor")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("k (importance samples)")
    ax.set_ylabel("peak RSS growth of one step (MB, median)")
    ax.set_title(f"IWAELoss training step, B={B}, D={D}, H={H}, Z={Z}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/loss_memory", help="output folder")
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS))
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--k-chunk", type=int, default=128)
    parser.add_argument("--warmup-k", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per point")
    parser.add_argument("--estimator", default="dreg", choices=("iwae", "stl", "dreg"))
    parser.add_argument("--child", nargs=2, metavar=("PATH", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        row = child(args.child[0], int(args.child[1]), args.k_chunk, args.warmup_k,
                    args.threads, args.estimator)
        print(json.dumps(row))
        return 0
    from bench.common import write_csv

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for repeat in range(args.repeats):
        for k in args.ks:
            for path in args.paths:
                row = dict(_measure(path, k, args), repeat=repeat)
                print(f"{path:6s} k={k:5d} run {repeat}: +{row['growth_mb']:.1f} MB RSS, "
                      f"{row['live_mb']:.1f} MB live", flush=True)
                rows.append(row)
    write_csv(rows, out / "loss_memory.csv", COLUMNS)
    plot(rows, out / "loss_memory.png", args.k_chunk)
    command = "python -m bench.bench_loss_memory " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    text = table(rows, args, command)
    (out / "loss_memory.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
