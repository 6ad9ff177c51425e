"""Faults injected at chosen points of `train` and `reproduce` (issue 37): signals delivered
from inside an optimizer step or a checkpoint write, kills between a run's file operations. Each
fault is placed by a patched function or hook, never by timing; every test runs in seconds."""
import hashlib
import json
import os
import shutil
import signal

import pytest
import torch
from helpers import TINY_CLI, fit, tiny_load_dataset, tiny_splits

import fastair.data
from fastair import cli
from fastair.models import VAE
from fastair.reproduce import ReproduceConfig, plan_runs, reproduce, runner
from fastair.training import Trainer, load_checkpoint, seed_everything
from fastair.training import stack as stack_mod
from fastair.training import trainer as trainer_mod
from fastair.training.stack import StackTrainer


def _deliver(signum):
    """Deliver ``signum`` now, in this thread, to whatever handler is installed."""
    handler = signal.getsignal(signum)
    assert callable(handler), f"no Python handler for {signum}"
    handler(signum, None)


@pytest.fixture(scope="module", autouse=True)
def tiny_dataset():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastair.data, "load_dataset", tiny_load_dataset)
        yield


# -- train: a second signal inside the step ------------------------------------------------------

def _signals_after_step(at, signals=(signal.SIGTERM, signal.SIGTERM)):
    """A ``make_optimizer`` whose optimizer, after its ``at``-th step (counted from 1) has
    updated the weights, receives ``signals`` before the step returns."""
    real, steps = trainer_mod.make_optimizer, []

    def adam(params, cfg):
        opt = real(params, cfg)

        def hook(optimizer, args, kwargs):
            steps.append(1)
            if len(steps) == at:
                for s in signals:
                    _deliver(s)

        opt.register_step_post_hook(hook)
        return opt
    return adam


def _same_checkpoints(a, b):
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert (ca["epoch"], ca["partial"]) == (cb["epoch"], cb["partial"])
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [r["train_bound"] for r in ca["metrics"]] == [r["train_bound"] for r in cb["metrics"]]


def test_a_second_signal_after_the_step_does_not_apply_the_batch_twice(tmp_path, monkeypatch):
    data = tiny_splits()
    fit(data, tmp_path / "straight", epochs=3)
    # epoch 2, batch 2
    monkeypatch.setattr(trainer_mod, "make_optimizer", _signals_after_step(at=6))
    _, result = fit(data, tmp_path / "cut", epochs=3)
    assert result.interrupted and result.signal == signal.SIGTERM
    saved = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert (saved["epoch"], saved["partial"]["batch"]) == (1, 2)  # the stepped batch counted
    monkeypatch.undo()
    fit(data, tmp_path / "cut", resume=True, epochs=3)
    _same_checkpoints(tmp_path / "straight", tmp_path / "cut")


def _stack_trainers(root):
    out = []
    for i, kw in enumerate((dict(), dict(sigma=0.3, alpha=1.0))):
        seed_everything(10 + i)
        model = VAE(x_dim=20, z_dim=3, hidden=(8,), k=2, **kw)
        out.append(Trainer(model, *tiny_splits(), None, root / f"m{i}", batch_size=16,
                           progress=False, patience=0, epochs=3, seed=i))
    return out


def test_a_second_signal_after_a_stacked_step_does_not_apply_the_batch_twice(tmp_path,
                                                                             monkeypatch):
    StackTrainer(_stack_trainers(tmp_path / "straight"), progress=False).fit()
    monkeypatch.setattr(stack_mod, "make_optimizer", _signals_after_step(at=6))
    results = StackTrainer(_stack_trainers(tmp_path / "cut"), progress=False).fit()
    assert all(r.interrupted and r.signal == signal.SIGTERM for r in results)
    assert load_checkpoint(tmp_path / "cut" / "m0" / "last.pt")["partial"]["batch"] == 2
    monkeypatch.undo()
    StackTrainer(_stack_trainers(tmp_path / "cut"), progress=False).fit(resume=True)
    for m in ("m0", "m1"):
        _same_checkpoints(tmp_path / "straight" / m, tmp_path / "cut" / m)


