"""Training settings: one dataclass, validated, saved to ``config.json`` of a run."""
import dataclasses
import math
from dataclasses import dataclass

import torch

from fastair.precision import PRECISIONS, check_precision

__all__ = ["TrainConfig", "SCHEDULES", "PRECISIONS", "RESUMABLE_CHANGES", "check_device"]

SCHEDULES = ("constant", "exponential", "iwae")
"""Learning-rate schedules, stepped once per epoch (see :mod:`fastair.training.schedules`)."""


RESUMABLE_CHANGES = ("epochs", "patience", "device", "progress", "num_threads", "lr",
                     "precision", "k_chunk")
"""Settings that may differ when a run is resumed; any other change is an error. A new ``lr``
(after a divergence, say) restarts the schedule's factor from it at the current epoch."""


def check_device(device):
    """Raise a ValueError that says why ``device`` cannot be used (not a device name, not cpu
    or cuda, CUDA on a CPU build of torch or without a GPU, an index past the last GPU)."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: {device!r} is not a torch device (cpu, cuda, cuda:1 ...)") \
            from None
    if d.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: fastair runs on cpu or cuda devices only (its "
                         f"kernels have no {d.type} backend); use cpu")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise ValueError(f"device {device!r}: {why}; use cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) here")


@dataclass
class TrainConfig:
    """How to train (docs/design.md §5.2 defaults).

    Attributes:
        epochs: the largest number of epochs (training stops earlier on ``patience``).
        batch_size: examples per Adam step (the last batch of an epoch may be smaller).
        lr: Adam's learning rate (the schedule's starting value).
        schedule: ``"constant"``; ``"exponential"`` (``lr * lr_decay ** epoch``); ``"iwae"``
            (the IWAE paper's: stage ``i = 0, 1, ...`` lasts ``3 ** i`` epochs at
            ``lr * 10 ** (-i / 7)``, the last stage, ``i = 7``, lasting until the end).
        lr_decay: the per-epoch factor of ``"exponential"``.
        betas, adam_eps: Adam's other settings.
        patience: stop after this many epochs without a better validation bound; 0 or None
            trains all ``epochs``.
        seed: seeds torch, numpy, python's ``random`` and the shuffling generator.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        eval_k: importance samples of the validation bound (None: the model's ``k``).
        eval_batch_size: examples per batch when evaluating.
        init_decoder_bias: set the decoder output bias from the training-data mean first.
        progress: show a tqdm progress bar (if tqdm is installed).
        num_threads: ``torch.set_num_threads`` for the run (None: leave as it is).
        precision: ``"fp32"``; ``"bf16"`` (the forward under ``torch.autocast`` in bfloat16:
            matmuls in bfloat16, the fused ops reading bfloat16 logits and accumulating in
            float32; weights, gradients and Adam's state stay float32); ``"fp16"`` (the same in
            float16 with dynamic loss scaling, CUDA only).
        k_chunk: None, or the number of importance samples that go through the decoder at a
            time in the training bound, each chunk remade in the backward
            (:attr:`fastair.models.VAE.k_chunk`): memory flat in k for one more decoder
            forward a step; the same draws, bound and gradients (to rounding).
    """

    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    schedule: str = "constant"
    lr_decay: float = 0.99
    betas: tuple = (0.9, 0.999)
    adam_eps: float = 1e-8
    patience: int = 30
    seed: int = 0
    device: str = "cpu"
    eval_k: int = None
    eval_batch_size: int = 500
    init_decoder_bias: bool = True
    progress: bool = True
    num_threads: int = None
    precision: str = "fp32"
    k_chunk: int = None

    def __post_init__(self):
        def positive_int(name, allow_none=False, allow_zero=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
                raise ValueError(f"{name}: expected an int >= {0 if allow_zero else 1}, got {v!r}")

        def positive_float(name, high=None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    math.isfinite(v) and v > 0 and (high is None or v <= high)):
                limit = f" and <= {high}" if high is not None else ""
                raise ValueError(f"{name}: expected a finite float > 0{limit}, got {v!r}")

        positive_int("epochs", allow_zero=True)
        positive_int("batch_size")
        positive_int("patience", allow_none=True, allow_zero=True)
        positive_int("eval_k", allow_none=True)
        positive_int("eval_batch_size")
        positive_int("num_threads", allow_none=True)
        positive_int("k_chunk", allow_none=True)
        positive_float("lr")
        positive_float("lr_decay", high=1.0)
        positive_float("adam_eps")
        check_precision(self.precision)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas: expected two floats in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in betas)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {self.seed!r}")
        if not isinstance(self.device, str):
            self.device = str(self.device)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"config: unknown settings {unknown}")
        return cls(**d)

    def changed_for_resume(self, saved):
        """Names of settings that differ from ``saved`` (a :class:`TrainConfig`) and may not
        change when resuming."""
        mine, theirs = self.to_dict(), saved.to_dict()
        return [n for n in mine if n not in RESUMABLE_CHANGES and mine[n] != theirs[n]]
