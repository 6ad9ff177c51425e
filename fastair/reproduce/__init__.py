"""``fastair reproduce``: the AIR paper's experiments (docs/design.md §5.3) in one call.

For every k, family (VAE, DVAE α=0.5, DVAE α=1, WNI-VAE; at k > 1 their IWAE versions), grid
value and seed: train to early stopping, estimate ``ln p(x)`` on validation and test by IW-SVI;
then choose each family's grid value on validation ``ln p(x)`` and report the test numbers in the
paper's form (:mod:`fastair.reproduce.report`). Every run lives in its own directory under the
output root and is resumable (:mod:`fastair.reproduce.runner`): after Ctrl-C or a crash the same
call continues where it stopped and never redoes a finished run.
"""
import contextlib
import os
import time

import torch

import fastair
from fastair import distributed
from fastair.backends import describe
from fastair.io import progress_bar
from fastair.reproduce.protocol import FAMILIES, ReproduceConfig, RunSpec, plan_runs
from fastair.reproduce.report import markdown_tables, summarize, write_report
from fastair.reproduce.runner import RunInterrupted, run_one, run_stack, test_run
from fastair.training import rundir
from fastair.training.config import check_device

__all__ = ["reproduce", "ReproduceConfig", "RunSpec", "FAMILIES", "plan_runs", "summarize",
           "markdown_tables", "default_root", "report_header", "RunInterrupted"]


def default_root(config):
    """``runs/reproduce-<dataset>`` (``-quick`` appended for the quick preset)."""
    return os.path.join("runs", f"reproduce-{config.dataset}{'-quick' if config.quick else ''}")


def _say(bar, text):
    if bar is not None:
        bar.write(text)
    else:
        print(text, flush=True)


def _describe(r):
    test = r["test"]
    if test.get("evaluated", True) is False:
        return (f"{r['name']}: best epoch {r['best_epoch']}/{r['epochs']}, valid -ln p(x) "
                f"{r['valid']['-ln p(x)']:.2f}, test when chosen "
                f"({r['train_seconds'] + r['valid']['seconds']:.0f} s)")
    diagnostics = ""
    if "median_ess" in test:
        diagnostics = (f", test median ESS {test['median_ess']:.0f}, largest SE "
                       f"{test['max_se']:.2f}, {test['n_hit_cap']} at the step cap")
    return (f"{r['name']}: best epoch {r['best_epoch']}/{r['epochs']}, "
            f"valid -ln p(x) {r['valid']['-ln p(x)']:.2f}, test -ln p(x) "
            f"{test['-ln p(x)']:.2f}, Δinf {test['gap']:.2f}{diagnostics} "
            f"({r['train_seconds'] + r['valid']['seconds'] + test['seconds']:.0f} s)")


def reproduce(config=None, root=None, progress=True):
    """Run (or continue) every run of ``config`` under ``root`` and write the report.

    Args:
        config: a :class:`ReproduceConfig` (default: the full protocol on mnist5k).
        root: output directory (default :func:`default_root`).
        progress: a progress bar over runs (its text names the run and its epoch) with the
            bars of the run's training epochs and IW-SVI below it, and a line per finished run.
    Returns:
        ``(summary, paths)``: :func:`summarize`'s tables and the files written.
    Raises:
        KeyboardInterrupt: after Ctrl-C, once the report of the finished runs is written.
    """
    from fastair.data import load_dataset

    config = config if config is not None else ReproduceConfig()
    root = root if root is not None else default_root(config)
    check_device(config.device)
    data = load_dataset(config.dataset, root=config.data_root)
    runs = plan_runs(config)
    w = distributed.world()
    # a second reproduce on the same root is refused; under torchrun rank 0 holds the root and
    # every rank holds the runs it trains
    with rundir.hold(root) if w.main else contextlib.nullcontext():
        return _reproduce_held(config, root, data, runs, progress, w)


STACK_MAX_K = 8
"""The largest k whose runs ``reproduce`` stacks. Measured on a 2-core CPU
(``bench/results/train_cpu/stack_cpu.md``): the 13 runs of a seed train 1.9x faster stacked at
k = 1 in bf16, 1.2x at k = 8, and 0.86x at k = 64, where every run's step is already its
matmuls and the stacked activations outgrow the caches."""


def _stacks(config, runs):
    """The runs in plan order, as the lists that train together: one per k and seed with
    ``config.stack`` and ``k <= STACK_MAX_K``, else one run each."""
    groups = []
    for spec in runs:
        stack = config.stack and spec.k <= STACK_MAX_K
        if stack and groups and (groups[-1][0].k, groups[-1][0].seed) == (spec.k, spec.seed):
            groups[-1].append(spec)
        else:
            groups.append([spec])
    return groups