def _signals_after_schedule_step(monkeypatch, epoch):
    """Two Ctrl-C right after the first schedule step that ends ``epoch`` (the epoch's row is
    recorded, its counter not yet advanced)."""
    fired = []

    class Hooked(torch.optim.lr_scheduler.LambdaLR):
        def step(self, *args, **kwargs):
            super().step(*args, **kwargs)
            if self.last_epoch == epoch and not fired:
                fired.append(epoch)
                _deliver(signal.SIGINT)
                _deliver(signal.SIGINT)

    real_make = trainer_mod.make_scheduler

    def make(*args, **kwargs):
        sched = real_make(*args, **kwargs)
        sched.__class__ = Hooked
        return sched

    monkeypatch.setattr(trainer_mod, "make_scheduler", make)
    return fired


def test_a_second_signal_at_an_epoch_end_does_not_apply_the_epoch_twice(tmp_path, monkeypatch):
    data = tiny_splits()
    settings = dict(epochs=3, schedule="exponential", lr_decay=0.5)
    fit(data, tmp_path / "straight", **settings)
    fired = _signals_after_schedule_step(monkeypatch, 2)
    _, result = fit(data, tmp_path / "cut", **settings)
    assert fired and result.interrupted and result.signal == signal.SIGINT
    monkeypatch.undo()
    _, result = fit(data, tmp_path / "cut", resume=True, **settings)
    assert [r["epoch"] for r in result.metrics] == [1, 2, 3]
    _same_checkpoints(tmp_path / "straight", tmp_path / "cut")


def test_a_second_signal_at_a_stacked_epoch_end_saves_every_member(tmp_path, monkeypatch):
    StackTrainer(_stack_trainers(tmp_path / "straight"), progress=False).fit()
    fired = _signals_after_schedule_step(monkeypatch, 2)
    results = StackTrainer(_stack_trainers(tmp_path / "cut"), progress=False).fit()
    assert fired and all(r.interrupted for r in results)
    assert [r.epochs for r in results] == [2, 1]  # the first member's epoch end was whole
    monkeypatch.undo()
    results = StackTrainer(_stack_trainers(tmp_path / "cut"), progress=False).fit(resume=True)
    assert all([r["epoch"] for r in res.metrics] == [1, 2, 3] for res in results)
    for m in ("m0", "m1"):  # each member went on in a stack of its own: equal to float32 sums
        a, b = (load_checkpoint(tmp_path / d / m / "last.pt") for d in ("straight", "cut"))
        assert [r["train_bound"] for r in a["metrics"]] == pytest.approx(
            [r["train_bound"] for r in b["metrics"]], rel=1e-6)
        assert max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"]) < 1e-5


# -- train: exit codes ---------------------------------------------------------------------------

def test_a_second_sigterm_in_the_final_save_exits_143_with_the_resume_hint(tmp_path, monkeypatch,
                                                                          capsys):
    armed = []
    monkeypatch.setattr(trainer_mod, "make_optimizer",
                        _signals_after_step(at=2, signals=(signal.SIGTERM,)))
    real_save = trainer_mod.atomic_save

    def save(obj, path):
        if obj.get("stop_reason") == "interrupted" and not armed:  # the final save
            armed.append(path)
            _deliver(signal.SIGTERM)
        return real_save(obj, path)

    monkeypatch.setattr(trainer_mod, "atomic_save", save)
    run = tmp_path / "run"
    code = cli.main(["train", "--epochs", "3", "--run-dir", str(run), *TINY_CLI])
    err = capsys.readouterr().err
    assert armed and code == 143
    assert f"--run-dir {run} --resume" in err
    monkeypatch.undo()
    assert cli.main(["train", "--run-dir", str(run), "--resume", "--no-progress"]) == 0


