"""A grid trained as one stacked model: each member matches the same run trained alone.

Not bit for bit: the stack runs batched matmuls and the unfused Bernoulli term where a run alone
runs plain matmuls and the fused op, so float32 sums are blocked differently. Step by step the
running training bound agrees to about 1e-6 relative in float32, and the weights after several
epochs to about 1e-6 absolute; in float64 the stacked and lone objectives agree to 1e-12.
"""
import os
import signal

import pytest
import torch
from helpers import D, tiny_splits

from fastair.models import VAE
from fastair.models.stacked import StackedVAE
from fastair.training import Trainer, load_checkpoint, seed_everything
from fastair.training.stack import StackTrainer

GRID = [dict(), dict(sigma=0.3, alpha=1.0), dict(sigma=0.3, alpha=0.5), dict(H=0.7),
        dict(H=1.5), dict(sigma=0.2, alpha=0.5), dict(sigma=0.6, alpha=0.0),
        dict(H=0.4, H_layers="hidden")]
"""Every kind of member: plain, noisy only, mixed (two encoder terms), capped (every encoder
layer, or the hidden ones only), alpha 0."""
SETTINGS = dict(batch_size=16, progress=False, patience=0, epochs=3)


def _model(i, kw, k=2, dtype=torch.float32):
    seed_everything(10 + i)
    return VAE(x_dim=D, z_dim=3, hidden=(8, 6), k=k, **kw).to(dtype)


def _trainer(i, kw, run_dir=None, k=2, trace=None, **settings):
    def on_batch_end(t, b):
        trace.append(t.partial["sum"].item())
    return Trainer(_model(i, kw, k), *tiny_splits(), None, run_dir,
                   on_batch_end=on_batch_end if trace is not None else None,
                   **{**SETTINGS, "seed": i, **settings})


def _close(a, b, atol=1e-5):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[n] - sb[n]).abs().max().item() for n in sa) < atol


@pytest.mark.parametrize("k,schedule", [(1, "constant"), (2, "constant"), (1, "iwae")])
def test_each_member_matches_its_run_alone_step_by_step(k, schedule):
    traces = [[] for _ in GRID]
    alone = [_trainer(i, kw, k=k, trace=traces[i], schedule=schedule)
             for i, kw in enumerate(GRID)]
    alone_results = [t.fit() for t in alone]
    stack_traces = [[] for _ in GRID]
    stacked = [_trainer(i, kw, k=k, trace=stack_traces[i], schedule=schedule)
               for i, kw in enumerate(GRID)]
    results = StackTrainer(stacked, progress=False).fit()
    for i, (a, s, ra, rs) in enumerate(zip(alone, stacked, alone_results, results)):
        assert len(stack_traces[i]) == len(traces[i]) == 3 * 4
        assert stack_traces[i] == pytest.approx(traces[i], rel=1e-6, abs=1e-5), GRID[i]
        assert (rs.best_epoch, rs.epochs, rs.stop_reason) == (ra.best_epoch, ra.epochs,
                                                              ra.stop_reason)
        assert [r["valid_bound"] for r in rs.metrics] == pytest.approx(
            [r["valid_bound"] for r in ra.metrics], rel=1e-6)
        assert [r["lr"] for r in rs.metrics] == [r["lr"] for r in ra.metrics]
        assert _close(a.model, s.model), GRID[i]
    lrs = [r["lr"] for r in results[0].metrics]
    # the IWAE stages: epoch 1 at 1e-3, epochs 2-4 a seventh of a decade lower
    assert lrs == (pytest.approx([1e-3, 1e-3 * 10 ** (-1 / 7), 1e-3 * 10 ** (-1 / 7)])
                   if schedule == "iwae" else [1e-3] * 3)


def test_members_differ_from_each_other():
    """The check above could pass with every member the same run: they must not be."""
    stacked = [_trainer(i, kw) for i, kw in enumerate(GRID)]
    results = StackTrainer(stacked, progress=False).fit()
    values = [r.metrics[-1]["train_bound"] for r in results]
    assert len(set(values)) == len(values)


@pytest.mark.parametrize("terms", [1, 2])
def test_stacked_objective_and_gradients_equal_the_models_in_float64(terms):
    models = [_model(i, kw, dtype=torch.float64) for i, kw in enumerate(GRID)
              if (kw.get("alpha", 1.0) == 0.5) == (terms == 2)]  # a stack: one kind of terms
    stack = StackedVAE(models)
    x = tiny_splits()[0][:5].double()
    gens = [torch.Generator().manual_seed(i) for i in range(len(models))]
    noise, eps = stack.draws(x.expand(len(models), *x.shape), gens)
    values = stack.objective(x.expand(len(models), *x.shape), noise, eps)
    values.sum().backward()
    for m, model in enumerate(models):
        model.train()
        g = torch.Generator().manual_seed(m)
        alone = model.objective(x, generator=g)
        assert values[m].detach() == pytest.approx(alone.detach(), abs=1e-12)
        alone.sum().backward()
        for stacked, param in stack.member_pairs(m, model):
            assert stack.member_slice(stacked.grad, m) == pytest.approx(param.grad, abs=1e-12)


