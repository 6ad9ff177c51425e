"""A run's last.pt or best.pt whose content was damaged (an entry gone, an emptied optimizer
state, weights of another shape, NaN weights) is refused with a CheckpointError that names the
file and says what to do: never a KeyError, a cut-off load_state_dict error, a divergence
diagnosis with a learning-rate remedy, or an evaluation that prints "nan" and exits 0."""
import json
import math
import re
import shutil

import pytest
import torch
from helpers import TINY_CLI, fit

from fastair import cli
from fastair.errors import CheckpointError
from fastair.trained import load_best_model
from fastair.training import load_checkpoint
from fastair.training.checkpoint import check_checkpoint

FIRST = "encoder.trunk.0.weight"  # a weight of every fastair VAE


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A tiny run of 2 epochs (last.pt and best.pt), copied by each test before damaging it."""
    run = tmp_path_factory.mktemp("trained")
    fit(data, run, epochs=2)
    return run


def _copy(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def _edit(path, change):
    ck = torch.load(path, weights_only=True)
    change(ck)
    torch.save(ck, path)


def _nan_weights(state):
    for v in state.values():
        if v.is_floating_point():
            v.fill_(math.nan)


LAST_DAMAGE = {
    "no model entry": (lambda ck: ck.pop("model"), r"has no 'model' entry"),
    "no scheduler entry": (lambda ck: ck.pop("scheduler"), r"has no 'scheduler' entry"),
    "optimizer emptied": (lambda ck: ck.update(optimizer={}),
                          r"optimizer state is empty or damaged .*found an empty dict"),
    "optimizer moments emptied": (lambda ck: ck["optimizer"].update(state={}),
                                  r"optimizer state holds no moments .*epoch 2"),
    "mis-shaped weight": (lambda ck: ck["model"].update({FIRST: torch.zeros(2, 2)}),
                          rf"'model' entry does not fit the model \(VAE\).*{FIRST} \[2, 2\] vs"),
    "NaN weights": (lambda ck: _nan_weights(ck["model"]),
                    r"'model' entry holds NaN or inf weights .*no learning rate can continue"),
    "NaN best model": (lambda ck: _nan_weights(ck["best_model"]),
                       r"'best_model' entry holds NaN or inf weights"),
}


@pytest.mark.parametrize("damage", list(LAST_DAMAGE))
def test_a_damaged_last_pt_is_refused_naming_the_file_and_the_remedy(data, trained, tmp_path,
                                                                     damage):
    change, pattern = LAST_DAMAGE[damage]
    run = _copy(trained, tmp_path)
    last = run / "last.pt"
    _edit(last, change)
    before = last.read_bytes()
    with pytest.raises(CheckpointError) as err:  # not KeyError, RuntimeError, TrainingDiverged
        fit(data, run, resume=True, epochs=3)
    message = str(err.value)
    assert message.startswith(f"{last}: ") and "\n" not in message
    assert re.search(pattern, message), message
    assert "restore last.pt from a copy, or start the run afresh in a new run directory" in message
    assert last.read_bytes() == before  # nothing overwritten


def _cli_run(tmp_path):
    """A run of `fastair train` on the tiny data set of the ``tiny_data`` fixture."""
    run = tmp_path / "run"
    assert cli.main(["train", "--epochs", "2", "--run-dir", str(run), *TINY_CLI]) == 0
    return run


def test_the_command_line_prints_one_line_for_a_damaged_last_pt(tmp_path, tiny_data, capsys):
    run = _cli_run(tmp_path)
    shutil.copy(run / "last.pt", tmp_path / "good.pt")
    for damage in ("no model entry", "optimizer emptied", "mis-shaped weight", "NaN weights"):
        _edit(run / "last.pt", LAST_DAMAGE[damage][0])
        capsys.readouterr()
        code = cli.main(["train", "--run-dir", str(run), "--resume", "--epochs", "3", *TINY_CLI])
        err = capsys.readouterr().err
        assert code == 1, (damage, err)
        assert f"{run / 'last.pt'}: " in err and "Traceback" not in err, (damage, err)
        assert "restore last.pt from a copy" in err, (damage, err)
        assert "diverged at epoch" not in err, (damage, err)
        shutil.copy(tmp_path / "good.pt", run / "last.pt")


def test_nan_weights_in_best_pt_are_refused_naming_the_file(trained, tmp_path):
    run = _copy(trained, tmp_path)
    _edit(run / "best.pt", lambda ck: _nan_weights(ck["model"]))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(run / 'best.pt'))}: its 'model' "
                                              r"entry holds NaN or inf weights .*delete it and "
                                              r"run `fastair train --resume`"):
        load_checkpoint(run / "best.pt")


EVAL = ["--max-steps", "1", "--k-eval", "8", "--chunk", "8", "--no-progress"]


def test_evaluate_never_reports_nan_from_nan_weights_in_best_pt(tiny_data, tmp_path, capsys):
    run = _cli_run(tmp_path)
    good = load_checkpoint(run / "best.pt")["model"]
    _edit(run / "best.pt", lambda ck: _nan_weights(ck["model"]))
    model, _, notes = load_best_model(str(run))  # the copy kept in last.pt, with a note
    assert len(notes) == 1 and f"{run / 'best.pt'}: its 'model' entry holds NaN" in notes[0]
    assert "using the copy of the best model kept in last.pt" in notes[0]
    assert all(torch.equal(v, good[k]) for k, v in model.state_dict().items())
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), *EVAL]) == 0
    summary = json.loads((run / "iwsvi" / "summary.json").read_text())
    assert all(math.isfinite(summary[k]) for k in ("-ln p(x)", "gap", "-L(x)")), summary
    # and where last.pt's copy is NaN too, nothing is evaluated: exit 1 naming both files
    _edit(run / "last.pt", lambda ck: _nan_weights(ck["best_model"]))
    with pytest.raises(CheckpointError, match=r"best.pt: its 'model' entry holds NaN.*; and "
                                              r"last.pt cannot stand in for it: .*last.pt: its "
                                              r"'best_model' entry holds NaN"):
        load_best_model(str(run))
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), *EVAL]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "best.pt: its 'model' entry holds NaN" in err


def test_a_mis_shaped_best_pt_is_named_and_the_copy_in_last_pt_stands_in(tiny_data, tmp_path):
    run = _cli_run(tmp_path)
    good = load_checkpoint(run / "best.pt")["model"]
    _edit(run / "best.pt", lambda ck: ck["model"].update({FIRST: torch.zeros(2, 2)}))
    model, _, notes = load_best_model(str(run))
    assert f"{run / 'best.pt'}: its 'model' entry does not fit the model (VAE)" in notes[0]
    assert f"{FIRST} [2, 2] vs [16, 784]" in notes[0]
    assert all(torch.equal(v, good[k]) for k, v in model.state_dict().items())
    _edit(run / "last.pt", lambda ck: ck["best_model"].update({FIRST: torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=rf"last.pt: its 'best_model' entry does not fit "
                                              rf"the model \(VAE\).*{FIRST} \[3\] vs"):
        load_best_model(str(run))


def test_a_best_pt_without_its_model_entry_is_named(tiny_data, tmp_path):
    run = _cli_run(tmp_path)
    _edit(run / "best.pt", lambda ck: ck.pop("model"))
    with pytest.raises(CheckpointError, match=r"best.pt: the checkpoint has no 'model' entry"):
        load_checkpoint(run / "best.pt")
    _, _, notes = load_best_model(str(run))  # no KeyError: last.pt's copy stands in
    assert "has no 'model' entry" in notes[0] and "kept in last.pt" in notes[0]


def test_only_run_files_are_checked_and_a_fresh_state_passes(tmp_path):
    """A run's state at epoch 0 has no optimizer moments yet; other files are any dict."""
    fresh = {k: None for k in ("config", "model_hparams", "scheduler", "rng",
                               "shuffle_generator", "partial", "best_value", "best_epoch",
                               "bad_epochs", "metrics")}
    fresh.update(model={"w": torch.ones(2)}, epoch=0,
                 optimizer={"state": {}, "param_groups": [{"params": [0]}]})
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(2))
    check_checkpoint(fresh, "last.pt", "last", model=model)
    torch.save({"anything": 1}, tmp_path / "other.pt")
    assert load_checkpoint(tmp_path / "other.pt") == {"anything": 1}
    torch.save({"anything": 1}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="has no 'config', 'model_hparams'"):
        load_checkpoint(tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt", kind=None) == {"anything": 1}