def test_a_first_sigterm_exits_143_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trainer_mod, "make_optimizer",
                        _signals_after_step(at=2, signals=(signal.SIGTERM,)))
    run = tmp_path / "run"
    assert cli.main(["train", "--epochs", "3", "--run-dir", str(run), *TINY_CLI]) == 143
    assert "--resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert cli.main(["train", "--run-dir", str(run), "--resume", "--no-progress"]) == 0


# -- reproduce -----------------------------------------------------------------------------------

TINY = dict(seeds=1, families=("vae",), patience=0, k_svi=4, max_steps=2, k_eval=20, chunk=10,
            train=dict(batch_size=40))


RESULT_FILES = ("result.json", "valid.json", "test.json", "test_per_example.csv")
"""The files a run's evaluation writes."""


def _config(epochs):
    return ReproduceConfig(**TINY, epochs=epochs)


def _numbers(root):
    """The run's result without wall times or producer records."""
    name = plan_runs(_config(1))[0].name
    doc = json.loads((root / name / "result.json").read_text())
    out = {k: v for k, v in doc.items() if k not in ("train_seconds", "producer")}
    for split in ("valid", "test"):
        out[split] = {k: v for k, v in doc[split].items() if k not in ("seconds", "producer")}
    return out


@pytest.fixture(scope="module")
def fresh4(tmp_path_factory):
    """A 4-epoch run made in one go: what every raised or resumed run must report."""
    root = tmp_path_factory.mktemp("fresh4")
    reproduce(_config(4), root, progress=False)
    return _numbers(root)


@pytest.fixture(scope="module")
def done2(tmp_path_factory):
    """A finished 2-epoch run."""
    root = tmp_path_factory.mktemp("done2")
    reproduce(_config(2), root, progress=False)
    return root


def test_a_larger_epoch_cap_after_a_kill_in_test_iwsvi_recomputes_validation(tmp_path,
                                                                            monkeypatch, fresh4):
    real, calls = runner.iwsvi_log_likelihood, []

    def killed_in_test(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # valid.json is written; the test split's IW-SVI is killed
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "iwsvi_log_likelihood", killed_in_test)
    with pytest.raises(KeyboardInterrupt):
        reproduce(_config(2), tmp_path, progress=False)
    run = tmp_path / plan_runs(_config(2))[0].name
    assert (run / "valid.json").exists() and not (run / "result.json").exists()
    monkeypatch.undo()
    reproduce(_config(4), tmp_path, progress=False)
    got = _numbers(tmp_path)
    assert got["epochs"] == 4
    assert got == fresh4