def test_members_that_stop_early_leave_and_the_rest_go_on():
    budgets = [dict(epochs=1), dict(epochs=4), dict(epochs=2, patience=1), dict(epochs=4)]
    alone = [_trainer(i, GRID[i], **b).fit() for i, b in enumerate(budgets)]
    stacked = [_trainer(i, GRID[i], **b) for i, b in enumerate(budgets)]
    results = StackTrainer(stacked, progress=False).fit()
    for ra, rs in zip(alone, results):
        assert (rs.epochs, rs.stop_reason, rs.best_epoch) == (ra.epochs, ra.stop_reason,
                                                              ra.best_epoch)
        assert [r["train_bound"] for r in rs.metrics] == pytest.approx(
            [r["train_bound"] for r in ra.metrics], rel=1e-6)


def test_a_stacked_run_writes_the_files_of_a_run_alone_and_resumes_alone(tmp_path):
    dirs = [tmp_path / f"m{i}" for i in range(3)]
    StackTrainer([_trainer(i, GRID[i], d, epochs=2) for i, d in enumerate(dirs)],
                 progress=False).fit()
    for i, d in enumerate(dirs):
        assert {"config.json", "metrics.csv", "metrics.json", "last.pt", "best.pt"} <= set(
            os.listdir(d))
        best = load_checkpoint(d / "best.pt")
        assert best["model_hparams"] == _model(i, GRID[i]).hparams
        _model(i, GRID[i]).load_state_dict(best["model"])  # a lone VAE's weights, by name
        # continued alone to 4 epochs == trained alone for 4 epochs from the start
        resumed = _trainer(i, GRID[i], d, epochs=4)
        r = resumed.fit(resume=True)
        straight = _trainer(i, GRID[i], epochs=4)
        rs = straight.fit()
        assert r.epochs == 4
        assert [m["train_bound"] for m in r.metrics] == pytest.approx(
            [m["train_bound"] for m in rs.metrics], rel=1e-6)
        assert _close(resumed.model, straight.model)


def test_runs_started_alone_continue_in_a_stack(tmp_path):
    dirs = [tmp_path / f"m{i}" for i in range(3)]
    for i, d in enumerate(dirs):
        _trainer(i, GRID[i], d, epochs=1).fit()
    stacked = [_trainer(i, GRID[i], d) for i, d in enumerate(dirs)]
    results = StackTrainer(stacked, progress=False).fit(resume=True)
    for i, (t, r) in enumerate(zip(stacked, results)):
        straight = _trainer(i, GRID[i])
        rs = straight.fit()
        assert [m["train_bound"] for m in r.metrics] == pytest.approx(
            [m["train_bound"] for m in rs.metrics], rel=1e-6)
        assert _close(t.model, straight.model)


def test_ctrl_c_in_a_stack_saves_every_member_mid_epoch_and_resume_finishes_the_same(tmp_path):
    dirs = [tmp_path / f"m{i}" for i in range(3)]

    fired = []

    def stop_once(t, b):
        if t.epoch == 1 and b == 1 and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    first = []
    for i, d in enumerate(dirs):
        t = _trainer(i, GRID[i], d)
        t.on_batch_end = stop_once
        first.append(t)
    results = StackTrainer(first, progress=False).fit()
    assert all(r.stop_reason == "interrupted" for r in results)
    for d in dirs[:2]:  # the first stack stopped after its batch
        ck = load_checkpoint(d / "last.pt")
        assert ck["epoch"] == 1 and ck["partial"]["batch"] == 2
    ck = load_checkpoint(dirs[2] / "last.pt")  # two encoder terms: the next stack, not begun
    assert ck["epoch"] == 0 and ck["partial"] is None
    resumed = [_trainer(i, GRID[i], d) for i, d in enumerate(dirs)]
    results = StackTrainer(resumed, progress=False).fit(resume=True)
    for i, (t, r) in enumerate(zip(resumed, results)):
        straight = _trainer(i, GRID[i])
        rs = straight.fit()
        assert r.stop_reason == "max_epochs"
        assert [m["train_bound"] for m in r.metrics] == pytest.approx(
            [m["train_bound"] for m in rs.metrics], rel=1e-6)
        assert _close(t.model, straight.model)


def test_bf16_stack_trains_close_to_bf16_alone():
    alone = [_trainer(i, GRID[i], precision="bf16", epochs=2).fit() for i in range(3)]
    stacked = [_trainer(i, GRID[i], precision="bf16", epochs=2) for i in range(3)]
    results = StackTrainer(stacked, progress=False).fit()
    for ra, rs in zip(alone, results):
        assert rs.metrics[-1]["train_bound"] == pytest.approx(ra.metrics[-1]["train_bound"],
                                                              rel=2e-2)


def test_stack_refuses_what_it_cannot_stack():
    with pytest.raises(ValueError, match="differs from member 0"):
        StackedVAE([_model(0, {}), _model(1, {}, k=3)])
    with pytest.raises(ValueError, match="at least one"):
        StackTrainer([])
    with pytest.raises(ValueError, match="fp16"):
        StackTrainer([_trainer(0, {}, precision="fp16")])


def test_the_stack_benchmark_runs_and_writes_its_table(tmp_path):
    from bench import bench_stack
    assert bench_stack.main(["--ks", "1", "--precisions", "fp32", "--members", "2",
                             "--epochs", "2", "--repeats", "1", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "stack_cpu.md").read_text()
    assert "| 1 | fp32 | 2 |" in text
    rows = (tmp_path / "stack_cpu.csv").read_text().splitlines()
    assert rows[0].startswith("k,precision,members") and len(rows) == 2
