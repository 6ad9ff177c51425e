"""`fastair evaluate --method iwsvi|ais|both` and `--bdmc N` (issue 31): AIS columns beside
IW-SVI's in per_example.csv, AIS and BDMC figures in the summary, AIS from IW-SVI's fitted q with
`both`, AIS through the command line against quadrature on a user's 2-d-latent model, and bad
options named before anything is loaded."""
import copy
import csv
import json
import sys

import pytest
import torch
from helpers import TINY_CLI
from truth2d import quadrature_2d, simulate

from fastair import cli
from fastair.evaluation import (
    ais_log_likelihood,
    bdmc,
    iwsvi_log_likelihood,
    sharded_iwsvi_log_likelihood,
)
from fastair.evaluation.output import read_evaluation
from fastair.evaluation.result import IWSVIResult
from fastair.trained import load_best_model

IWSVI = ["--max-steps", "30", "--k-eval", "40", "--chunk", "20", "--elbo-samples", "20",
         "--no-progress"]
AIS_COLUMNS = ["ais_log_px", "ais_se", "ais_ess", "ais_accept", "ais_step_size"]


def _rows(run):
    return list(csv.DictReader(open(run / "iwsvi" / "per_example.csv")))


def _column(rows, name):
    return torch.tensor([float(r[name]) for r in rows], dtype=torch.float64)


@pytest.fixture
def run(tiny_data, tmp_path):
    """A tiny trained run (784-16-4, one epoch) on the tiny data."""
    path = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--run-dir", str(path), *TINY_CLI]) == 0
    return path


def test_default_method_is_iwsvi_with_unchanged_columns(run, capsys):
    assert cli.main(["evaluate", str(run), *IWSVI]) == 0
    rows, summary = _rows(run), read_evaluation(run / "iwsvi")
    assert list(rows[0]) == list(IWSVIResult.CSV_COLUMNS)
    assert summary["method"] == "iwsvi" and "ais" not in summary and "bdmc" not in summary
    assert "AIS" not in capsys.readouterr().out


def test_both_puts_ais_from_iwsvis_fitted_q_beside_iwsvi(run, capsys):
    assert cli.main(["evaluate", str(run), *IWSVI, "--method", "both", "--ais-steps", "3",
                     "--ais-chains", "4", "--seed", "5"]) == 0
    rows, summary = _rows(run), read_evaluation(run / "iwsvi")
    assert list(rows[0]) == list(IWSVIResult.CSV_COLUMNS) + AIS_COLUMNS and len(rows) == 40
    a = summary["ais"]
    assert (a["steps"], a["chains"], a["init"], a["seed"], a["n"]) == (3, 4, "fitted", 8, 40)
    # the same numbers as the library: IW-SVI's fitted q, AIS from it with SEED + 3
    model, data, _ = load_best_model(run)
    x = data.test
    iw = iwsvi_log_likelihood(model, x, max_steps=30, k_eval=40, chunk=20, elbo_samples=20,
                              seed=5, progress=False, warn=False, keep_q=True)
    torch.testing.assert_close(_column(rows, "log_px"), iw.log_px, rtol=0, atol=2e-6)
    fitted = ais_log_likelihood(model, x, steps=3, chains=4, init="fitted",
                                fitted=(iw.q_mu, iw.q_logvar), seed=8, progress=False,
                                warn=False)
    torch.testing.assert_close(_column(rows, "ais_log_px"), fitted.log_px, rtol=0, atol=2e-6)
    torch.testing.assert_close(_column(rows, "ais_accept"), fitted.acceptance, rtol=0,
                               atol=1e-4)
    encoder = ais_log_likelihood(model, x, steps=3, chains=4, init="encoder", seed=8,
                                 progress=False, warn=False)
    assert (encoder.log_px - fitted.log_px).abs().max() > 1e-3  # the start matters
    assert a["-ln p(x)"] == pytest.approx(-fitted.log_px.mean().item(), abs=1e-9)
    d = summary["ais_minus_iwsvi"]
    diff = fitted.log_px - iw.log_px
    assert d["n"] == 40 and d["mean"] == pytest.approx(diff.mean().item(), abs=1e-9)
    flagged = iw.unreliable()
    assert d["flagged"]["n"] == int(flagged.sum()) and d["unflagged"]["n"] == 40 - d["flagged"]["n"]
    out = capsys.readouterr().out
    assert "AIS -ln p(x)" in out and "AIS - IW-SVI" in out and "-ln p(x) " in out


