"""The trainer: bit-for-bit resume, Ctrl-C, atomic files, early stopping, schedules, errors.

Everything runs on a tiny model and data set so that each test takes a fraction of a second.
"""
import json
import math
import os
import signal

import pytest
import torch
from helpers import fit, tiny_splits, tiny_vae

from fastair.models import VAE
from fastair.training import (
    METRIC_COLUMNS,
    TrainConfig,
    evaluate_bound,
    load_checkpoint,
)
from fastair.training import checkpoint as ckpt_mod
from fastair.training import trainer as trainer_mod
from fastair.training.schedules import IWAEStagesFactor


def _model(**kw):
    return tiny_vae(**{"sigma": 0.3, "alpha": 0.5, **kw})


def _fit(data, run_dir, resume=False, model=None, **kw):
    return fit(data, run_dir, resume, model if model is not None else _model(), **kw)


def _no_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def _assert_same_run(dir_a, dir_b):
    a, b = load_checkpoint(dir_a / "last.pt"), load_checkpoint(dir_b / "last.pt")
    assert a["epoch"] == b["epoch"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    assert _no_time(a["metrics"]) == _no_time(b["metrics"])
    assert torch.equal(a["shuffle_generator"], b["shuffle_generator"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    best_a, best_b = load_checkpoint(dir_a / "best.pt"), load_checkpoint(dir_b / "best.pt")
    assert all(torch.equal(best_a["model"][k], best_b["model"][k]) for k in best_a["model"])


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """Four epochs in one go: the reference the resumed runs must equal bit for bit."""
    run = tmp_path_factory.mktemp("straight")
    model, result = _fit(data, run, epochs=4)
    return run, model, result


def test_run_directory_contents(straight):
    run, model, result = straight
    files = {"config.json", "metrics.csv", "metrics.json", "last.pt", "best.pt"}
    assert files <= set(os.listdir(run))
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["seed"] == 3 and config["seeds"]["torch"] == 3
    assert config["model"]["hparams"] == model.hparams
    rows = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and list(rows[0]) == list(METRIC_COLUMNS)
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == ",".join(METRIC_COLUMNS) and len(csv_lines) == 5
    assert result.stop_reason == "max_epochs" and result.epochs == 4
    assert result.best_valid_bound == max(r["valid_bound"] for r in rows)
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == result.best_epoch
    for key, value in model.state_dict().items():  # the model ends holding the best weights
        assert torch.equal(value, best["model"][key])


def test_resume_is_bit_for_bit(data, straight, tmp_path):
    _fit(data, tmp_path, epochs=2)
    model, result = _fit(data, tmp_path, resume=True, epochs=4)
    _assert_same_run(straight[0], tmp_path)
    assert _no_time(result.metrics) == _no_time(straight[2].metrics)
    for key, value in model.state_dict().items():
        assert torch.equal(value, straight[1].state_dict()[key])


def test_keyboard_interrupt_saves_and_resumes_exactly(data, straight, tmp_path):
    calls = []

    def interrupt(trainer, batch):
        calls.append((trainer.epoch, batch))
        if len(calls) == 6:  # epoch 2, after its second batch
            raise KeyboardInterrupt

    _, result = _fit(data, tmp_path, epochs=4, on_batch_end=interrupt)
    assert result.interrupted and result.epochs == 1
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["epoch"] == 1 and saved["partial"]["batch"] == 2
    assert saved["stop_reason"] == "interrupted"
    _fit(data, tmp_path, resume=True, epochs=4)
    _assert_same_run(straight[0], tmp_path)


def test_interrupt_inside_a_batch_redoes_that_batch(data, straight, tmp_path, monkeypatch):
    real_bound, calls = VAE.bound, []

    def bound(self, x, k=None, **kw):
        calls.append(self.training)
        if sum(calls) == 7:  # epoch 2, third batch, before its step (draws already made)
            self.objective(x, k)
            raise KeyboardInterrupt
        return real_bound(self, x, k, **kw)

    monkeypatch.setattr(VAE, "bound", bound)
    _, result = _fit(data, tmp_path, epochs=4)
    monkeypatch.setattr(VAE, "bound", real_bound)
    assert result.interrupted
    assert load_checkpoint(tmp_path / "last.pt")["partial"]["batch"] == 2
    _fit(data, tmp_path, resume=True, epochs=4)
    _assert_same_run(straight[0], tmp_path)


def test_sigint_stops_after_the_batch(data, straight, tmp_path):
    def ctrl_c(trainer, batch):
        if trainer.epoch == 2 and batch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where pytest was started with `&`
    _, result = _fit(data, tmp_path, epochs=4, on_batch_end=ctrl_c)
    assert result.interrupted
    assert load_checkpoint(tmp_path / "last.pt")["partial"]["batch"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # the trainer's handler is gone
    _fit(data, tmp_path, resume=True, epochs=4)
    _assert_same_run(straight[0], tmp_path)


def test_atomic_save_leaves_old_file_or_nothing(tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    ckpt_mod.atomic_save({"v": torch.ones(3)}, path)

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        ckpt_mod.atomic_save({"v": torch.zeros(1000)}, path)
    with pytest.raises(OSError):
        ckpt_mod.atomic_save({"v": torch.zeros(3)}, tmp_path / "new.pt")
    assert os.listdir(tmp_path) == ["x.pt"]
    assert torch.equal(load_checkpoint(path)["v"], torch.ones(3))


def test_failed_checkpoint_keeps_the_previous_one(data, tmp_path, monkeypatch):
    saved = {}

    def kill_writes_after_epoch_1(trainer, row):
        saved["last"] = (tmp_path / "last.pt").read_bytes()

        def broken_fsync(fd):  # every later write dies after its bytes went to the temp file
            raise OSError("killed while writing")

        monkeypatch.setattr(ckpt_mod.os, "fsync", broken_fsync)

    with pytest.raises(OSError, match="killed"):
        _fit(data, tmp_path, epochs=3, on_epoch_end=kill_writes_after_epoch_1)
    monkeypatch.undo()
    assert (tmp_path / "last.pt").read_bytes() == saved["last"]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_early_stopping_and_best_model(data, tmp_path, monkeypatch):
    values = iter([-10.0, -9.0, -9.5, -9.7, -9.1, -9.8, -5.0, -4.0])

    def fake_eval(model, x, k=None, **kw):
        return torch.full((len(x),), next(values), dtype=torch.float64)

    monkeypatch.setattr(trainer_mod, "evaluate_bound", fake_eval)
    snapshots = {}

    def remember(trainer, row):
        snapshots[row["epoch"]] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    model, result = _fit(data, tmp_path, epochs=20, patience=3, on_epoch_end=remember)
    assert result.stop_reason == "early_stopping"
    assert result.epochs == 5 and result.best_epoch == 2 and result.best_valid_bound == -9.0
    assert [r["bad_epochs"] for r in result.metrics] == [0, 0, 1, 2, 3]
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshots[2][key])
    # resuming an early-stopped run with the same patience does nothing more
    _, again = _fit(data, tmp_path, resume=True, epochs=20, patience=3)
    assert again.stop_reason == "early_stopping" and again.epochs == 5


def test_schedules(data):
    _, result = _fit(data, None, epochs=3, schedule="exponential", lr_decay=0.5, lr=1e-2)
    assert [r["lr"] for r in result.metrics] == pytest.approx([1e-2, 5e-3, 2.5e-3])
    f = IWAEStagesFactor()
    assert [f.stage(e) for e in (0, 1, 3, 4, 12, 13, 39, 40, 1092, 1093, 10**5)] == \
        [0, 1, 1, 2, 2, 3, 3, 4, 6, 7, 7]
    assert f(0) == 1.0 and f(10**5) == pytest.approx(0.1)
    _, result = _fit(data, None, epochs=5, schedule="iwae")
    assert [r["lr"] for r in result.metrics] == pytest.approx(
        [1e-3] + [1e-3 * 10 ** (-1 / 7)] * 3 + [1e-3 * 10 ** (-2 / 7)])


def test_training_improves_the_bound(data):
    _, result = _fit(data, None, epochs=15, lr=1e-2)
    assert result.metrics[-1]["train_bound"] > result.metrics[0]["train_bound"]


def test_evaluate_bound_keeps_global_rng_and_mode(data):
    model = _model()
    state = torch.get_rng_state()
    a = evaluate_bound(model, data[1], batch_size=7)
    b = evaluate_bound(model, data[1], batch_size=7)
    assert torch.equal(state, torch.get_rng_state()) and model.training
    assert torch.equal(a, b) and a.shape == (20,) and a.dtype == torch.float64


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), "batch_size"), (dict(lr=-1.0), "lr"),
    (dict(schedule="cosine"), "schedule"),
    (dict(patience=-1), "patience"), (dict(lr_decay=1.5), "lr_decay"), (dict(epochs=1.5), "epochs"),
])
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_resume_rules(data, tmp_path):
    _fit(data, tmp_path, epochs=1)
    with pytest.raises(FileExistsError, match="resume"):
        _fit(data, tmp_path, epochs=2)
    with pytest.raises(ValueError, match="batch_size"):
        _fit(data, tmp_path, resume=True, epochs=2, batch_size=8)
    with pytest.raises(ValueError, match="hyper-parameters: k 2 .saved. vs 3"):
        _fit(data, tmp_path, resume=True, epochs=2, model=_model(k=3))
    with pytest.raises(FileExistsError, match="no run to resume"):  # resume=True needs a run
        _fit(data, tmp_path / "fresh", resume=True, epochs=1)
    _, result = _fit(data, tmp_path / "auto", resume="auto", epochs=1)  # "auto" starts one
    assert result.epochs == 1


