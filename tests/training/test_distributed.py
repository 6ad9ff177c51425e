"""torch.distributed through torchrun, two gloo processes on the CPU: the sharded evaluation
gives the single process's per-example values and files."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

import fastair
from fastair import distributed
from fastair.cli import main

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="this torch build has no torch.distributed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastair.__file__)))


def torchrun(*args, nproc=2, timeout=240):
    """``torchrun --standalone --nproc-per-node nproc -m fastair ARGS``; the completed process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "fastair", *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    try:
        fastair.data.load_dataset("mnist5k")
    except (FileNotFoundError, ImportError) as err:
        pytest.skip(f"mnist5k unavailable: {err}")
    run = tmp_path_factory.mktemp("dist") / "run"
    assert main(["train", "--epochs", "1", "--hidden", "8", "--z-dim", "2", "--run-dir",
                 str(run), "--no-progress"]) == 0
    return run


EVAL = ["--split", "valid", "--max-steps", "30", "--k-eval", "40", "--chunk", "20",
        "--batch-size", "100", "--threads", "1", "--no-progress"]


def _files(run):
    rows = list(csv.DictReader(open(run / "iwsvi" / "per_example.csv")))
    return rows, json.loads((run / "iwsvi" / "summary.json").read_text())


def test_two_ranks_give_the_single_process_per_example_values(trained_run):
    single = subprocess.run([sys.executable, "-m", "fastair", "evaluate", str(trained_run),
                             *EVAL], capture_output=True, text=True, timeout=240,
                            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT))
    assert single.returncode == 0, single.stderr
    rows1, summary1 = _files(trained_run)
    done = torchrun("evaluate", trained_run, *EVAL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "over 2 processes" in done.stdout
    assert done.stdout.count("valid: -ln p(x)") == 1  # rank 0 alone prints the result
    rows2, summary2 = _files(trained_run)
    assert len(rows2) == len(rows1) == 500
    assert rows2 == rows1  # the same numbers, bit for bit, in the same order
    assert {k: v for k, v in summary2.items()} == summary1


def test_a_block_has_the_same_values_alone_as_in_the_whole(trained_run):
    """The evaluator's own guarantee, in one process: block 3 of 5 evaluated alone equals the
    same examples of a full call (every block is seeded by itself)."""
    from fastair.evaluation import iwsvi_log_likelihood
    from fastair.trained import load_best_model
    model, data, _ = load_best_model(str(trained_run))
    x = data.valid[:250]
    kw = dict(max_steps=20, k_eval=30, chunk=15, batch_size=50, progress=False, warn=False)
    whole = iwsvi_log_likelihood(model, x, **kw)
    alone = iwsvi_log_likelihood(model, x, blocks=[3], **kw)
    torch.testing.assert_close(alone.log_px, whole.log_px[150:200], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alone.elbo, whole.elbo[150:200], rtol=1e-12, atol=1e-12)
    assert torch.equal(alone.steps, whole.steps[150:200])
    empty = iwsvi_log_likelihood(model, x, blocks=[], **kw)
    assert empty.log_px.shape == (0,)


def test_a_single_process_is_a_world_of_one():
    w = distributed.world()
    assert (w.rank, w.size, w.main) == (0, 1, True)
    assert distributed.gather({"a": 1}) == [{"a": 1}]
    with distributed.start("cpu") as w:
        assert w.size == 1


REPRO = ["reproduce", "--seeds", "1", "--sigmas", "0.3", "--Hs", "1", "--models", "vae",
         "dvae-a1", "wni", "--epochs", "2", "--patience", "0", "--k-svi", "4", "--max-steps", "2",
         "--k-eval", "20", "--chunk", "10", "--no-stack", "--threads", "1", "--no-progress"]


def _table(root):
    doc = json.loads((root / "results.json").read_text())
    return [(r["name"], r["valid_bound"], r["valid"]["-ln p(x)"], r["test"]["-ln p(x)"])
            for r in doc["runs"]]


def test_a_grid_over_two_ranks_gives_the_single_process_results(tmp_path, trained_run):
    """The runs are shared out over the ranks (each rank resumable), rank 0 writes the report of
    all of them; the same numbers as one process. Then a rerun with 2 ranks redoes nothing."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    single = subprocess.run([sys.executable, "-m", "fastair", *REPRO, "--out", tmp_path / "one"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr
    done = torchrun(*REPRO, "--out", tmp_path / "two", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 processes" in done.stdout and "rank 1: k1/" in done.stdout
    assert _table(tmp_path / "two") == _table(tmp_path / "one")
    assert (tmp_path / "two" / "report.md").exists()
    again = torchrun(*REPRO, "--out", tmp_path / "two", timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("done before") == 3


TRAIN = ["train", "--model", "dvae", "--sigma", "0.3", "--alpha", "0.5", "--k", "2",
         "--hidden", "8", "--z-dim", "2", "--threads", "1", "--no-progress"]


def _weights(run):
    return torch.load(run / "last.pt", weights_only=True)["model"]


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def _same_training(a, b, rel=1e-5):
    for ra, rb in zip(_metrics(a), _metrics(b), strict=True):
        assert ra["train_bound"] == pytest.approx(rb["train_bound"], rel=rel), ra["epoch"]
        assert ra["valid_bound"] == pytest.approx(rb["valid_bound"], rel=rel), ra["epoch"]
    wa, wb = _weights(a), _weights(b)
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=name)


def test_ddp_over_two_ranks_trains_as_one_process_and_resumes_with_another_count(
        tmp_path, trained_run):
    """Two ranks, each half of every global batch of 100 with the global batch's draws, follow
    the single process's steps to float rounding; a run started on 2 ranks continues on 1."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)

    def alone(*args):
        done = subprocess.run([sys.executable, "-m", "fastair", *TRAIN, *map(str, args)],
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        return done

    alone("--epochs", "2", "--run-dir", tmp_path / "one")
    done = torchrun(*TRAIN, "--epochs", "2", "--run-dir", tmp_path / "two", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DDP over 2 processes" in done.stdout
    assert done.stdout.count("stopped:") == 1  # rank 0 alone reports
    _same_training(tmp_path / "one", tmp_path / "two")
    # begun on 2 ranks, finished alone
    done = torchrun(*TRAIN, "--epochs", "1", "--run-dir", tmp_path / "mixed", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    alone("--epochs", "2", "--run-dir", tmp_path / "mixed", "--resume")
    _same_training(tmp_path / "one", tmp_path / "mixed")


def test_the_scaling_benchmark_runs_and_writes_its_table(tmp_path):
    from bench import bench_distributed
    # the evaluate job only: the 2-rank reproduce is tested above, and each launch costs seconds
    assert bench_distributed.main(["--quick", "--jobs", "evaluate", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "distributed.md").read_text()
    assert "| evaluate (IW-SVI, 500 digits) | 2 |" in text and "| reproduce" not in text
