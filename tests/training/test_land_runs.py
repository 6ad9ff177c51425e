"""experiments/land_runs.py: finished runs copied without checkpoints, and read back as done."""
import os

from experiments import land_runs
from fastair.reproduce import ReproduceConfig, plan_runs, reproduce

TINY = dict(seeds=1, sigmas=(0.3,), Hs=(1.0,), families=("vae", "wni"), epochs=2, patience=0,
            k_svi=4, max_steps=2, k_eval=20, chunk=10)


def _files(root):
    return sorted(os.path.relpath(os.path.join(here, name), root)
                  for here, _, names in os.walk(root) for name in names)


def test_landed_runs_carry_no_checkpoints_and_resume_as_done(tmp_path):
    config = ReproduceConfig(**TINY)
    first = tmp_path / "first"
    reproduce(config, first, progress=False)
    unfinished = first / "k1" / "vae" / "seed9" / "train"  # a run that was still training
    unfinished.mkdir(parents=True)
    (unfinished / "last.pt").write_bytes(b"checkpoint")

    landed = tmp_path / "landed"
    names = [spec.name for spec in plan_runs(config)]
    assert land_runs.land(first, landed) == names
    files = _files(landed)
    assert files and not any(f.endswith((".pt", ".lock", "test_per_example.csv")) for f in files)
    assert all(os.path.join(name, "result.json") in files for name in names)
    assert not any("seed9" in f for f in files)
    assert land_runs.land(first, landed) == []  # already there: nothing to copy

    restored = tmp_path / "restored"
    land_runs.land(landed, restored)
    stamps = {name: (restored / name / "result.json").stat().st_mtime_ns for name in names}
    summary, _ = reproduce(config, restored, progress=False)
    assert {name: (restored / name / "result.json").stat().st_mtime_ns
            for name in names} == stamps  # read back, not trained again
    assert (restored / "results.json").read_text() == (first / "results.json").read_text()