@pytest.mark.cuda
def test_trains_on_cuda(data):
    model, result = _fit(data, None, epochs=2, device="cuda")
    assert next(model.parameters()).is_cuda and math.isfinite(result.best_valid_bound)


def test_bf16_training_keeps_float32_weights_and_resumes_exactly(data, tmp_path):
    straight = tmp_path / "straight"
    model, result = _fit(data, straight, epochs=3, precision="bf16")
    _, fp32 = _fit(data, None, epochs=3)
    ck = load_checkpoint(straight / "last.pt")
    assert all(v.dtype == torch.float32 for v in ck["model"].values())
    assert all(t.dtype == torch.float32 for s in ck["optimizer"]["state"].values()
               for t in s.values() if t.dim() > 0)
    assert all(math.isfinite(r["valid_bound"]) for r in result.metrics)
    # bfloat16 matmuls: the same training, to within a few percent of the bound
    assert abs(result.metrics[-1]["valid_bound"] - fp32.metrics[-1]["valid_bound"]) < \
        0.05 * abs(fp32.metrics[-1]["valid_bound"])
    resumed = tmp_path / "resumed"
    _fit(data, resumed, epochs=1, precision="bf16")
    _fit(data, resumed, resume=True, epochs=3, precision="bf16")
    _assert_same_run(straight, resumed)


def test_precision_errors():
    with pytest.raises(ValueError, match="precision: expected one of"):
        TrainConfig(precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16: loss-scaled float16 training is for CUDA"):
            _fit(tiny_splits(), None, epochs=1, precision="fp16")
