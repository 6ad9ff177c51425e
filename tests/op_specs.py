"""One spec per public op, for the table-driven contract test (tests/test_op_contract.py):
how to call it, how to make inputs of a dtype on a device, which inputs get gradients.

Adding an op to fastair adds one :class:`OpSpec` here; every contract check then runs on it.
"""
from dataclasses import dataclass
from typing import Callable

import torch

import fastair


@dataclass(frozen=True)
class OpSpec:
    name: str
    call: Callable  # (*inputs) -> Tensor: the public op with its fixed non-tensor arguments
    make: Callable  # (dtype, device, generator) -> tuple of input tensors
    differentiable: tuple  # per input: does it get a gradient?

    def inputs(self, dtype=torch.float64, device="cpu", seed=0):
        return self.make(dtype, device, torch.Generator().manual_seed(seed))


def _randn(g, dtype, device, *shape, scale=1.0):
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)


def _bits(g, dtype, device, *shape):
    return (torch.rand(*shape, generator=g) < 0.4).to(dtype).to(device)


def _capped_rows(dtype, device, g):
    """Rows of norm 0.5 to 3 against caps ``H sigmoid(u)`` near 1: some capped, none tied."""
    v = torch.randn(6, 5, generator=g, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True) * torch.linspace(0.5, 3.0, 6, dtype=torch.float64)[:, None]
    u = torch.randn(6, generator=g, dtype=torch.float64) * 0.3 + 1.0
    return v.to(dtype).to(device), u.to(dtype).to(device)


SPECS = [
    OpSpec("bernoulli_log_prob", fastair.bernoulli_log_prob,
           lambda dt, dev, g: (_randn(g, dt, dev, 3, 4, 7, scale=3), _bits(g, dt, dev, 4, 7)),
           (True, False)),
    OpSpec("gaussian_log_prob", fastair.gaussian_log_prob,
           lambda dt, dev, g: (_randn(g, dt, dev, 3, 4, 5), _randn(g, dt, dev, 4, 5),
                               _randn(g, dt, dev, 4, 5, scale=0.5)),
           (True, True, True)),
    OpSpec("iwae_bound", lambda v: fastair.iwae_bound(v, dim=0),
           lambda dt, dev, g: (_randn(g, dt, dev, 6, 4, scale=5),), (True,)),
    OpSpec("iwae_bernoulli_gaussian", fastair.iwae_bernoulli_gaussian,
           lambda dt, dev, g: (_bits(g, dt, dev, 4, 7), _randn(g, dt, dev, 3, 4, 7, scale=3),
                               _randn(g, dt, dev, 3, 4, 5), _randn(g, dt, dev, 4, 5),
                               _randn(g, dt, dev, 4, 5, scale=0.5)),
           (False, True, True, True, True)),
    OpSpec("capped_weight_norm", lambda v, u: fastair.capped_weight_norm(v, u, 1.5),
           _capped_rows, (True, True)),
    OpSpec("linear_bernoulli_log_prob", fastair.linear_bernoulli_log_prob,
           lambda dt, dev, g: (_randn(g, dt, dev, 2, 3, 6), _randn(g, dt, dev, 7, 6),
                               _randn(g, dt, dev, 7), _bits(g, dt, dev, 3, 7)),
           (True, True, True, False)),
]
BY_NAME = {spec.name: spec for spec in SPECS}
