#!/usr/bin/env bash
# IW-SVI (the evaluator's defaults) on the 500 test digits of each finished run; resumable.
cd /work/main
while [ ! -f runs/estimators-k64/dreg-seed2/bounds.json ]; do sleep 20; done
for seed in 0 1 2; do
  for est in iwae dreg; do
    dir=runs/estimators-k64/$est-seed$seed
    [ -f "$dir/iwsvi/summary.json" ] && continue
    .venv/bin/python -m fastair evaluate "$dir" --no-progress >> runs/estimators-k64/eval_log.txt 2>&1
  done
done