def test_ais_alone_has_index_and_ais_columns_and_a_progress_bar(run, capsys):
    assert cli.main(["evaluate", str(run), "--method", "ais", "--ais-steps", "4",
                     "--ais-chains", "3", "--ais-init", "prior"]) == 0
    rows, summary = _rows(run), read_evaluation(run / "iwsvi")
    assert list(rows[0]) == ["index"] + AIS_COLUMNS and len(rows) == summary["n"] == 40
    assert "-ln p(x)" not in summary and summary["method"] == "ais"
    assert summary["ais"]["init"] == "prior"
    assert summary["ais"]["-ln p(x)"] == pytest.approx(-_column(rows, "ais_log_px").mean().item(),
                                                       abs=1e-5)
    assert all(0 <= float(r["ais_accept"]) <= 1 for r in rows)
    captured = capsys.readouterr()
    assert "AIS: 100%" in captured.err and "4/4" in captured.err  # tqdm's bar, over temperatures
    assert "IW-SVI" not in captured.err


def test_bdmc_summary_and_file_match_the_library_and_go_with_their_evaluation(run, capsys):
    assert cli.main(["evaluate", str(run), *IWSVI, "--bdmc", "5", "--ais-steps", "6",
                     "--ais-chains", "4", "--seed", "2"]) == 0
    summary = read_evaluation(run / "iwsvi")
    rows = list(csv.DictReader(open(run / "iwsvi" / "bdmc.csv")))
    model, _, _ = load_best_model(run)
    direct = bdmc(model, 5, steps=6, chains=4, seed=2, progress=False, z_dim=4)
    b = summary["bdmc"]
    assert b["n"] == len(rows) == 5 and b["file"] == "bdmc.csv" and b["init"] == "prior"
    for key in ("lower", "upper", "width"):
        assert b[key] == pytest.approx(direct.summary()[key], abs=1e-9), key
    torch.testing.assert_close(_column(rows, "upper"), direct.upper, rtol=0, atol=2e-6)
    assert "BDMC on 5 simulated examples" in capsys.readouterr().out
    # the next evaluation has no BDMC: the old bdmc.csv goes with the old summary
    assert cli.main(["evaluate", str(run), *IWSVI]) == 0
    assert not (run / "iwsvi" / "bdmc.csv").exists()
    assert set(read_evaluation(run / "iwsvi")["files"]) == {"per_example.csv"}


@pytest.mark.parametrize("args, match", [
    (["--ais-steps", "0"], "--ais-steps: expected an int >= 1"),
    (["--ais-chains", "0"], "--ais-chains: expected an int >= 1"),
    (["--ais-leapfrog", "0"], "--ais-leapfrog"),
    (["--bdmc", "-1"], "--bdmc: expected an int >= 0"),
    (["--ais-init", "fitted"], "--ais-init fitted: AIS runs with --method ais or both"),
])
def test_bad_ais_options_are_named_before_anything_is_loaded(tmp_path, capsys, monkeypatch,
                                                             args, match):
    import fastair.trained

    def never(*a, **k):
        raise AssertionError("loaded the model before checking the options")

    monkeypatch.setattr(fastair.trained, "load_best_model", never)
    (tmp_path / "best.pt").write_bytes(b"")
    assert cli.main(["evaluate", str(tmp_path), *args]) == 2
    assert match in capsys.readouterr().err


