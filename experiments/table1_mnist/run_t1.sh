#!/bin/bash
# Table 1 on full binarized MNIST within one session: 2 seeds on 2 ranks, 90 epochs
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1
.venv/bin/python -m torch.distributed.run --standalone --nproc-per-node=2 -m fastair reproduce \
  --dataset mnist --data-root /work/shared/data/binarized_mnist --seeds 2 --epochs 90 \
  --schedule iwae --precision bf16 --valid-n 1000 --test-chosen-only \
  --out runs/issue15/table1-mnist-e90 --threads 1 --no-progress >> runs/issue15/console_t1.log 2>&1
echo "exit $? $(date -u)" >> runs/issue15/console_t1.log
