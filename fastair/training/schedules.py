"""Learning-rate schedules as ``LambdaLR`` factors, stepped once per epoch.

The factors are small classes (not lambdas) so that the scheduler's ``state_dict`` holds them.
"""
import torch

__all__ = ["ConstantFactor", "ExponentialFactor", "IWAEStagesFactor", "make_scheduler"]


class ConstantFactor:
    """``1`` at every epoch."""

    def __call__(self, epoch):
        return 1.0


class ExponentialFactor:
    """``gamma ** epoch``."""

    def __init__(self, gamma):
        self.gamma = float(gamma)

    def __call__(self, epoch):
        return self.gamma ** epoch


class IWAEStagesFactor:
    """The IWAE paper's schedule (Burda et al., 2016): stage ``i`` lasts ``base ** i`` epochs
    at the factor ``10 ** (-i / (stages - 1))``; ``i = stages - 1`` lasts until the end.

    With the defaults (8 stages, base 3) the stages end after 1, 4, 13, 40, 121, 364, 1093
    epochs and the last factor is 0.1.
    """

    def __init__(self, stages=8, base=3):
        self.stages, self.base = int(stages), int(base)

    def stage(self, epoch):
        i, end = 0, 1
        while epoch >= end and i < self.stages - 1:
            i += 1
            end += self.base ** i
        return i

    def __call__(self, epoch):
        return 10.0 ** (-self.stage(epoch) / max(self.stages - 1, 1))


def make_scheduler(optimizer, schedule, lr_decay=0.99):
    """``LambdaLR`` for ``schedule`` in ``("constant", "exponential", "iwae")``."""
    factors = {"constant": ConstantFactor, "exponential": lambda: ExponentialFactor(lr_decay),
               "iwae": IWAEStagesFactor}
    if schedule not in factors:
        raise ValueError(f"schedule: expected one of {tuple(factors)}, got {schedule!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors[schedule]())
