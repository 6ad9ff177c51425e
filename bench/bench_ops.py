#!/usr/bin/env python
"""Benchmark fastair's ops against torch eager and ``torch.compile`` of the same maths.

Every provider runs on the same seeded inputs in one process; per (op, shape, mode, provider)
it records the time (p50, p20, p80), the peak extra memory of one call, the largest absolute
error of the output and of each gradient against a float64 reference and, on CUDA, the achieved
bandwidth. Results go to a CSV (one row per metric, written atomically) and a printed table.

    python -m bench.bench_ops [--device cpu|cuda] [--quick] [--out CSV] [--backend auto]
    python -m bench.bench_ops --summary bench/results/ops_cpu.csv     # reprint a table
"""
import argparse
import csv
import datetime
import math
import os
import sys
from pathlib import Path

import torch

import fastair
from bench import common
from fastair.io import progress_bar

ROOT = Path(__file__).resolve().parent.parent

COLUMNS = ("kernel", "provider", "mode", "metric", "unit", "x_name", "x_value", "p50", "p20",
           "p80", "config", "device", "timestamp", "version")
UNITS = {"time": "ms", "memory": "MB", "max_abs_err": "abs", "bandwidth": "GB/s"}
COPY_MB = 1024


# ---------------------------------------------------------------------------------------------
# Measuring


