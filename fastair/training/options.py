"""The command-line options that ``fastair train`` and ``fastair reproduce`` share, declared once:
:data:`RUN_OPTIONS` and :func:`add_run_options`.

Each command words the help of these options itself (its defaults and its unit differ: one run
for ``train``, every run of a grid for ``reproduce``); their names, types, choices and
destinations are the same in both. Every valued option defaults to None, "not given", so that
each command applies its own default (``fastair train``: its ``TRAIN_DEFAULTS`` or the saved
run's value on ``--resume``; ``fastair reproduce``: ``ReproduceConfig`` or its quick preset),
unless the command sets one with ``parser.set_defaults``.
"""
from fastair.precision import PRECISIONS
from fastair.training.config import SCHEDULES

__all__ = ["RUN_OPTIONS", "add_run_options"]

RUN_OPTIONS = {
    "--dataset": dict(default=None),
    "--data-root": dict(default=None),
    "--epochs": dict(type=int, default=None),
    "--patience": dict(type=int, default=None),
    "--schedule": dict(choices=SCHEDULES, default=None),
    "--device": dict(default=None),
    "--threads": dict(type=int, default=None),
    "--precision": dict(choices=tuple(PRECISIONS), default=None),
    "--no-progress": dict(action="store_true"),
}
"""``{flag: keyword arguments of add_argument}`` of the shared options, help excepted."""


def add_run_options(parser, help, groups=None):
    """Add every option of :data:`RUN_OPTIONS` to ``parser``.

    Args:
        parser: an ``argparse.ArgumentParser`` (a subcommand's).
        help: ``{flag: help text}`` for every flag of :data:`RUN_OPTIONS` (a ValueError names
            those missing or unknown).
        groups: ``{flag: argument group of parser}`` for the flags that go into a group of
            ``parser``'s help (default: none, all on ``parser`` itself).

    Returns:
        ``parser``.
    """
    groups = groups or {}
    wrong = sorted(set(RUN_OPTIONS) ^ set(help)) + sorted(set(groups) - set(RUN_OPTIONS))
    if wrong:
        raise ValueError(f"add_run_options: help for exactly {sorted(RUN_OPTIONS)} expected; "
                         f"missing or unknown: {wrong}")
    for flag, spec in RUN_OPTIONS.items():
        groups.get(flag, parser).add_argument(flag, help=help[flag], **spec)
    return parser