def _raise_killed_at(root, n, monkeypatch):
    """Raise ``root``'s run from 2 to 4 epochs, killed (KeyboardInterrupt) at the ``n``-th of
    the runner's file operations before training: a removal of a result file or the write of
    spec.json. Returns ``(killed, the operations seen)``."""
    seen, real_remove, real_write = [], os.remove, runner.atomic_write_json

    def count(path):
        seen.append(os.path.basename(path))
        if len(seen) == n:
            raise KeyboardInterrupt

    def remove(path, *args, **kwargs):
        if os.path.basename(path) in RESULT_FILES and str(root) in str(path):
            count(path)
        return real_remove(path, *args, **kwargs)

    def write(path, doc, *args, **kwargs):
        if os.path.basename(path) == "spec.json":
            count(path)
        return real_write(path, doc, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(os, "remove", remove)
        mp.setattr(runner, "atomic_write_json", write)
        try:
            reproduce(_config(4), root, progress=False)
        except KeyboardInterrupt:
            return True, seen
    return False, seen


def test_a_kill_anywhere_in_an_epoch_cap_raise_leaves_no_stale_result(tmp_path, monkeypatch,
                                                                      done2, fresh4):
    """Kill the raise from 2 to 4 epochs at each of the runner's file operations before training
    goes on (removals, the new spec.json), run again: the 4-epoch numbers every time."""
    n, killed = 0, True
    while killed:
        n += 1
        root = tmp_path / f"kill{n}"
        shutil.copytree(done2, root)
        killed, seen = _raise_killed_at(root, n, monkeypatch)
        if killed:
            reproduce(_config(4), root, progress=False)
        assert _numbers(root) == fresh4, f"killed at file operation {n} of {seen}"
    assert n >= 2  # at least one kill point was tried


def test_result_files_name_what_produced_them(done2):
    run = done2 / plan_runs(_config(2))[0].name
    valid, test = (json.loads((run / f"{s}.json").read_text()) for s in ("valid", "test"))
    result = json.loads((run / "result.json").read_text())
    for split, doc in (("valid", valid), ("test", test)):
        made = doc["producer"]
        assert made["split"] == split and made["epochs"] == 2 and made["seed"] == (
            0 if split == "valid" else 1000)
        assert made["best_epoch"] == result["best_epoch"]
        assert made["evaluator"] == _config(2).evaluator()
        assert result[split]["producer"] == made
    csv = (run / "test_per_example.csv").read_bytes()
    assert test["per_example_sha256"] == hashlib.sha256(csv).hexdigest()


def _killed_at_result(tmp_path, monkeypatch):
    """A 2-epoch run killed as it writes result.json: valid.json, test.json and
    test_per_example.csv are on disk. Returns the run's directory."""
    real = runner.atomic_write_json

    def write(path, doc, *args, **kwargs):
        if os.path.basename(path) == "result.json":
            raise KeyboardInterrupt
        return real(path, doc, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(runner, "atomic_write_json", write)
        with pytest.raises(KeyboardInterrupt):
            reproduce(_config(2), tmp_path, progress=False)
    run = tmp_path / plan_runs(_config(2))[0].name
    assert (run / "test.json").exists() and not (run / "result.json").exists()
    return run


def test_a_summary_without_its_producer_is_recomputed(tmp_path, monkeypatch):
    run = _killed_at_result(tmp_path, monkeypatch)
    (run / "test.json").write_text(json.dumps({"-ln p(x)": 1.0, "gap": 0.0, "-L(x)": 1.0,
                                               "seconds": 0.0}))  # made by who knows what
    reproduce(_config(2), tmp_path, progress=False)
    assert json.loads((run / "test.json").read_text())["-ln p(x)"] != 1.0


def test_a_per_example_file_of_another_evaluation_is_recomputed(tmp_path, monkeypatch):
    """test.json and test_per_example.csv agree or are made again (a kill between the two
    writes of another evaluation leaves a per-example file that test.json does not name)."""
    run = _killed_at_result(tmp_path, monkeypatch)
    good = (run / "test_per_example.csv").read_text()
    (run / "test_per_example.csv").write_text(good.replace("\n1,", "\n1,9", 1))
    reproduce(_config(2), tmp_path, progress=False)
    assert (run / "test_per_example.csv").read_text() == good


def test_sigterm_in_reproduce_iwsvi_exits_143(tmp_path, monkeypatch, capsys):
    def terminated(*args, **kwargs):
        _deliver(signal.SIGTERM)  # the command's own handler: SIGTERM as an interrupt
        raise AssertionError("SIGTERM did not stop the evaluation")

    monkeypatch.setattr(runner, "iwsvi_log_likelihood", terminated)
    code = cli.main(["reproduce", "--models", "vae", "--seeds", "1", "--epochs", "1",
                     "--k-svi", "4", "--max-steps", "2", "--k-eval", "20", "--chunk", "10",
                     "--out", str(tmp_path), "--no-progress"])
    assert code == 143
    assert "same command again" in capsys.readouterr().err


def test_a_second_sigterm_in_reproduce_training_exits_143(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trainer_mod, "make_optimizer", _signals_after_step(at=1))
    code = cli.main(["reproduce", "--models", "vae", "--seeds", "1", "--epochs", "1",
                     "--k-svi", "4", "--max-steps", "2", "--k-eval", "20", "--chunk", "10",
                     "--no-stack", "--out", str(tmp_path), "--no-progress"])
    assert code == 143
    assert "same command again" in capsys.readouterr().err
