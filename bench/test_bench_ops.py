"""pytest-benchmark cases: fastair against torch eager and torch.compile of the same maths (and,
for capped_weight_norm, torch's weight norm layer as a speed yardstick).

Not part of the test suite (``testpaths = ["tests"]``); run it explicitly::

    pytest bench/test_bench_ops.py                       # timings table of pytest-benchmark
    pytest bench/test_bench_ops.py -k "k64 and fwd_bwd"  # a subset
    pytest bench/test_bench_ops.py --benchmark-json bench/results/pytest_cpu.json

Environment: ``FASTAIR_BENCH_DEVICE`` (``cpu`` by default, or ``cuda``), ``FASTAIR_BACKEND``
(backend of the ``fastair`` provider, ``auto`` by default). Each test also checks the values
against a float64 reference (not ``weight_norm``: another function) and stores the errors and
the peak memory in ``extra_info``.
"""
import functools
import os

import pytest
import torch

from bench import common

DEVICE = torch.device(os.environ.get("FASTAIR_BENCH_DEVICE", "cpu"))
BACKEND = os.environ.get("FASTAIR_BACKEND", "auto") or "auto"
IW, WN = "iwae_bernoulli_gaussian", "capped_weight_norm"
CASES = [common.Case.make(IW, k, 100) for k in (1, 8, 64, 5000)] + [
    common.Case.make("bernoulli_log_prob", 64, 100), common.Case.make("iwae_bound", 5000, 100)] + [
    common.Case.make(WN, o, i) for o, i in ((784, 200), (200, 784), (4096, 4096))]
PROVIDERS = common.providers(DEVICE, BACKEND)
TARGET_S = 0.3  # seconds of measured rounds per test (pedantic mode; 3 rounds at least)
# A sanity check (the precise tolerances are in tests/): errors up to RTOL times the largest
# |reference output|, at least 1. The gradients get the same bound, since an error of the log
# weights of that size changes the normalized weights by as much, relatively (the capped weight
# norm's w, dv and du are of order 1: the bound is 1e-5 there).
RTOL = 1e-5

pytestmark = pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                                reason="FASTAIR_BENCH_DEVICE=cuda but no CUDA device")


@functools.lru_cache(maxsize=1)  # one case's inputs at a time: k = 5000 logits take 1.5 GB
def _inputs(case):
    return common.make_inputs(case, DEVICE)


@functools.lru_cache(maxsize=1)
def _reference(case, mode):
    return common.reference(case, _inputs(case), mode)


# Providers vary fastest, then modes, then cases, so that each case's inputs and reference are
# made once; only the providers that run the op (weight_norm: capped_weight_norm only).
PARAMS = [pytest.param(case, mode, p, id=f"{case.id()}-{mode}-{p.name}")
          for case in CASES for mode in common.MODES for p in PROVIDERS if p.runs(case.op)]


@pytest.mark.parametrize("case, mode, provider", PARAMS)
def test_op(benchmark, case, mode, provider):
    benchmark.group = f"{case.op} {case.shape(' ')} {mode}"
    inputs, ref = _inputs(case), _reference(case, mode)
    with provider.context():
        step = common.make_step(provider.prepare(case, inputs), mode)
        warm_s = common.time_call(step, DEVICE)  # warm-up (compiles "compile")
        outputs = step()  # the values checked below
        errors = common.max_abs_errors(outputs, ref) if provider.same_maths else {}
        del outputs
        one_call = warm_s if warm_s > TARGET_S else common.time_call(step, DEVICE)
        rounds = int(min(max(TARGET_S / max(one_call, 1e-7), 3), 1000))
        benchmark.extra_info.update(
            backend=common.resolved_backend(provider.backend, DEVICE) if provider.backend else None,
            peak_memory_mb=common.peak_memory_mb(step, DEVICE),
            **{f"max_abs_err_{name}": err for name, err in errors.items()})
        benchmark.pedantic(common.synced(step, DEVICE), rounds=rounds, iterations=1,
                           warmup_rounds=0)
    tol = RTOL * max(1.0, ref["out"].abs().max().item())
    for name, err in errors.items():
        assert err <= tol, f"{name}: max abs error {err:.3g} > {tol:.3g}"