class Run:
    """What every row of one run shares, and the rows themselves."""

    def __init__(self, device, dtype=torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        self.description = common.device_description(self.device)
        self.version = common.version_string()
        self.timestamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.rows = []
        self.failures = []

    def add(self, kernel, provider, mode, metric, x_name, x_value, values, config):
        p50, p20, p80 = values
        self.rows.append({
            "kernel": kernel, "provider": provider, "mode": mode, "metric": metric,
            "unit": UNITS[metric], "x_name": x_name, "x_value": str(x_value),
            "p50": _num(p50), "p20": _num(p20), "p80": _num(p80), "config": config,
            "device": self.description, "timestamp": self.timestamp, "version": self.version})


def _num(v):
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"


def measure(run, case, mode, provider, backend, inputs, ref, target_s, min_reps):
    """Time, memory, errors (and bandwidth on CUDA) of one provider on one case and mode."""
    config = case.config(run.dtype, backend)
    with provider.context():
        call = provider.prepare(case, inputs)
        step = common.make_step(call, mode)
        outputs = step()  # warm-up (and compilation for "compile"); these values are checked
        if not provider.same_maths:  # another function (weight_norm): no error to speak of
            errors = dict.fromkeys(common.output_names(call, mode), math.nan)
        else:
            errors = common.max_abs_errors(outputs, ref) if ref is not None else {}
        del outputs
        p50, p20, p80, _ = common.time_ms(step, run.device, target_s=target_s,
                                          min_reps=min_reps, warmed=True)
        memory = common.peak_memory_mb(step, run.device)
    add = lambda metric, values, cfg=config: run.add(  # noqa: E731
        case.op, provider.name, mode, metric, case.x_name, case.x_value, values, cfg)
    add("time", (p50, p20, p80))
    add("memory", (memory,) * 3)
    for name, err in errors.items():
        add("max_abs_err", (err,) * 3, f"{config},of={name}")
    if run.device.type == "cuda":
        nbytes = common.min_bytes(case, mode, torch.empty((), dtype=run.dtype).element_size())
        add("bandwidth", tuple(nbytes / 1e9 / (t / 1e3) for t in (p50, p80, p20)))


def _first_line(err):
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"


def run_benchmarks(args):
    """Run every (case, mode, provider) of ``args``; return the :class:`Run`."""
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Run(args.device)
    dev = run.device
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    torch.manual_seed(args.seed)
    provs = [p for p in common.providers(dev, args.backend)
             if not args.providers or p.name in args.providers]
    backends = {}
    for p in list(provs):
        if p.backend is None:
            continue
        try:  # resolving also builds the C++ kernels (native) once, before any timing
            backends[p.name] = common.resolved_backend(p.backend, dev)
        except Exception as err:  # an explicitly requested backend that cannot run here
            run.failures.append(f"{p.name}: backend {p.backend!r} unavailable: {_first_line(err)}")
            provs.remove(p)
    cases = [c for c in common.cases(dev, args.quick) if not args.ops or c.op in args.ops]
    modes = args.modes or common.MODES
    target_s, min_reps = (0.05, 3) if args.quick else (args.target_time, 5)

    print(f"device: {run.description}\nversion: {run.version}\n"
          f"fastair backend: {args.backend} -> {backends.get('fastair', 'n/a')}", flush=True)
    if dev.type == "cpu" and hasattr(os, "getloadavg") and os.getloadavg()[0] >= 0.5:
        print(f"note: load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores: other "
              "processes make CPU timings noisy (--threads 1 suffers less)", flush=True)
    if dev.type == "cuda":
        gbs = common.copy_bandwidth_gbs(dev, COPY_MB)
        run.add("copy", "torch", "fwd", "bandwidth", "MB", COPY_MB, gbs,
                f"size={COPY_MB}MB,dtype=float32")

    total = len(modes) * sum(p.runs(c.op) for c in cases for p in provs)
    bar = progress_bar(total=total, unit="case", leave=True)
    for case in cases:
        inputs = common.make_inputs(case, dev, run.dtype, seed=args.seed)
        for mode in modes:
            try:
                ref = common.reference(case, inputs, mode)
            except Exception as err:  # e.g. out of memory: still time, without errors
                run.failures.append(f"{case.label()} {mode} float64 reference: "
                                    f"{_first_line(err)}")
                ref = None
            for p in (p for p in provs if p.runs(case.op)):
                if bar is not None:
                    bar.set_description(f"{case.label()} {mode} {p.name}")
                try:
                    measure(run, case, mode, p, backends.get(p.name), inputs, ref,
                            target_s, min_reps)
                except Exception as err:  # keep going: one broken provider spoils no others
                    run.failures.append(f"{case.label()} {mode} {p.name}: "
                                        f"{_first_line(err)}")
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                if bar is not None:
                    bar.update()
            del ref
        del inputs
    if bar is not None:
        bar.close()
    return run


# ---------------------------------------------------------------------------------------------
# CSV


def write_csv(rows, path):
    """Write ``rows`` to ``path`` with this script's columns (see :func:`common.write_csv`)."""
    common.write_csv(rows, path, COLUMNS)


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise SystemExit(f"{path}: expected the columns {','.join(COLUMNS)}, "
                             f"got {','.join(reader.fieldnames or ())}")
        return list(reader)


# ---------------------------------------------------------------------------------------------
# Table


def _config_dict(config):
    return dict(part.split("=", 1) for part in config.split(",") if "=" in part)


def _fmt(v, kind):
    if v is None:
        return "-"
    if math.isnan(v):
        return "nan"
    if kind in ("ms", "MB"):  # no exponents for the large values, a few digits for the others
        return f"{v:.0f}" if v >= 1000 else f"{v:.4g}" if v >= 0.01 or v == 0 else f"{v:.1e}"
    return {"ratio": f"{v:.2f}x", "err": f"{v:.1e}", "GB/s": f"{v:.0f}",
            "%": f"{100 * v:.0f}%"}[kind]


# Short provider names of the table's headers ("fastair ms", "wn/fa", "MB wn", ...).
_SHORT = {"fastair": "fa", "eager": "eager", "compile": "compile", "weight_norm": "wn",
          "fastair-triton": "triton"}


def summarize(rows):
    """The printed table: one line per (op, shape, mode), fastair against the other providers."""
    groups, copy_gbs = {}, None
    for r in rows:
        if r["kernel"] == "copy":
            copy_gbs = float(r["p50"])
            continue
        cfg = _config_dict(r["config"])
        same_case = tuple((n, v) for n, v in cfg.items() if n not in ("backend", "of"))
        key = (r["kernel"], r["x_name"], r["x_value"], r["mode"], same_case)
        g = groups.setdefault(key, {})
        cell = g.setdefault(r["provider"], {"backend": cfg.get("backend")})
        value = float(r["p50"])
        if r["metric"] == "max_abs_err":  # the worst over the output and the gradients
            old = cell.get("max_abs_err", 0.0)
            cell["max_abs_err"] = value if math.isnan(value) or math.isnan(old) else max(old, value)
        else:
            cell[r["metric"]] = value
    if not groups:
        return "(no results)"
    present = {p for g in groups.values() for p in g}
    has_bw = any("bandwidth" in c for g in groups.values() for c in g.values())
    optional = lambda *names: [p for p in names if p in present]  # noqa: E731
    base = ["fastair", "eager", "compile"]
    timed = base + optional("weight_norm", "fastair-triton")
    versus = ["eager", "compile"] + optional("weight_norm")  # time ratios x/fa
    memory = base + optional("weight_norm")
    errors = base  # weight_norm computes another function: no error

    header = ["op", "shape", "mode"]
    header += [f"{'fastair' if p == 'fastair' else _SHORT[p]} ms" for p in timed]
    header += [f"{_SHORT[p]}/fa" for p in versus]
    header += [f"MB {_SHORT[p]}" for p in memory] + [f"err {_SHORT[p]}" for p in errors]
    header += ["fa GB/s", "fa %copy"] if has_bw else []
    lines = []
    for (op, x_name, x_value, mode, same_case), g in groups.items():
        get = lambda prov, metric, g=g: g.get(prov, {}).get(metric)
        fa = get("fastair", "time")
        ratio = lambda other, fa=fa: other / fa if other is not None and fa else None
        line = [op, common.shape_text(op, x_name, x_value, dict(same_case)), mode]
        line += [_fmt(get(p, "time"), "ms") for p in timed]
        line += [_fmt(ratio(get(p, "time")), "ratio") for p in versus]
        line += [_fmt(get(p, "memory"), "MB") for p in memory]
        line += [_fmt(get(p, "max_abs_err"), "err") for p in errors]
        if has_bw:
            bw = get("fastair", "bandwidth")
            frac = bw / copy_gbs if bw is not None and copy_gbs else None
            line += [_fmt(bw, "GB/s"), _fmt(frac, "%")]
        lines.append(line)
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    left = {0, 1, 2}  # op, shape and mode read better left-aligned
    fmt_row = lambda row: "  ".join(  # noqa: E731
        c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    first = rows[0]
    fa_backend = next((c.get("backend") for g in groups.values() for p, c in g.items()
                       if p == "fastair"), "n/a")
    out = [f"{first['device']} | {first['version']} | fastair backend: {fa_backend} | "
           f"{first['timestamp']}"]
    if copy_gbs:
        out.append(f"device-to-device copy: {copy_gbs:.0f} GB/s")
    out += ["time: p50 in ms; x/fa > 1 means fastair is faster; MB: peak extra memory of one "
            "call; err: max |value - float64 reference| over the output and the gradients", "",
            fmt_row(header), "  ".join("-" * w for w in widths)]
    out += [fmt_row(line) for line in lines]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Command line


def _list(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--quick", action="store_true",
                   help="a few small cases and a few repetitions (under a minute on a CPU)")
    p.add_argument("--out", default=None,
                   help="CSV to write (default bench/results/ops_<device>.csv for the full run; "
                        "none for a subset: --quick, --ops, --providers or --modes)")
    p.add_argument("--backend", default=fastair.backends.backend_setting(),
                   choices=fastair.BACKENDS,
                   help="fastair backend of the 'fastair' provider (default: auto, or "
                        "$FASTAIR_BACKEND)")
    p.add_argument("--providers", type=_list, default=None,
                   help="comma-separated subset of " + ",".join(common.PROVIDER_NAMES)
                        + " (weight_norm runs for capped_weight_norm only, fastair-triton on "
                        "CUDA only)")
    p.add_argument("--ops", type=_list, default=None,
                   help="comma-separated subset of " + ",".join(common.ARGS))
    p.add_argument("--modes", type=_list, default=None,
                   help="comma-separated subset of fwd,fwd_bwd")
    p.add_argument("--target-time", type=float, default=0.75,
                   help="seconds of timed calls per measurement (default 0.75)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (torch.set_num_threads; default: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summary", metavar="CSV", default=None,
                   help="print the table of an existing CSV and exit")
    args = p.parse_args(argv)
    for name, allowed in (("ops", common.ARGS), ("modes", common.MODES),
                          ("providers", common.PROVIDER_NAMES)):
        bad = [v for v in getattr(args, name) or () if v not in allowed]
        if bad:
            p.error(f"--{name}: unknown {', '.join(bad)}; expected some of {', '.join(allowed)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.summary:
        print(summarize(read_csv(args.summary)))
        return 0
    subset = bool(args.quick or args.ops or args.providers or args.modes)
    record = ROOT / "bench" / "results" / f"ops_{torch.device(args.device).type}.csv"
    # a subset never replaces the full record by default: give --out to keep it
    out = Path(args.out) if args.out else (None if subset else record)
    run = run_benchmarks(args)
    if out is not None:
        write_csv(run.rows, out)
    print()
    print(summarize(run.rows))
    print(f"\n{len(run.rows)} rows written to {out}" if out is not None else
          f"\n{len(run.rows)} rows, not written (a subset of the cases: --out FILE keeps them; "
          f"the full record {record.relative_to(ROOT)} is left as it was)")
    for failure in run.failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
