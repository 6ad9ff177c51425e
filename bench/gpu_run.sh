#!/usr/bin/env bash
# One command for a fresh GPU machine with torch and triton preinstalled and no network: the
# CUDA tests and the GPU benchmarks, in under 9 minutes, results written to OUT_DIR.
#
#   bench/gpu_run.sh OUT_DIR            # on the GPU machine (PYTHON=... to pick the interpreter)
#   bench/gpu_run.sh --dry-run OUT_DIR  # on CPU: the same stages at tiny sizes, the Triton
#                                       # interpreter for the kernels
#                                       # (tests/packaging/test_gpu_run.py)
#
# Stages, each under its own time limit so that a slow one cannot starve the others:
#   tests  pytest -m cuda (tests/ops/test_cuda.py, tests/ops/test_op_contract.py: the six ops'
#          values, gradients and torch.compile on CUDA) -> tests.log (skipped if pytest is
#          missing)
#   ops    python -m bench.bench_ops: each op against eager and torch.compile, with the measured
#          copy bandwidth -> ops.csv, ops.log
#   e2e    python -m bench.gpu_bench: a training epoch eager and as a CUDA graph, IW-SVI
#          -> gpu_bench.csv, gpu_bench.md, e2e.log
# summary.md holds the machine, the versions, each stage's exit code and time, and the tables in
# markdown: at most 7 files, none in a subfolder. The exit code is 0 only if every stage passed.
set -u
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:?usage: bench/gpu_run.sh [--dry-run] OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
if [ "$DRY" = 1 ]; then
  export TRITON_INTERPRET=1
  DEV=cpu; T_TESTS=120; T_OPS=120; T_E2E=120
  OPS_ARGS=(--quick --ops iwae_bernoulli_gaussian --providers fastair,eager --modes fwd_bwd)
  E2E_ARGS=(--quick)
else
  unset TRITON_INTERPRET
  DEV=cuda; T_TESTS=210; T_OPS=170; T_E2E=110
  OPS_ARGS=(--target-time 0.2)
  E2E_ARGS=()
fi

status=0
{
  echo "# bench/gpu_run.sh$([ "$DRY" = 1 ] && echo ' --dry-run') on $(hostname), $(date -u +%FT%TZ)"
  echo
  echo '```'
  "$PY" - <<'PYEOF' 2>&1
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", p.multi_processor_count, "SMs")
else:
    print("gpu: none (CPU)")
PYEOF
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm \
    --format=csv,noheader 2>&1
  echo '```'
  echo
  echo "| stage | exit code | seconds | limit |"
  echo "|---|---|---|---|"
} > "$OUT/summary.md"

stage() {  # stage NAME LIMIT_S COMMAND...: run it under its limit, log to NAME.log
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "| $name | $rc$([ $rc = 124 ] && echo ' (time limit)') | $(( $(date +%s) - start )) | $limit |" \
    >> "$OUT/summary.md"
  echo "gpu_run: $name exited $rc" >&2
  [ $rc = 0 ] || status=1
}

if "$PY" -c "import pytest" 2> /dev/null; then
  stage tests "$T_TESTS" "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs \
    tests/ops/test_cuda.py tests/ops/test_op_contract.py
else
  echo "| tests | not run: pytest is not installed | 0 | $T_TESTS |" >> "$OUT/summary.md"
fi
stage ops "$T_OPS" "$PY" -m bench.bench_ops --device "$DEV" --out "$OUT/ops.csv" "${OPS_ARGS[@]}"
stage e2e "$T_E2E" "$PY" -m bench.gpu_bench --device "$DEV" --out "$OUT" "${E2E_ARGS[@]}"

{  # the tables, in markdown, below the stages
  echo
  echo "## Ops (each op against eager and torch.compile; % of the measured copy bandwidth)"
  echo
  echo '```'
  [ -f "$OUT/ops.csv" ] && "$PY" -m bench.bench_ops --summary "$OUT/ops.csv" 2>&1
  echo '```'
  echo
  [ -f "$OUT/gpu_bench.md" ] && sed 's/^# /## /' "$OUT/gpu_bench.md"
} >> "$OUT/summary.md"
exit $status
