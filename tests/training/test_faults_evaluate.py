"""Faults of `fastair evaluate` (issue 37): kills at chosen points of the writes (a patched
``os.replace`` or ``os.fsync`` in a child process that ends with ``os._exit``, as ``kill -9``
would), signals raised from inside the evaluation or the commit, a full disk, a directory in
the way, and bad options. An evaluation's files are replaced together or not at all, each tied to
what produced it; SIGTERM exits 143 with the rerun hint; every message names the path and the
remedy."""
import csv
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import TINY_CLI

import fastair.evaluation
from fastair import cli
from fastair.evaluation.output import read_evaluation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LOADER = '''
import torch
from fastair.data import Splits


def load(name, root=None):
    g = torch.Generator().manual_seed(sum(map(ord, name)))

    def split(n):
        return (torch.rand(n, 784, generator=g) < 0.3).float()
    return Splits(name, split(120), split(30), split(40))
'''
"""A tiny data set whose valid (30) and test (40) splits differ in size, so that a file of one
split's evaluation beside the other's summary shows; the same in the child processes."""

SIZES = {"valid": 30, "test": 40}
EVAL = ["--max-steps", "2", "--k-eval", "8", "--chunk", "8", "--elbo-samples", "8",
        "--no-progress"]

KILLER = '''
import os
import sys

exec(sys.argv[1])
import fastair.data
fastair.data.load_dataset = load
how, name = sys.argv[2], sys.argv[3]
if how == "replace":  # die as the file `name` is about to be put in place
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == name:
            os._exit(137)
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace
else:  # die while the temporary file of `name` is flushed to disk
    real_fsync = os.fsync

    def fsync(fd):
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            os._exit(137)
        return real_fsync(fd)
    os.fsync = fsync
from fastair import cli
sys.exit(cli.main(sys.argv[4:]))
'''


@pytest.fixture
def data(monkeypatch):
    import fastair.data
    space = {}
    exec(LOADER, space)
    monkeypatch.setattr(fastair.data, "load_dataset", space["load"])


@pytest.fixture
def run(data, tmp_path):
    """A tiny trained run with a finished evaluation of the test split."""
    path = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--run-dir", str(path), *TINY_CLI]) == 0
    assert cli.main(["evaluate", str(path), *EVAL]) == 0
    return path


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.name != ".lock"}


def _one_evaluation(out, hashes=True):
    """The summary of ``out``, after checking that the data files beside it are the ones it
    describes (None where there is no summary: no evaluation, nothing mixed)."""
    if not (out / "summary.json").exists():
        return None
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader(open(out / "per_example.csv")))
    assert len(rows) == SIZES[summary["split"]], \
        f"per_example.csv has {len(rows)} rows beside a summary of the {summary['split']} split"
    if hashes:
        assert summary["files"]["per_example.csv"]["sha256"] == _sha256(out / "per_example.csv")
    return summary


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("how, name", [("replace", "summary.json"),
                                       ("replace", "per_example.csv"),
                                       ("fsync", "per_example.csv")])
def test_a_killed_evaluate_leaves_one_evaluation_or_none_and_no_temp_files(run, how, name):
    out = run / "iwsvi"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", KILLER, LOADER, how, name, "evaluate", str(run),
                           "--split", "valid", *EVAL], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 137, done.stderr[-2000:]
    summary = _one_evaluation(out, hashes=False)
    assert summary is None or summary["split"] == "test"  # the new one was never committed
    tied = summary is None or summary.get("files", {}).get("per_example.csv", {}).get(
        "sha256") == _sha256(out / "per_example.csv")
    # the next evaluate removes the killed one's temporary files and writes a whole evaluation
    assert cli.main(["evaluate", str(run), "--split", "valid", *EVAL]) == 0
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert tied, "the summary left by the kill does not name its per-example file's hash"
    assert _one_evaluation(out)["split"] == "valid"
    assert read_evaluation(out)["split"] == "valid"


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_the_evaluation_keeps_the_previous_one_and_says_rerun(
        run, monkeypatch, capsys, signum, code):
    out = run / "iwsvi"
    before = _snapshot(out)
    # Ctrl-C as a user's shell delivers it (a pytest-xdist worker ignores SIGINT otherwise)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _stop_during_the_evaluation(run, out, before, monkeypatch, capsys, signum, code)
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_during_the_evaluation(run, out, before, monkeypatch, capsys, signum, code):
    def stopped(*args, **kwargs):
        signal.raise_signal(signum)
        raise AssertionError("the signal did not stop the evaluation")

    monkeypatch.setattr(fastair.evaluation, "sharded_iwsvi_log_likelihood", stopped)
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--split", "valid", *EVAL]) == code
    err = capsys.readouterr().err
    assert "files already written are complete" not in err
    assert "run the same command again" in err
    assert f"{out} still holds the previous evaluation, unchanged" in err
    assert _snapshot(out) == before
    assert signal.getsignal(signal.SIGTERM) is not None  # a handler is back in place