def _reproduce_held(config, root, data, runs, progress, w):
    start, results = time.perf_counter(), []
    groups = _stacks(config, runs)[w.rank::w.size]  # under torchrun: this rank's share
    progress = progress and w.main
    bar = progress_bar(progress, total=sum(map(len, groups)), unit="run", desc="reproduce",
                       leave=True)
    say = _say if w.main else (lambda bar, text: print(f"rank {w.rank}: {text}", flush=True))
    try:
        for group in groups:
            name = group[0].name if len(group) == 1 else f"k{group[0].k}/seed{group[0].seed}"
            if bar is not None:
                bar.set_postfix_str(name)

            def on_epoch_end(trainer, row, name=name):
                if bar is not None:
                    bar.set_postfix_str(f"{name} epoch {row['epoch']}, valid -L "
                                        f"{-row['valid_bound']:.2f}")

            if len(group) == 1:
                done = [run_one(group[0], config, data, root, progress=progress,
                                on_epoch_end=on_epoch_end)]
            else:
                done = run_stack(group, config, data, root, progress=progress,
                                 on_epoch_end=on_epoch_end)
            for result in done:
                results.append(result)
                say(bar, ("done before: " if result.pop("resumed") else "") + _describe(result))
                if bar is not None:
                    bar.update(1)
        results = _gathered(results, runs)
        if config.test_chosen_only:
            results = _test_chosen(config, root, data, results, runs, progress, bar, say, w)
    except KeyboardInterrupt:
        if results:
            write_report(root, config, results, summarize(results),
                         header=report_header(config, results, time.perf_counter() - start,
                                              False))
        raise
    finally:
        if bar is not None:
            bar.close()
    summary = summarize(results)
    if not w.main:
        return summary, []
    paths = write_report(root, config, results, summary,
                         header=report_header(config, results, time.perf_counter() - start,
                                              True))
    return summary, paths


def _gathered(results, runs):
    """Every rank's results, in plan order, on every rank (``results`` alone without
    torchrun)."""
    if distributed.world().size == 1:
        return results
    order = {spec.name: i for i, spec in enumerate(runs)}
    merged = [r for part in distributed.gather(results) for r in part]
    return sorted(merged, key=lambda r: order[r["name"]])


def _test_chosen(config, root, data, results, runs, progress, bar, say, w):
    """With ``config.test_chosen_only``: IW-SVI on test for every seed of each family's grid
    value chosen on validation, shared out over the ranks; returns the updated results."""
    chosen = {(row["k"], row["family"], row["strength"]) for row in summarize(results)["table"]}
    todo = [r for r in results if (r["k"], r["family"], r["strength"]) in chosen
            and r["test"].get("evaluated") is False]
    tested = []
    for r in todo[w.rank::w.size]:
        if bar is not None:
            bar.set_postfix_str(f"{r['name']} test")
        tested.append(test_run(r, config, data, root, progress=progress))
        say(bar, "tested: " + _describe(tested[-1]))
    done = {r["name"]: r for r in _gathered(tested, runs)}
    return [done.get(r["name"], r) for r in results]


def report_header(config, results, wall, complete):
    """The heading paragraph of ``report.md``: what ``config`` ran (grids, training, the IW-SVI
    settings), the compute of ``results`` and ``wall`` seconds of this invocation, the machine;
    ``complete=False`` marks an interrupted report."""
    compute = sum(r["train_seconds"] + r["valid"]["seconds"] + r["test"]["seconds"]
                  for r in results)
    status = "" if complete else " (INCOMPLETE: interrupted, rerun the same command to finish)"
    ev = config.evaluator()
    stacked = (f", the runs of each k <= {STACK_MAX_K} and seed trained as one stacked model"
               if config.stack else "")
    return (f"# fastair reproduce: {config.dataset}{' (--quick)' if config.quick else ''}"
            f"{status}\n\n"
            f"{len(results)} runs: k in {list(config.ks)}, {config.seeds} seed(s), σ grid "
            f"{list(config.sigmas)}, H grid {list(config.Hs)}; training: Adam 1e-3"
            f"{'' if config.schedule == 'constant' else f' ({config.schedule} schedule)'}, "
            f"batch 100, at most {config.epochs} epochs, early stopping after "
            f"{config.patience} epochs without a better validation bound, in "
            f"{config.precision}{stacked}"
            f". IW-SVI: k_svi {ev['k_svi']}, Adam from lr "
            f"{ev['lr']:g} until the bound stops improving (at most {ev['max_steps']} steps per "
            f"example), k_eval {ev['k_eval']} in chunks of {ev['chunk']}"
            + ("" if config.valid_n is None else
               f"; the choice on the first {config.valid_n} validation examples")
            + ("; test only for each family's chosen value" if config.test_chosen_only else "")
            + ". "
            f"Compute {compute / 60:.1f} min in all (this invocation {wall / 60:.1f} min), "
            f"device {config.device}, torch {torch.__version__}, fastair {fastair.__version__}, "
            f"fastair backend {_backend(config.device)}.\n")


def _backend(device):
    """The backend name, with what ``auto`` resolves to on ``device`` (e.g. ``auto -> native``)."""
    return describe(torch.device(device).type)