def test_an_unknown_method_is_refused(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate", "run", "--method", "hmc"])
    assert info.value.code == 2 and "--method" in capsys.readouterr().err


def test_sharded_evaluator_keeps_the_fitted_q_on_request(tiny_data):
    import fastair.data
    from fastair.models import VAE
    torch.manual_seed(0)
    model = VAE(x_dim=784, z_dim=3, hidden=(8,))
    x = fastair.data.load_dataset("tiny").test[:7]
    kw = dict(max_steps=25, k_eval=8, chunk=8, elbo_samples=8, batch_size=3, progress=False,
              warn=False, fit_precision="fp32")
    plain = sharded_iwsvi_log_likelihood(model, x, **kw)
    kept = sharded_iwsvi_log_likelihood(model, x, keep_q=True, **kw)
    assert plain.q_mu is None and kept.q_mu.shape == kept.q_logvar.shape == (7, 3)
    torch.testing.assert_close(plain.log_px, kept.log_px, rtol=0, atol=0)
    with torch.no_grad():
        mu, _ = model.encode(x)
    assert (kept.q_mu - mu).abs().max() > 1e-3  # fitted, not the encoder's
    # block 1 (examples 3-5) is fit_gaussian_q from the encoder with block 1's generator
    from fastair.evaluation import fit_gaussian_q
    from fastair.evaluation.bound import block_generator
    model.eval().requires_grad_(False)
    with torch.no_grad():
        mu, logvar = model.encode(x[3:6])
    fit = fit_gaussian_q(model, x[3:6], mu, logvar, k=16, lr=0.05, max_steps=25,
                         generator=block_generator(x.device, 0, 1))
    torch.testing.assert_close(kept.q_mu[3:6], fit.mu)
    torch.testing.assert_close(kept.q_logvar[3:6], fit.logvar)


# -- AIS through the command line against the truth --------------------------------------------
USER_2D = '''
import torch
from torch import nn


class Sharp2d(nn.Module):
    """A user's 2-d-latent VAE (tanh layers, float32), its decoder made sharp."""

    def __init__(self, d=16, z=2, h=32, sharp=12.0):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Sequential(nn.Linear(d, h), nn.Tanh())
        self.enc_mu, self.enc_logvar = nn.Linear(h, z), nn.Linear(h, z)
        self.dec = nn.Sequential(nn.Linear(z, h), nn.Tanh())
        self.dec_out = nn.Linear(h, d)
        with torch.no_grad():
            self.dec[0].weight.mul_(2.0)
            self.dec_out.weight.mul_(sharp)

    def encode(self, x):
        h = self.enc(x)
        return self.enc_mu(h), self.enc_logvar(h)

    def decode_logits(self, z):
        return self.dec_out(self.dec(z))


def build():
    return Sharp2d()
'''


@pytest.fixture
def user_2d(tmp_path, monkeypatch):
    """``(checkpoint, truth [16])``: the user's model saved, 16 examples drawn from it as the
    test split of the data set ``sharp2d``, and their ln p(x) by quadrature."""
    (tmp_path / "fastair_test_user_2d.py").write_text(USER_2D)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fastair_test_user_2d", None)
    import fastair_test_user_2d as user

    import fastair.data
    from fastair.data import Splits
    model = user.build()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    exact = copy.deepcopy(model).double()
    x = simulate(exact, 16, seed=1)
    truth = quadrature_2d(exact, x, lim=7.0, n=701)[0]
    monkeypatch.setattr(fastair.data, "load_dataset",
                        lambda name, root=None: Splits(name, x.float(), x.float(), x.float()))
    return tmp_path / "model.pt", truth


@pytest.mark.parametrize("method, init", [("ais", "encoder"), ("ais", "prior"),
                                          ("both", None)])
def test_ais_through_the_cli_meets_quadrature_on_a_users_2d_model(user_2d, tmp_path, method,
                                                                   init):
    checkpoint, truth = user_2d
    args = ["evaluate", "--model-factory", "fastair_test_user_2d:build", "--checkpoint",
            str(checkpoint), "--dataset", "sharp2d", "--method", method, "--no-progress",
            "--k-eval", "500", "--elbo-samples", "50"]
    assert cli.main(args + (["--ais-init", init] if init else [])) == 0
    rows = list(csv.DictReader(open(tmp_path / "iwsvi" / "per_example.csv")))
    error = _column(rows, "ais_log_px") - truth
    assert abs(error.mean().item()) < 0.04, error
    assert error.abs().mean().item() < 0.06, error
    assert error.abs().max().item() < 0.25, error
    summary = json.loads((tmp_path / "iwsvi" / "summary.json").read_text())
    assert summary["ais"]["init"] == (init or "fitted")
    assert summary["producer"]["model_factory"] == "fastair_test_user_2d:build"
