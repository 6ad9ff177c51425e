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
