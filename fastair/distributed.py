"""torch.distributed, as fastair uses it: a process group from ``torchrun``'s environment
(gloo on CPU, NCCL on CUDA with one GPU per rank), the rank and world size, and gathering
Python objects. Without ``torchrun`` (no ``WORLD_SIZE`` in the environment, or 1) everything
here is a no-op for a single process, so the same code runs on a laptop, a multi-GPU node
(``torchrun --nproc-per-node N``) and a Slurm cluster (``srun torchrun ...``).
"""
import contextlib
import datetime
import os

import torch
import torch.distributed as dist

__all__ = ["World", "world", "start", "gather", "barrier", "rank_device", "launched"]


class World:
    """``rank`` and ``size`` of this process (0 and 1 when not distributed)."""

    def __init__(self, rank=0, size=1):
        self.rank, self.size = rank, size

    @property
    def main(self):
        """Whether this is rank 0, the one that writes files and prints."""
        return self.rank == 0

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size})"


def launched():
    """Whether ``torchrun`` (or ``srun`` with its variables) started more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world():
    """The :class:`World` of the current process group (a single process if there is none)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def rank_device(device):
    """``device`` for this rank: ``"cuda"`` becomes ``cuda:LOCAL_RANK`` (one GPU per rank)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


GROUP_TIMEOUT = datetime.timedelta(hours=48)
"""How long a collective waits for the slowest rank (torch's default is 30 min)."""


@contextlib.contextmanager
def start(device="cpu"):
    """A process group for the duration of the block when launched by ``torchrun`` (gloo on
    CPU, NCCL on CUDA), torn down afterwards; yields the :class:`World`. A single process (or
    a group that already exists) is left as it is."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield world()
        return
    if not dist.is_available():
        raise RuntimeError("torchrun started several processes, but this torch build has no "
                           "torch.distributed")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(rank_device(device))
    # a rank that finishes its share of a grid waits at the gather for the others, for hours
    # in a long reproduce: the default 30 min timeout would kill the whole job
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=GROUP_TIMEOUT)
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def gather(obj):
    """Every rank's ``obj`` as a list indexed by rank, on every rank (``[obj]`` alone).
    Picklable objects; tensors should be on the CPU."""
    if world().size == 1:
        return [obj]
    out = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def barrier():
    """Wait for every rank (nothing for a single process)."""
    if world().size > 1:
        dist.barrier()