def test_a_signal_during_the_commit_waits_until_the_evaluation_is_whole(run, monkeypatch,
                                                                        capsys):
    out = run / "iwsvi"
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == "per_example.csv":
            signal.raise_signal(signal.SIGTERM)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    assert cli.main(["evaluate", str(run), "--split", "valid", *EVAL]) == 143
    assert "after the evaluation was written" in capsys.readouterr().err
    assert read_evaluation(out)["split"] == "valid"
    assert _one_evaluation(out)["split"] == "valid"


@pytest.mark.parametrize("previous", [True, False])
def test_a_full_disk_keeps_the_previous_evaluation_and_says_what_is_there(
        run, monkeypatch, capsys, previous):
    out = run / "iwsvi"
    if not previous:
        for p in out.iterdir():
            p.unlink()
        out.rmdir()
    before = _snapshot(out) if previous else None
    real = os.fsync

    def fsync(fd):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if "summary.json" in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    monkeypatch.setattr(os, "fsync", fsync)
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--split", "valid", *EVAL]) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "free some space" in err and "[Errno" not in err
    assert str(out / "summary.json") in err
    if previous:
        assert _snapshot(out) == before
        assert "still holds the previous evaluation, unchanged" in err
    else:
        assert not (out / "per_example.csv").exists()
        assert "no file of this evaluation was put in" in err
    assert not out.exists() or not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_file_in_the_way_of_the_directory_is_named_with_the_remedy_before_any_work(
        run, monkeypatch, capsys):
    out = run / "iwsvi"
    for p in out.iterdir():
        p.unlink()
    out.rmdir()
    out.write_text("not a directory")

    def never(*args, **kwargs):
        raise AssertionError("evaluated before finding that nothing can be written")

    monkeypatch.setattr(fastair.evaluation, "sharded_iwsvi_log_likelihood", never)
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), *EVAL]) == 1
    err = capsys.readouterr().err
    assert str(out) in err and "move the file away" in err and "--out DIR" in err
    assert "[Errno" not in err


def test_an_unwritable_out_dir_is_named_with_the_remedy(run, monkeypatch, capsys, tmp_path):
    target = tmp_path / "elsewhere" / "eval"
    real = os.makedirs

    def makedirs(path, *args, **kwargs):
        if os.fspath(path) == str(target):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", makedirs)
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), *EVAL, "--out", str(target)]) == 1
    err = capsys.readouterr().err
    assert str(target) in err and "permission denied" in err and "--out DIR" in err
    assert "[Errno" not in err


@pytest.mark.parametrize("args, match", [
    (["--batch-size", "0"], "--batch-size: expected an int >= 1, got 0"),
    (["--device", "mps"], "mps"),
    (["--precision", "fp16"], "--precision fp16: float16 is for CUDA devices"),
    (["--fit-precision", "fp16"], "--fit-precision fp16"),
    (["--chunk", "0"], "--chunk"),
])
def test_bad_values_are_named_errors_not_tracebacks(run, capsys, args, match):
    before = _snapshot(run / "iwsvi")
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), *EVAL, *args]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert _snapshot(run / "iwsvi") == before


def test_the_batch_size_of_the_sharded_evaluator_is_checked():
    import torch
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1, got 0"):
        fastair.evaluation.sharded_iwsvi_log_likelihood(torch.nn.Linear(2, 2),
                                                        torch.zeros(3, 2), batch_size=0)


def test_every_result_file_is_tied_to_what_produced_it(run):
    from fastair.trained import load_best_model
    from fastair.training.rundir import data_fingerprint
    summary = read_evaluation(run / "iwsvi")
    producer = summary["producer"]
    assert producer["checkpoint"] == str(run / "best.pt")
    assert producer["checkpoint_sha256"] == _sha256(run / "best.pt")
    model, data, _ = load_best_model(run)
    assert producer["weights"] == data_fingerprint(*model.state_dict().values())
    assert producer["data"] == data_fingerprint(data.test)
    assert (producer["split"], producer["n"], producer["dataset"]) == ("test", 40, "mnist5k")
    settings = producer["settings"]
    assert (settings["seed"], settings["k_eval"], settings["max_steps"], settings["method"]) == \
        (0, 8, 2, "iwsvi")
    assert summary["files"]["per_example.csv"] == {
        "sha256": _sha256(run / "iwsvi" / "per_example.csv"),
        "bytes": (run / "iwsvi" / "per_example.csv").stat().st_size}
    # a per-example file that is not the one described is caught
    (run / "iwsvi" / "per_example.csv").write_text("index,log_px\n0,-1.0\n")
    from fastair.errors import CheckpointError
    with pytest.raises(CheckpointError, match="not the file .*summary.json describes"):
        read_evaluation(run / "iwsvi")
