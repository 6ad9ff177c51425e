"""bench/gpu_run.sh --dry-run: the one-shot GPU script's stages run on CPU at tiny sizes and
leave what the device tool can bring back (at most 8 files, no subfolder)."""
import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_dry_run_passes_every_stage_and_writes_its_files(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_run.sh"), "--dry-run",
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["e2e.log", "gpu_bench.csv", "gpu_bench.md", "ops.csv", "ops.log",
                     "summary.md", "tests.log"]
    assert all((tmp_path / n).is_file() for n in names) and len(names) <= 8
    summary = (tmp_path / "summary.md").read_text()
    for stage in ("tests", "ops", "e2e"):
        assert f"| {stage} | 0 |" in summary, summary
    assert "torch " in summary and "gpu: none (CPU)" in summary
    assert "fastair ms" in summary and "| epoch (3 steps) | 1 | eager |" in summary  # the tables
    ops = list(csv.DictReader((tmp_path / "ops.csv").open()))
    assert {r["provider"] for r in ops} >= {"fastair", "eager"}
    e2e = list(csv.DictReader((tmp_path / "gpu_bench.csv").open()))
    assert [r["mode"] for r in e2e] == ["eager"] * 3 and all(float(r["ms"]) > 0 for r in e2e)


def test_a_failing_stage_fails_the_run_and_is_reported(tmp_path):
    env = dict(os.environ, PYTHON=str(tmp_path / "no-such-python"))
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_run.sh"), "--dry-run",
                          str(tmp_path / "out")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode != 0
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| ops | 127 |" in summary and "| e2e | 127 |" in summary
