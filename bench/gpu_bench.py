#!/usr/bin/env python
"""End-to-end timings on a device: a training epoch eager and replayed as one CUDA graph, and
IW-SVI, for the VAE of ``fastair reproduce``. Part of ``bench/gpu_run.sh``.

    python -m bench.gpu_bench --device cuda --out results/   # the real run
    python -m bench.gpu_bench --device cpu --quick            # the dry run's smoke test

Data: random binary images of MNIST's shape on the device (timings do not depend on the
pixels, and a GPU machine may have no data set). An epoch is ``--steps`` Adam steps of batch 100
(the trainer's step: the bound, the loss, backward, Adam). The CUDA graph captures one whole
step (forward, backward and a ``capturable`` Adam) and replays it with each batch copied into
its static input. IW-SVI runs on ``--n-test`` digits of a freshly initialized VAE. Writes
``gpu_bench.csv`` and ``gpu_bench.md``; a configuration that fails writes its error instead.
"""
import argparse
import sys
import time

import torch

import fastair
from bench.common import machine_line, median_ms, sync, write_results
from fastair.models import VAE

COLUMNS = ("what", "k", "mode", "ms", "note", "device", "torch", "fastair")


def _data(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 784, generator=g) < 0.13).float().to(device)


def _step_fn(model, opt):
    def step(x):
        loss = -model.bound(x, model.k).mean()
        loss.backward()
        opt.step()
        return loss
    return step


def epoch_eager_ms(k, device, steps, repeats):
    torch.manual_seed(0)
    model = VAE(k=k).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = _step_fn(model, opt)
    data = _data(steps * 100, device)

    def epoch():
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            step(data[i * 100:(i + 1) * 100])
        sync(device)
    return median_ms(epoch, repeats, warmup=1)  # the warm-up compiles the kernels


def epoch_graph_ms(k, device, steps, repeats):
    """The epoch as ``steps`` replays of one captured training step."""
    torch.manual_seed(0)
    model = VAE(k=k).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    step = _step_fn(model, opt)
    data = _data(steps * 100, device)
    static_x = data[:100].clone()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step(static_x)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step(static_x)

    def epoch():
        for i in range(steps):
            static_x.copy_(data[i * 100:(i + 1) * 100])
            graph.replay()
        sync(device)
    return median_ms(epoch, repeats, warmup=1)


def iwsvi_ms(device, n_test, max_steps, k_eval):
    from fastair.evaluation import iwsvi_log_likelihood
    torch.manual_seed(0)
    model = VAE(k=1).to(device)
    x = _data(n_test, device, seed=1)
    iwsvi_log_likelihood(model, x[:2], max_steps=2, k_eval=8, progress=False, warn=False)
    sync(device)
    start = time.perf_counter()
    iwsvi_log_likelihood(model, x, max_steps=max_steps, k_eval=k_eval, progress=False,
                         warn=False)
    sync(device)
    return (time.perf_counter() - start) * 1e3


def _attempt(rows, base, fn, *args):
    try:
        rows.append(dict(base, ms=round(fn(*args), 2), note=""))
    except Exception as err:  # noqa: BLE001 - one failing configuration must not stop the run
        rows.append(dict(base, ms="", note=f"{type(err).__name__}: {err}"[:300]))
    print(rows[-1], flush=True)


def summary(rows, device):
    lines = [f"# End-to-end on {device}\n", machine_line(device) + "\n",
             "| what | k | mode | ms | note |", "|---|---|---|---|---|"]
    for r in rows:
        ms = f"{r['ms']:.1f}" if r["ms"] != "" else ""
        lines.append(f"| {r['what']} | {r['k']} | {r['mode']} | {ms} | {r['note']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small sizes (the dry run)")
    p.add_argument("--out", default=None, help="directory for gpu_bench.csv and gpu_bench.md")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    steps, repeats = (3, 1) if args.quick else (40, 3)
    ks = (1, 8) if args.quick else (1, 8, 64, 256)
    n_test, max_steps, k_eval = (8, 5, 16) if args.quick else (500, 300, 5000)
    rows = []
    base = {"device": str(device), "torch": torch.__version__, "fastair": fastair.__version__}
    for k in ks:
        _attempt(rows, dict(base, what=f"epoch ({steps} steps)", k=k, mode="eager"),
                 epoch_eager_ms, k, device, steps, repeats)
        if device.type == "cuda":
            _attempt(rows, dict(base, what=f"epoch ({steps} steps)", k=k, mode="cuda graph"),
                     epoch_graph_ms, k, device, steps, repeats)
    _attempt(rows, dict(base, what=f"IW-SVI ({n_test} digits, {max_steps} steps, k_eval "
                                   f"{k_eval})", k=1, mode="eager"),
             iwsvi_ms, device, n_test, max_steps, k_eval)
    text = summary(rows, device)
    print(text)
    if args.out:
        write_results(args.out, "gpu_bench", rows, COLUMNS, text)
    return 0 if all(r["ms"] != "" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
