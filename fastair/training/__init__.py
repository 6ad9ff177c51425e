"""Training the VAE family: :class:`Trainer` (Adam, schedules, validation, early stopping,
atomic checkpoints, bit-for-bit resume, Ctrl-C), :class:`TrainConfig`, and the evaluation
helpers :func:`evaluate_bound`, :func:`split_bounds`, :func:`bounds_table`."""
from fastair.evaluation.bound import bounds_table, evaluate_bound, split_bounds
from fastair.training.checkpoint import atomic_save, load_checkpoint, seed_everything
from fastair.training.config import RESUMABLE_CHANGES, SCHEDULES, TrainConfig
from fastair.training.schedules import make_scheduler
from fastair.training.trainer import METRIC_COLUMNS, Trainer, TrainResult, make_optimizer

__all__ = ["Trainer", "TrainResult", "TrainConfig", "SCHEDULES", "RESUMABLE_CHANGES",
           "METRIC_COLUMNS", "evaluate_bound", "split_bounds", "bounds_table", "make_scheduler",
           "make_optimizer", "atomic_save", "load_checkpoint", "seed_everything"]
