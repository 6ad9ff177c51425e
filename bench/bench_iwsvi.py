#!/usr/bin/env python
"""Benchmark the IW-SVI evaluator (``fastair.evaluation``) on the CPU.

Model: a VAE (``fastair.models.preset("vae")``) trained for ``--epochs`` on mnist5k with
``fastair.training.Trainer``, or the ``best.pt`` of a ``fastair train`` run (``--run-dir``).
Data: the first test digits of mnist5k. Three measurements:

1. ``iwsvi_time``: seconds of ``iwsvi_log_likelihood(model, test_x, k_eval=5000)`` with its
   defaults (Adam on a 16-sample bound until each digit's bound stops improving, at most 2000
   steps, chunk 100, the 5000-sample amortized bound included) over the 500 test digits, with
   the steps taken, the median ESS and the largest standard error. Target: under 5 minutes.
2. ``iwsvi_memory`` / ``streamed_memory``: the peak extra CPU memory of one call of
   ``iwsvi_log_likelihood`` (and of its final estimate alone, ``streamed_log_mean_weight`` with
   the encoder's q) on 200 digits at k_eval = 500 and 5000, chunk 100. Method
   (``bench.common.peak_memory_mb``): ``torch.profiler`` with ``profile_memory=True`` records
   every allocation and free of torch's CPU allocator during the call; the peak of their running
   sum in time order is the peak. Memory taken outside torch's allocator is not seen. Target:
   the k = 5000 peak within 10% of the k = 500 one (``ratio`` <= 1.10).
3. ``vs_pythae``: ``ln p(x)`` with k importance samples from the encoder's q (no SVI), on the
   same digits, model and k, by
   - ``fastair``: ``streamed_log_mean_weight`` over batches of ``--batch-size`` (the fused decoder
     head, chunked, running log-sum-exp);
   - ``fastair-iwsvi0``: ``iwsvi_log_likelihood(max_steps=0, elbo_samples=1)`` (the same estimate
     plus a one-sample amortized bound);
   - ``pythae``: the structure of pythae's ``VAE.get_nll`` (its default ``batch_size=100``):
     one example at a time, blocks of 100 samples, ``x`` repeated 100 times and re-encoded for
     each block, ``binary_cross_entropy`` on the decoder's sigmoid, the blocks' log-weights
     concatenated, then one ``logsumexp``, a ``.item()`` per example (k rounded down to a
     multiple of 100, at least 100). The target: pythae / fastair >= 3;
   - ``per-example``: a tidier and faster per-example loop than pythae's: one example at a time,
     encoded once, all k samples in one [k, 784] decoder batch, ``log p(x|z)`` by
     ``binary_cross_entropy_with_logits``, the Gaussians by ``torch.distributions.Normal``, then
     ``logsumexp - log k``;
   - ``eager``: fastair's maths in plain torch, batched and chunked like fastair, but the
     ``[chunk, B, 784]`` logits materialized and the ``[k, B]`` log-weights kept for one
     ``logsumexp``; ``compile``: the same with its per-chunk log-weight function compiled by
     ``torch.compile`` (compilation in an untimed warm-up; off with ``--quick``).
   Every provider runs once untimed on a small k first, then ``--repeats`` timed calls (the
   median is reported).
   - ``floor``: not an estimator: only the decoder's matrix products for the same number of
     samples (``trunk`` and the output layer on random z, no sampling, no Bernoulli term), the
     time no exact fp32 evaluator of this model can beat on this machine.
   The notes give the mean difference of each estimate from fastair's and its standard error
   over the digits. ``eager``, ``compile`` and ``fastair-iwsvi0`` draw the same z as
   ``fastair`` (same seed, same order), so they differ by rounding only; ``pythae`` and
   ``per-example`` draw
   their own, so their difference should be Monte-Carlo noise (within a few standard errors).

``--quick`` shrinks everything (2 epochs; 50 digits and k_eval 500 for the time, 50 digits at
k = 100 and 1000 for the memory, 10 digits at k_eval for vs_pythae; no compile).

CSV (``--out``, default ``bench/results/iwsvi_cpu.csv``, ``iwsvi_cpu_quick.csv`` with
``--quick``; written atomically; one row per measurement, provider and k): ``measurement,
provider, n_examples, k_eval, chunk, seconds, peak_mb, log_px_mean, ratio, torch, threads,
notes``. ``ratio`` is seconds / fastair's seconds in ``vs_pythae`` (> 1: fastair faster) and
peak_mb / the smaller k's peak_mb in the memory rows.

    python -m bench.bench_iwsvi                    # full run (several minutes)
    python -m bench.bench_iwsvi --quick            # smoke run (under 30 s)
    python -m bench.bench_iwsvi --run-dir runs/vae --threads 2 --n-examples 100
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributions import Normal

from bench import common
from fastair.data import load_dataset
from fastair.evaluation import iwsvi_log_likelihood, streamed_log_mean_weight

ROOT = Path(__file__).resolve().parent.parent

COLUMNS = ("measurement", "provider", "n_examples", "k_eval", "chunk", "seconds", "peak_mb",
           "log_px_mean", "ratio", "torch", "threads", "notes")
T0 = time.perf_counter()


def log(msg):
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def get_model(args, data):
    """The trained model of ``--run-dir`` (as ``fastair evaluate`` loads it), or a fresh VAE
    trained for ``--epochs`` on mnist5k; in eval mode."""
    from fastair.models import VAE, preset
    from fastair.training import Trainer, load_checkpoint
    if args.run_dir:
        with open(os.path.join(args.run_dir, "config.json")) as f:
            hparams = dict(json.load(f)["model"]["hparams"])
        model = VAE(**dict(hparams, hidden=tuple(hparams["hidden"])))
        model.load_state_dict(load_checkpoint(os.path.join(args.run_dir, "best.pt"))["model"])
        log(f"loaded {args.run_dir}: {model.hparams}")
    else:
        model = preset("vae")
        log(f"training a VAE for {args.epochs} epochs on mnist5k ...")
        result = Trainer(model, data.train, data.valid, epochs=args.epochs, progress=False,
                         seed=args.seed).fit()
        log(f"trained: best valid ELBO {result.best_valid_bound:.2f} (epoch {result.best_epoch})")
    return model.eval()


# ---------------------------------------------------------------------------------------------
# The providers of ``vs_pythae``: f(model, x, k, generator) -> ln p(x) [N], under no_grad


def _over_batches(fn, model, x, k, generator, batch_size, chunk):
    parts = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        mu, logvar = model.encode(xb)
        parts.append(fn(model, xb, mu, logvar, k, chunk, generator).double())
    return torch.cat(parts)


def eager_log_weights(model, z, x, mu, logvar):
    """``log p(x|z) + log p(z) - log q(z|x)`` [c, B] in plain torch, logits materialized."""
    return common.eager_log_weights(x, model.decode_logits(z), z, mu, logvar)


def eager_estimate(log_weights):
    def estimate(model, x, mu, logvar, k, chunk, generator):
        std, parts = torch.exp(0.5 * logvar), []
        for start in range(0, k, chunk):
            eps = torch.randn((min(chunk, k - start),) + tuple(mu.shape), generator=generator)
            parts.append(log_weights(model, mu + std * eps, x, mu, logvar))
        return torch.logsumexp(torch.cat(parts), 0) - math.log(k)
    return estimate


def per_example(model, x, k, generator):
    """One example at a time, all k samples in one decoder batch (tidier than pythae's loop)."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        mu, logvar = model.encode(xi)  # [1, Z]
        q = Normal(mu, torch.exp(0.5 * logvar))
        z = q.loc + q.scale * torch.randn((k, mu.shape[1]), generator=generator)  # [k, Z]
        logits = model.decode_logits(z)  # [k, D]
        log_px_z = -F.binary_cross_entropy_with_logits(logits, xi.expand(k, -1),
                                                       reduction="none").sum(-1)
        log_pz = Normal(torch.zeros_like(mu), torch.ones_like(mu)).log_prob(z).sum(-1)
        log_w = log_px_z + log_pz - q.log_prob(z).sum(-1)
        out.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.stack(out).double()


def pythae(model, x, k, generator, block=100):
    """pythae's actual ``get_nll`` loop structure: per example, ``k // block`` blocks of ``block``
    samples, each re-encoding ``x`` repeated ``block`` times, the decoder's sigmoid output scored
    by ``binary_cross_entropy`` (log clamped at -100), the Gaussians written out."""
    out = []
    for i in range(x.shape[0]):
        x_rep = x[i:i + 1].repeat(block, 1)
        log_w = []
        for _ in range(max(1, k // block)):
            mu, logvar = model.encode(x_rep)  # [block, Z]
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)
            log_q = -0.5 * (logvar + (z - mu) ** 2 / torch.exp(logvar)).sum(-1)
            probs = torch.sigmoid(model.decode_logits(z))
            log_px_z = -F.binary_cross_entropy(probs, x_rep, reduction="none").sum(-1)
            log_w.append(log_px_z - 0.5 * (z ** 2).sum(-1) - log_q)  # the 2 pi terms cancel
        log_w = torch.cat(log_w)
        out.append((torch.logsumexp(log_w, 0) - math.log(len(log_w))).item())
    return torch.tensor(out, dtype=torch.float64)


def decoder_floor(model, x, k, generator, batch_size, chunk):
    """The decoder's matrix products alone for ``k`` samples of every example (into one reused
    output buffer): a lower bound on the time of any exact fp32 estimate. Returns None."""
    dec, n = model.decoder, x.shape[0]
    buf = None
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        for s in range(0, k, chunk):
            z = torch.randn(min(chunk, k - s) * rows, dec.trunk[0].in_features, generator=generator)
            h = dec.trunk(z)
            if buf is None or buf.shape[0] != h.shape[0]:
                buf = torch.empty(h.shape[0], dec.out.out_features)
            torch.addmm(dec.out.bias, h, dec.out.weight.t(), out=buf)
    return None


def providers(args):
    b, c = args.batch_size, args.chunk
    out = {
        "fastair": lambda m, x, k, g: _over_batches(streamed_log_mean_weight, m, x, k, g, b, c),
        "fastair-iwsvi0": lambda m, x, k, g: iwsvi_log_likelihood(
            m, x, max_steps=0, k_eval=k, chunk=c, batch_size=b, elbo_samples=1, seed=args.seed,
            progress=False, warn=False).log_px,
        "pythae": pythae,
        "per-example": per_example,
        "eager": lambda m, x, k, g: _over_batches(eager_estimate(eager_log_weights), m, x, k, g,
                                                  b, c),
    }
    if args.compile:
        compiled = torch.compile(eager_log_weights, dynamic=False)
        out["compile"] = lambda m, x, k, g: _over_batches(eager_estimate(compiled), m, x, k, g,
                                                          b, c)
    out["floor"] = lambda m, x, k, g: decoder_floor(m, x, k, g, b, c)
    return out


# ---------------------------------------------------------------------------------------------
# The measurements


def row(measurement, provider, n, k, chunk, seconds=None, peak_mb=None, log_px=None, ratio=None,
        notes=""):
    fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
    return {"measurement": measurement, "provider": provider, "n_examples": n, "k_eval": k,
            "chunk": chunk, "seconds": fmt(seconds, ".3f"), "peak_mb": fmt(peak_mb, ".2f"),
            "log_px_mean": fmt(log_px, ".3f"), "ratio": fmt(ratio, ".3f"),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "notes": notes}


def measure_time(args, model, x):
    log(f"iwsvi_time: iwsvi_log_likelihood on {len(x)} digits, k_eval={args.k_eval} ...")
    t = time.perf_counter()
    res = iwsvi_log_likelihood(model, x, k_eval=args.k_eval, chunk=args.chunk,
                               batch_size=args.batch_size, elbo_samples=args.elbo_samples,
                               seed=args.seed, progress=False)
    seconds = time.perf_counter() - t
    s = res.summary()
    log(f"  {seconds:.1f} s, -ln p(x) {s['-ln p(x)']:.2f}, gap {s['gap']:.2f}")
    notes = (f"defaults (k_svi=16, stopping rule, max_steps=2000, elbo_samples="
             f"{args.elbo_samples}); steps {s['mean_steps']:.0f} mean / {s['max_steps_used']} max; "
             f"median ESS {s['median_ess']:.0f}; max SE {s['max_se']:.3f}; gap {s['gap']:.3f}; "
             f"-L(x) {s['-L(x)']:.3f}; target < 300 s")
    return [row("iwsvi_time", "fastair", len(x), args.k_eval, args.chunk, seconds,
                log_px=-s["-ln p(x)"], notes=notes)]


def measure_memory(args, model, x):
    calls = {
        "iwsvi_memory": lambda k: iwsvi_log_likelihood(
            model, x, k_eval=k, chunk=args.chunk, batch_size=args.batch_size,
            elbo_samples=args.elbo_samples, seed=args.seed, progress=False),
        "streamed_memory": lambda k: torch.no_grad()(_over_batches)(
            streamed_log_mean_weight, model, x, k, torch.Generator().manual_seed(args.seed),
            args.batch_size, args.chunk),
    }
    rows = []
    for name, call in calls.items():
        base = None
        for k in args.memory_ks:
            log(f"{name}: peak memory on {len(x)} digits, k_eval={k}, chunk={args.chunk} ...")
            peak = common.peak_memory_mb(lambda call=call, k=k: call(k), "cpu")
            base = base or peak
            log(f"  {peak:.2f} MB ({peak / base:.3f}x the k={args.memory_ks[0]} peak)")
            rows.append(row(name, "fastair", len(x), k, args.chunk, peak_mb=peak,
                            ratio=peak / base, notes="torch.profiler allocator events; ratio vs "
                            f"k={args.memory_ks[0]}; target <= 1.10"))
    return rows


def measure_vs_pythae(args, model, x):
    k, results, rows = args.k_eval, {}, []
    k_warm = min(k, args.chunk + k % args.chunk if k % args.chunk else args.chunk)
    for name, fn in providers(args).items():
        with torch.no_grad():
            log(f"vs_pythae: {name} on {len(x)} digits, k={k} (warm-up at k={k_warm}) ...")
            fn(model, x, k_warm, torch.Generator().manual_seed(args.seed + 1))
            times = []
            for _ in range(args.repeats):  # the same seed each time: the same estimate
                t = time.perf_counter()
                log_px = fn(model, x, k, torch.Generator().manual_seed(args.seed))
                times.append(time.perf_counter() - t)
            seconds = sorted(times)[len(times) // 2]
        results[name] = (seconds, log_px)
        mean = "" if log_px is None else f", mean ln p(x) {log_px.mean().item():.3f}"
        log(f"  {seconds:.3f} s median of {args.repeats} ({1e3 * seconds / len(x):.1f} ms/digit)"
            + mean)
    fa_seconds, fa_log_px = results["fastair"]
    for name, (seconds, log_px) in results.items():
        notes = f"median of {args.repeats}"
        if name != "fastair" and log_px is not None:
            diff = log_px - fa_log_px
            se = diff.std().item() / math.sqrt(len(x)) if len(x) > 1 else math.nan
            notes += f"; mean diff vs fastair {diff.mean().item():+.4f} nats (s.e. {se:.4f})"
        notes += {"pythae": "; pythae's get_nll loop (blocks of 100, re-encoded); target >= 3",
                  "per-example": "; one example, one [k, 784] batch",
                  "floor": "; decoder matmuls only, not an estimate"}.get(name, "")
        rows.append(row("vs_pythae", name, len(x), k, args.chunk, seconds,
                        log_px=None if log_px is None else log_px.mean().item(),
                        ratio=seconds / fa_seconds, notes=notes))
    return rows


# ---------------------------------------------------------------------------------------------
# Output and command line


def write_csv(rows, path):
    """Write ``rows`` to ``path`` with this script's columns (see :func:`common.write_csv`)."""
    common.write_csv(rows, path, COLUMNS)


def table(rows):
    cols = ("measurement", "provider", "n_examples", "k_eval", "seconds", "peak_mb",
            "log_px_mean", "ratio", "notes")
    cells = [[c.replace("n_examples", "n") for c in cols]] + [[str(r[c]) for c in cols]
                                                                for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) if i in (0, 1, len(cols) - 1) else c.rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths))).rstrip() for line in cells]
    return "\n".join(lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 epochs, 50/50/10 digits, k_eval 500, memory at k 100 and "
                        "1000, no compile (under 30 s)")
    p.add_argument("--out", default=None, help="CSV to write (default: "
                   "bench/results/iwsvi_cpu.csv, with --quick bench/results/iwsvi_cpu_quick.csv)")
    p.add_argument("--run-dir", default=None,
                   help="a `fastair train` run (config.json + best.pt) instead of training")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 30)")
    p.add_argument("--n-test", type=int, default=None,
                   help="test digits of iwsvi_time (default 500)")
    p.add_argument("--n-memory", type=int, default=None,
                   help="digits of the memory measurements (default 200)")
    p.add_argument("--n-examples", type=int, default=None,
                   help="digits of vs_pythae (default 100)")
    p.add_argument("--k-eval", type=int, default=None, help="importance samples (default 5000)")
    p.add_argument("--chunk", type=int, default=100, help="samples per chunk (default 100)")
    p.add_argument("--batch-size", type=int, default=500, help="examples per batch (default 500)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="add the torch.compile provider to vs_pythae (default: on, off --quick)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed calls per vs_pythae provider, median reported (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    quick = args.quick
    defaults = dict(epochs=(2, 30), n_test=(50, 500), n_memory=(50, 200), n_examples=(10, 100),
                    k_eval=(500, 5000), compile=(False, True))
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.out is None:
        args.out = str(ROOT / "bench" / "results" / f"iwsvi_cpu{'_quick' if quick else ''}.csv")
    args.memory_ks = (100, 1000) if quick else (500, 5000)
    args.elbo_samples = args.k_eval if quick else 5000
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    log(f"{common.device_description('cpu')} | {common.version_string()}")
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= 0.5:
        log(f"note: load average {os.getloadavg()[0]:.2f}: other processes make timings noisy")
    data = load_dataset("mnist5k")
    model = get_model(args, data)
    test = data.test
    rows = measure_time(args, model, test[:args.n_test])
    rows += measure_memory(args, model, test[:args.n_memory])
    rows += measure_vs_pythae(args, model, test[:args.n_examples])
    write_csv(rows, args.out)
    print()
    print(table(rows))
    print(f"\n{len(rows)} rows written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
