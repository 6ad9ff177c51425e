"""bench/bench_peers.py: the quick path runs for the providers that need no extra package and
writes its CSV with every column, and what each provider reports is the float64 truth on the
same draws; the truth itself is checked against torch.distributions, and a value off by a
little, or pythae's surrogate, is caught."""
import csv
import math

import pytest
import torch
from torch import nn

from bench import bench_peers

BUILTIN = ("fastair", "fastair-bf16", "eager")
TOL = {"fp32": lambda t: 1e-3 + 1e-5 * abs(t), "bf16": lambda t: 0.05 + 1e-2 * abs(t)}


@pytest.mark.slow
def test_quick_run_writes_every_column_and_each_value_is_the_float64_truth(tmp_path, capsys):
    rc = bench_peers.main(["--quick", "--providers", *BUILTIN, "--target-time", "0.05",
                           "--warmup", "1", "--batches", "2", "--out", str(tmp_path)])
    assert rc == 0
    with open(tmp_path / "peers_cpu.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == bench_peers.COLUMNS
        rows = list(reader)
    assert sorted((r["provider"], int(r["k"])) for r in rows) == sorted(
        (p, k) for p in BUILTIN for k in bench_peers.QUICK_KS)
    for r in rows:
        name = f"{r['provider']} k={r['k']}"
        truth, per = float(r["truth"]), float(r["per_example"])
        assert 50 < truth < 1000, name  # -L_k of a digit under a fresh VAE, in nats
        assert per == float(r["reported"]), name  # these report the mean of -L_k
        assert abs(per - truth) <= TOL[r["precision"]](truth), (name, per, truth)
        assert r["value_ok"] == "True", name
        assert float(r["step_ms"]) > 0 and int(r["steps"]) >= 5, name
        assert float(r["live_mb"]) > 0 and float(r["rss_mb"]) > 0, name
        assert r["precision"] == ("bf16" if r["provider"].endswith("bf16") else "fp32")
    text = (tmp_path / "peers_cpu.md").read_text()
    for want in ("Machine:", "Command: `python -m bench.bench_peers --quick", "commit",
                 "### k = 8", "| fastair-bf16 | bf16 |", "Targets"):
        assert want in text


def _nets(seed=0, d=12, h=7, z=3):
    torch.manual_seed(seed)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(nn.Linear(d, h), nn.Tanh())
            self.mu, self.logvar = nn.Linear(h, z), nn.Linear(h, z)

        def forward(self, x):
            t = self.trunk(x)
            return self.mu(t), self.logvar(t)
    decoder = nn.Sequential(nn.Linear(z, h), nn.Tanh(), nn.Linear(h, d))
    return Encoder().double(), decoder.double()


def test_the_truth_is_the_bound_by_torch_distributions():
    """``true_values`` against -L_k and pythae's surrogate written with torch.distributions,
    chunks over k included (k = 11 with chunks of 4)."""
    from torch.distributions import Bernoulli, Independent, Normal
    encoder, decoder = _nets()
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(5, 12, generator=g) < 0.4).double()
    eps = torch.randn(11, 5, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        mu, logvar = encoder(x)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_w = (Independent(Bernoulli(logits=decoder(z)), 1).log_prob(x)
                 + Independent(Normal(torch.zeros_like(mu), 1.0), 1).log_prob(z)
                 - Independent(Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z))
    want = -(torch.logsumexp(log_w, 0) - math.log(11)).mean().item()
    w = torch.softmax(log_w, 0)
    want_surrogate = -(w * log_w).sum(0).mean().item()
    got, surrogate = bench_peers.true_values(encoder, decoder, x, eps, chunk=4)
    assert got == pytest.approx(want, rel=1e-12)
    assert surrogate == pytest.approx(want_surrogate, rel=1e-12)
    # the surrogate is below -L_k by log k - H(w~) per example
    gap = (math.log(11) + (w * torch.log(w)).sum(0)).mean().item()
    assert want - want_surrogate == pytest.approx(gap, rel=1e-9)


def _provider(name, k, seed=0):
    data = bench_peers.batches(1, seed)
    encoder, decoder = bench_peers.make_networks(seed, data)
    return bench_peers.make_provider(name, k, encoder, decoder), data[0]


@pytest.mark.parametrize("name", ["fastair", "eager"])
def test_a_value_off_by_a_little_or_a_surrogate_fails_the_check(name):
    provider, x = _provider(name, 8)
    torch.manual_seed(3)
    reported, truth, surrogate, eps = bench_peers.check_value(provider, x)
    assert eps.shape == (8, bench_peers.B, bench_peers.Z) and eps.dtype == torch.float64
    assert bench_peers.value_columns(provider, reported, truth, surrogate)["value_ok"]
    off = bench_peers.value_columns(provider, reported + 0.01, truth, surrogate)
    assert not off["value_ok"] and off["error"] == pytest.approx(reported + 0.01 - truth)
    # pythae's surrogate reads better than -L_k by more than the tolerance at k = 8
    assert not bench_peers.value_columns(provider, surrogate, truth, surrogate)["value_ok"]
    # other draws give another truth: the replayed draws are the step's own
    torch.manual_seed(4)
    assert abs(bench_peers.check_value(provider, x)[1] - truth) > 1e-3


def test_pyro_reports_the_batch_sum_of_the_true_bound():
    pytest.importorskip("pyro")
    provider, x = _provider("pyro", 8)
    reported, truth, surrogate, _ = bench_peers.check_value(provider, x)
    assert reported == pytest.approx(bench_peers.B * truth, rel=1e-5)
    assert bench_peers.value_columns(provider, reported, truth, surrogate)["value_ok"]


def test_pythae_reports_its_surrogate():
    pytest.importorskip("pythae")
    provider, x = _provider("pythae", 8)
    reported, truth, surrogate, _ = bench_peers.check_value(provider, x)
    assert reported == pytest.approx(surrogate, rel=1e-5)
    assert truth - reported > 0.1  # the surrogate reads better than the true -L_k
    assert bench_peers.value_columns(provider, reported, truth, surrogate)["value_ok"]


def test_a_missing_peer_is_skipped_with_a_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_peers, "missing_package",
                        lambda name: {"pyro": "pyro-ppl", "pythae": "pythae"}.get(name))
    assert bench_peers.main(["--quick", "--providers", "pyro", "pythae",
                             "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipping pyro: the package pyro-ppl is not installed" in out
    assert "skipping pythae" in out
    assert "Skipped: pyro" in (tmp_path / "peers_cpu.md").read_text()
    with open(tmp_path / "peers_cpu.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 0
