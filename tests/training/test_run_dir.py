"""Run directories that defend themselves: one owner at a time, no overwriting of another run,
refusals that name what differs, errors that name the file, divergence, SIGTERM, temporary
files, and a forced crash after every file write of an epoch.

The trainer runs on a tiny model and data set; the command line on the ``tiny_data`` fixture.
"""
import contextlib
import errno
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from helpers import TINY_CLI, fit

import fastair.io
from fastair import cli
from fastair.errors import (
    CheckpointError,
    RunDirBusy,
    RunDirError,
    RunMismatch,
    TrainingDiverged,
    WriteError,
)
from fastair.models import VAE
from fastair.training import load_checkpoint, rundir
from fastair.training import trainer as trainer_mod

TINY = TINY_CLI
HOLDER = ("import sys, time\nfrom fastair.training import rundir\n"
          "with rundir.hold(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")


def _fit(data, run_dir, resume=False, model=None, meta=None, **kw):
    return fit(data, run_dir, resume, model, meta, **kw)[1]


def _contents(directory):
    return {n: (directory / n).read_bytes() for n in sorted(os.listdir(directory))
            if (directory / n).is_file() and n != rundir.LOCK_NAME}


@contextlib.contextmanager
def _held_elsewhere(directory):
    """Another process holds ``directory`` for the block; yields its pid."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


# -- data loss ---------------------------------------------------------------------------------
def test_resume_without_last_pt_refuses_and_keeps_the_files(data, tmp_path):
    _fit(data, tmp_path, epochs=2)
    (tmp_path / "last.pt").unlink()
    before = _contents(tmp_path)
    for resume in (True, "auto"):
        with pytest.raises(RunDirError, match="last.pt is missing.*best.pt"):
            _fit(data, tmp_path, resume=resume, epochs=3)
    assert _contents(tmp_path) == before


def test_a_new_run_never_overwrites_another_runs_files(data, tmp_path):
    _fit(data, tmp_path, epochs=1)
    (tmp_path / "last.pt").unlink()  # left: best.pt, config.json, metrics.*
    before = _contents(tmp_path)
    with pytest.raises(RunDirError, match="already holds a run .best.pt, config.json"):
        _fit(data, tmp_path, epochs=1)
    assert _contents(tmp_path) == before


def test_resume_on_a_mistyped_directory_says_so_and_creates_nothing(tiny_data, tmp_path,
                                                                     capsys):
    missing = tmp_path / "no-such-run"
    assert cli.main(["train", "--run-dir", str(missing), "--resume", *TINY]) == 2
    assert "no run to resume here (the directory does not exist)" in capsys.readouterr().err
    assert not missing.exists()


# -- one owner at a time -------------------------------------------------------------------------
def test_a_held_directory_is_refused_naming_the_holder(data, tmp_path):
    run = tmp_path / "run"
    with _held_elsewhere(run) as pid:
        for resume in (False, True):
            with pytest.raises(RunDirBusy, match=f"in use by another fastair process .pid {pid}"):
                _fit(data, run, resume=resume, epochs=1)
        assert rundir.run_files(run) == []
    _fit(data, run, epochs=1)  # the holder is gone (killed): the lock went with it
    _fit(data, run, resume=True, epochs=2)


def test_the_same_process_may_hold_a_directory_twice(tmp_path):
    with rundir.hold(tmp_path):
        with rundir.hold(tmp_path):
            pass
        with _held_elsewhere(tmp_path / "other"):
            pass
    with rundir.hold(tmp_path):
        pass


def test_two_trainers_on_one_fresh_directory_never_mix(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "fastair", "train", "--run-dir", str(run), "--epochs", "3",
               "--hidden", "16", "--z-dim", "2", "--no-progress", "--threads", "1"]
    procs = [subprocess.Popen(command + ["--seed", str(seed)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    if 1 in codes and not (run / "last.pt").exists():
        pytest.skip("mnist5k unavailable")
    assert sorted(codes) in ([0, 1], [0, 2]), outs
    loser = outs[codes.index(0) ^ 1][1]
    assert "in use by another fastair process (pid" in loser or "already holds a run" in loser
    winner_seed = (1, 2)[codes.index(0)]
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    bounds = json.loads((run / "bounds.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert last["config"]["seed"] == config["train"]["seed"] == winner_seed
    assert bounds["best_epoch"] == best["epoch"] == last["best_epoch"]


LATE_WRITER = ("import fcntl, os, sys, time\n"
               "f = open(os.path.join(sys.argv[1], '.lock'), 'a+')\n"
               "fcntl.flock(f.fileno(), fcntl.LOCK_EX)\n"
               "print('locked', flush=True)\ntime.sleep(0.3)\n"
               "f.write(f'pid {os.getpid()}: late writer'); f.flush()\ntime.sleep(120)\n")


def test_a_holder_that_has_not_written_its_pid_yet_is_still_named(tmp_path):
    """The holder takes the lock, then writes its line: a refusal in between waits for it."""
    proc = subprocess.Popen([sys.executable, "-c", LATE_WRITER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=f"pid {proc.pid}: late writer"):
            with rundir.hold(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_two_reproduce_on_one_output_root_are_refused(tmp_path):
    from fastair.reproduce import ReproduceConfig, reproduce
    config = ReproduceConfig(seeds=1, families=("vae",), epochs=1, patience=0, k_svi=2,
                             max_steps=1, k_eval=4, chunk=4)
    with _held_elsewhere(tmp_path) as pid:
        with pytest.raises(RunDirBusy, match=f"pid {pid}"):
            reproduce(config, tmp_path, progress=False)
    assert os.listdir(tmp_path) == [rundir.LOCK_NAME]


# -- what the run is --------------------------------------------------------------------------
def test_resume_refuses_other_data_naming_what_differs(data, tmp_path):
    _fit(data, tmp_path, epochs=1, meta={"model": "iwae", "dataset": "caltech101"})
    before = _contents(tmp_path)
    other = ((1 - data[0]), data[1])
    with pytest.raises(RunMismatch, match="training/validation data: the contents differ"):
        _fit(other, tmp_path, resume=True, epochs=2, meta={"model": "iwae",
                                                          "dataset": "caltech101"})
    with pytest.raises(RunMismatch, match="data set: 'caltech101' .saved. vs 'mnist5k'"):
        _fit(data, tmp_path, resume=True, epochs=2, meta={"model": "iwae", "dataset": "mnist5k"})
    with pytest.raises(RunMismatch, match="model: 'iwae' .saved. vs 'dvae'"):
        _fit(data, tmp_path, resume=True, epochs=2, meta={"model": "dvae",
                                                          "dataset": "caltech101"})
    with pytest.raises(RunMismatch, match=r"data sizes .train, valid.: \[60, 20\] .saved. vs "
                                          r"\[59, 20\]"):
        _fit((data[0][:59], data[1]), tmp_path, resume=True, epochs=2,
             meta={"model": "iwae", "dataset": "caltech101"})
    assert _contents(tmp_path) == before


def test_cli_resume_with_another_dataset_or_model_is_refused(tiny_data, tmp_path, capsys):
    run = str(tmp_path)
    assert cli.main(["train", "--model", "iwae", "--k", "2", "--dataset", "caltech101",
                     "--epochs", "1", "--run-dir", run, *TINY]) == 0
    before = _contents(tmp_path)
    assert cli.main(["train", "--run-dir", run, "--resume", "--dataset", "mnist5k",
                     *TINY]) == 2
    err = capsys.readouterr().err
    assert "data set: 'caltech101' (saved) vs 'mnist5k'" in err and "fingerprint" in err
    assert cli.main(["train", "--run-dir", run, "--resume", "--model", "dvae", *TINY]) == 2
    assert "model: 'iwae' (saved) vs 'dvae'" in capsys.readouterr().err
    assert _contents(tmp_path) == before  # config.json not rewritten


def test_resume_reads_the_checkpoint_not_an_edited_config_json(tiny_data, tmp_path):
    run = str(tmp_path)
    assert cli.main(["train", "--epochs", "1", "--run-dir", run, "--k", "2", *TINY]) == 0
    (tmp_path / "config.json").write_text('{"train": {"epochs": "ten"}, "model": 5')
    assert cli.main(["train", "--run-dir", run, "--resume", "--epochs", "2", *TINY]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["hparams"]["k"] == 2 and config["train"]["epochs"] == 2


def test_evaluate_trusts_the_checkpoint_over_an_edited_config_json(tiny_data, tmp_path, capsys):
    run = str(tmp_path)
    assert cli.main(["train", "--epochs", "1", "--run-dir", run, "--k", "2", *TINY]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["hparams"].update(z_dim=9, k=5)
    (tmp_path / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert cli.main(["evaluate", run, "--max-steps", "1", "--k-eval", "8", "--chunk", "8",
                     "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "disagrees with the checkpoint on k, z_dim; using the checkpoint's" in captured.err
    assert json.loads((tmp_path / "iwsvi" / "summary.json").read_text())["k_model"] == 2


# -- file errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", [b"", b"garbage, not a checkpoint", "truncated"])
def test_a_damaged_last_pt_is_named_without_a_traceback(data, tmp_path, capsys, tiny_data,
                                                        damage):
    run = str(tmp_path)
    assert cli.main(["train", "--epochs", "1", "--run-dir", run, *TINY]) == 0
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:1000] if damage == "truncated" else damage)
    capsys.readouterr()
    assert cli.main(["train", "--run-dir", run, "--resume", "--epochs", "2", *TINY]) == 1
    err = capsys.readouterr().err
    assert f"{last}: cannot read this checkpoint" in err and "weights_only" not in err
    assert "Traceback" not in err and err.count("\n") == 1
    with pytest.raises(CheckpointError, match="cannot continue from it; best.pt"):
        _fit(data, tmp_path, resume=True)


def test_a_damaged_best_pt_falls_back_to_the_copy_in_last_pt(tiny_data, tmp_path, capsys):
    run = str(tmp_path)
    assert cli.main(["train", "--epochs", "2", "--run-dir", run, *TINY]) == 0
    good = load_checkpoint(tmp_path / "best.pt")
    (tmp_path / "best.pt").write_bytes(b"\x00" * 100)
    from fastair.trained import load_best_model
    model, _, notes = load_best_model(run)
    assert len(notes) == 1 and "best.pt: cannot read this checkpoint" in notes[0]
    assert "using the copy of the best model kept in last.pt" in notes[0]
    assert all(torch.equal(v, good["model"][k]) for k, v in model.state_dict().items())
    (tmp_path / "last.pt").write_bytes(b"")
    assert cli.main(["evaluate", run, "--no-progress"]) == 1
    assert "last.pt cannot stand in for it" in capsys.readouterr().err


def test_disk_full_names_the_file_and_what_is_intact(data, tmp_path, monkeypatch, tiny_data,
                                                     capsys):
    _fit(data, tmp_path / "a", epochs=1)
    last = (tmp_path / "a" / "last.pt").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fastair.io.os, "fsync", full)
    with pytest.raises(WriteError, match=r"last.pt: the disk is full; the previous version of "
                                         r"the file is intact; free some space"):
        _fit(data, tmp_path / "a", resume=True, epochs=2)
    assert (tmp_path / "a" / "last.pt").read_bytes() == last
    assert not [n for n in os.listdir(tmp_path / "a") if n.endswith(".tmp")]
    assert cli.main(["train", "--epochs", "1", "--run-dir", str(tmp_path / "b"), *TINY]) == 1
    err = capsys.readouterr().err
    assert "the disk is full; nothing was written" in err and "Traceback" not in err


def test_device_cuda_without_cuda_is_one_line(tiny_data, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = tmp_path / "run"
    assert cli.main(["train", "--device", "cuda", "--run-dir", str(run), *TINY]) == 2
    err = capsys.readouterr().err
    assert "device 'cuda'" in err and "Traceback" not in err and not run.exists()
    assert cli.main(["train", "--device", "gpu0", "--run-dir", str(run), *TINY]) == 2
    assert "is not a torch device" in capsys.readouterr().err


# -- divergence -----------------------------------------------------------------------------------
def _diverge_at(monkeypatch, epochs):
    real, calls = trainer_mod.evaluate_bound, []

    def fake(model, x, k=None, **kw):
        calls.append(1)
        out = real(model, x, k, **kw)
        return out * float("nan") if len(calls) in epochs else out

    monkeypatch.setattr(trainer_mod, "evaluate_bound", fake)
    return real


@pytest.mark.parametrize("bad_epoch", [1, 3])
def test_divergence_stops_at_the_last_good_epoch_and_resumes_with_a_smaller_lr(
        data, tmp_path, monkeypatch, bad_epoch):
    _diverge_at(monkeypatch, {bad_epoch})
    with pytest.raises(TrainingDiverged, match=f"diverged at epoch {bad_epoch} .*holds epoch "
                                               f"{bad_epoch - 1}, the last good one") as err:
        _fit(data, tmp_path, epochs=4, lr=1e-2)
    assert err.value.last_good_epoch == bad_epoch - 1
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == bad_epoch - 1
    monkeypatch.undo()
    result = _fit(data, tmp_path, resume=True, epochs=4, lr=1e-3)
    assert result.epochs == 4
    assert [r["lr"] for r in result.metrics] == [1e-2] * (bad_epoch - 1) + \
        [1e-3] * (5 - bad_epoch)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["lr_changes"] == [{"epoch": bad_epoch - 1, "from": 1e-2, "to": 1e-3}]
    assert ck["config"]["lr"] == 1e-3


def test_cli_divergence_is_one_line_naming_the_way_on(tiny_data, tmp_path, monkeypatch, capsys):
    real = _diverge_at(monkeypatch, {1})
    run = str(tmp_path)
    assert cli.main(["train", "--epochs", "2", "--run-dir", run, *TINY]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "diverged at epoch 1" in err and "holds epoch 0" in err
    assert f"fastair train --run-dir {run} --resume --lr 0.0005" in err
    monkeypatch.setattr(trainer_mod, "evaluate_bound", real)  # (undo would drop tiny_data)
    assert cli.main(["train", "--run-dir", run, "--resume", "--lr", "0.0005", *TINY]) == 0


# -- signals and temporary files ---------------------------------------------------------------
def test_sigterm_saves_like_ctrl_c(data, tmp_path):
    def term(trainer, batch):
        if trainer.epoch == 1 and batch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    result = _fit(data, tmp_path, epochs=3, on_batch_end=term)
    assert result.interrupted and result.signal == signal.SIGTERM
    assert load_checkpoint(tmp_path / "last.pt")["partial"]["batch"] == 2
    assert signal.getsignal(signal.SIGTERM) == before
    assert _fit(data, tmp_path, resume=True, epochs=3).epochs == 3


def test_cli_sigterm_exits_143_with_the_run_saved(tiny_data, tmp_path, monkeypatch, capsys):
    real = VAE.bound

    def bound(self, x, k=None, **kw):
        if self.training:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, x, k, **kw)

    monkeypatch.setattr(VAE, "bound", bound)
    assert cli.main(["train", "--epochs", "2", "--run-dir", str(tmp_path), *TINY]) == 143
    err = capsys.readouterr().err
    assert "SIGTERM: stopping after this batch" in err and "--resume" in err
    assert load_checkpoint(tmp_path / "last.pt")["partial"]["batch"] == 1


def test_temporary_files_of_a_killed_writer_are_removed(data, tmp_path):
    _fit(data, tmp_path, epochs=1)
    stale = [".fastair-last.pt.x1y2.tmp", ".last.pt.abc123.tmp"]  # today's and 0.1's names
    for name in stale:
        (tmp_path / name).write_bytes(b"\x00" * 1000)
    keep = tmp_path / "notes.tmp"
    keep.write_text("a user's file")
    _fit(data, tmp_path, resume=True, epochs=2)
    assert not any((tmp_path / n).exists() for n in stale) and keep.exists()


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def broken(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(fastair.io.os, "replace", broken)
    with pytest.raises(WriteError, match="x.json: I/O error; nothing was written"):
        fastair.io.atomic_write_json(tmp_path / "x.json", {"a": 1})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


# -- a forced exit after each file write of an epoch ------------------------------------------
class _Crash(BaseException):
    """A process dying right after a write: nothing after it runs (no except, no save)."""


def _cli_run(run, *extra):
    return cli.main(["train", "--epochs", "3", "--run-dir", str(run), "--k", "2", "--seed", "5",
                     *TINY, *extra])


def _outcome(run):
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    metrics = [{k: v for k, v in r.items() if k != "time_s"}
               for r in json.loads((run / "metrics.json").read_text())]
    csv_rows = (run / "metrics.csv").read_text().count("\n") - 1
    bounds = json.loads((run / "bounds.json").read_text())
    return {"epoch": last["epoch"], "metrics": metrics, "csv_rows": csv_rows,
            "best_epoch": (best["epoch"], last["best_epoch"], bounds["best_epoch"]),
            "best": {k: v.tolist() for k, v in best["model"].items()},
            "bounds": bounds["bounds"]}


def _epoch_writes(tmp_path, monkeypatch):
    """The files written, in order, by the last epoch of a run and the end of `train`."""
    run, names = tmp_path / "count", []
    real = os.replace

    def spy(src, dst):
        real(src, dst)
        names.append(os.path.basename(dst))

    assert _cli_run(run, "--epochs", "2") == 0
    monkeypatch.setattr(fastair.io.os, "replace", spy)
    assert cli.main(["train", "--run-dir", str(run), "--resume", "--epochs", "3", *TINY]) == 0
    monkeypatch.setattr(fastair.io.os, "replace", real)
    return names


def test_a_crash_after_any_write_of_an_epoch_loses_nothing(tiny_data, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    assert _cli_run(straight) == 0
    expected = _outcome(straight)
    writes = _epoch_writes(tmp_path, monkeypatch)
    # the resume rewrites last.pt, metrics.*, config.json; then the epoch: best.pt (when it
    # improves), last.pt, metrics.json, metrics.csv; then bounds.json
    assert writes[-5:] == ["best.pt", "last.pt", "metrics.json", "metrics.csv", "bounds.json"]
    real = os.replace
    for n in range(len(writes)):
        run = tmp_path / f"crash{n}"
        assert _cli_run(run, "--epochs", "2") == 0
        def crash_after(src, dst, count=[], n=n):  # noqa: B006 - a fresh list per run
            real(src, dst)
            count.append(dst)
            if len(count) == n + 1:
                raise _Crash(os.path.basename(dst))

        monkeypatch.setattr(fastair.io.os, "replace", crash_after)
        with pytest.raises(_Crash):
            cli.main(["train", "--run-dir", str(run), "--resume", "--epochs", "3", *TINY])
        monkeypatch.setattr(fastair.io.os, "replace", real)
        assert cli.main(["train", "--run-dir", str(run), "--resume", "--epochs", "3",
                         *TINY]) == 0
        assert _outcome(run) == expected, f"crash after write {n} ({writes[n]})"


def test_an_unwritable_run_directory_is_one_line(tiny_data, tmp_path, monkeypatch, capsys):
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(rundir, "open", refuse, raising=False)  # (root ignores chmod)
    with pytest.raises(WriteError, match="cannot create its lock file .lock .Permission denied"):
        with rundir.hold(tmp_path):
            pass
    assert cli.main(["train", "--epochs", "1", "--run-dir", str(tmp_path / "r"), *TINY]) == 1
    err = capsys.readouterr().err
    assert "a run directory must be writable" in err and "Traceback" not in err
