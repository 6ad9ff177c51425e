#!/usr/bin/env bash
# Training with each gradient estimator: IWAE vs DReG at k = 64 on mnist5k, 3 seeds, resumable.
cd /work/main
for seed in 0 1 2; do
  for est in iwae dreg; do
    dir=runs/estimators-k64/$est-seed$seed
    resume=(); [ -f "$dir/last.pt" ] && resume=(--resume)
    [ -f "$dir/bounds.json" ] && continue   # finished
    .venv/bin/python -m fastair train --k 64 --estimator $est --seed $seed --run-dir "$dir" \
      --no-progress "${resume[@]}" >> runs/estimators-k64/log.txt 2>&1
  done
done
