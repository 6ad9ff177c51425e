"""The evaluation's model protocol (fastair.evaluation.protocol): a user's own VAE, written here
with ReLU layers, its own layer sizes and no fastair base class, only ``encode`` and
``decode_logits``, evaluated unchanged by every entry point and by ``fastair evaluate``; IW-SVI
against quadrature truth on its 2-d latent; the fused-head and generic paths equal on the same
draws; the errors for models off the protocol; memory flat in ``k_eval``; the split of the gap."""
import csv
import json
import math
import sys

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from truth2d import ProtocolOnly as Hidden
from truth2d import check_against_truth, simulate
from truth2d import quadrature_2d as quadrature

from fastair import cli
from fastair.evaluation import (
    amortized_bound,
    check_model,
    evaluate_bound,
    fit_gaussian_q,
    iwsvi_log_likelihood,
    log_weights,
    sharded_iwsvi_log_likelihood,
    streamed_weight_stats,
)
from fastair.models import VAE

D, Z, N = 12, 2, 24


class UserVAE(nn.Module):
    """A user's VAE as in the PyTorch examples: its own names and sizes, ReLU, no decoder
    attribute (so the generic path), only the two methods of the protocol."""

    def __init__(self, d=D, z=Z, h_enc=24, h_dec=20):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, h_enc), nn.ReLU())
        self.enc_mu, self.enc_logvar = nn.Linear(h_enc, z), nn.Linear(h_enc, z)
        self.dec_hidden = nn.Sequential(nn.Linear(z, h_dec), nn.ReLU(), nn.Linear(h_dec, h_dec),
                                        nn.ReLU())
        self.dec_out = nn.Linear(h_dec, d)

    def encode(self, x):
        h = self.enc(x)
        return self.enc_mu(h), self.enc_logvar(h)

    def decode_logits(self, z):
        return self.dec_out(self.dec_hidden(z))


class HeadedVAE(nn.Module):
    """The same kind of model exposing its decoder as ``decoder.trunk`` + ``decoder.out``."""

    def __init__(self, d=D, z=Z, h=20):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d, 24), nn.ReLU(), nn.Linear(24, 2 * z))
        self.decoder = nn.Module()
        self.decoder.trunk = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.decoder.out = nn.Linear(h, d)

    def encode(self, x):
        return self.encoder(x).chunk(2, -1)

    def decode_logits(self, z):
        return self.decoder.out(self.decoder.trunk(z))


class Tempered(HeadedVAE):
    """Exposes ``decoder.trunk``/``decoder.out`` but its logits are not their composition."""

    def decode_logits(self, z):
        return 2.0 * super().decode_logits(z)


def user_model(seed=0, scale=4.0):
    torch.manual_seed(seed)
    model = UserVAE().double()
    with torch.no_grad():  # a decoder sharp enough that the posterior is far from the prior
        model.dec_out.weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def truth():
    model = user_model()
    x = simulate(model, N, seed=1)
    log_px, _ = quadrature(model, x)
    return model, x, log_px


def test_quadrature_is_converged(truth):
    model, x, log_px = truth
    finer, _ = quadrature(model, x[:6], lim=10.0, n=1601)
    torch.testing.assert_close(finer, log_px[:6], rtol=0, atol=1e-5)


def test_a_users_relu_vae_matches_quadrature(truth):
    model, x, log_px = truth
    assert not hasattr(model, "k") and not hasattr(model, "log_weights")
    assert check_model(model, x) == "generic"
    result = iwsvi_log_likelihood(model, x, batch_size=N, progress=False, warn=False)
    check_against_truth(result, log_px)
    assert (result.elbo < log_px + 0.01).all()
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())


def test_bf16_estimates_of_a_float32_model_match_quadrature(truth):
    """The bf16 evaluation (the default where the CPU multiplies bf16 natively) holds the same
    truth tolerances as fp32, and on the same fitted q and draws it moves the estimates by less
    than half their standard errors (about 0.002 nat here, against SEs of about 0.008)."""
    model, x, log_px = truth
    model32, x32 = user_model().float(), x.float()
    bf16 = iwsvi_log_likelihood(model32, x32, batch_size=N, progress=False, warn=False,
                                precision="bf16", fit_precision="fp32")
    check_against_truth(bf16, log_px.float())
    fp32 = iwsvi_log_likelihood(model32, x32, batch_size=N, progress=False, warn=False,
                                precision="fp32", fit_precision="fp32")
    moved = (bf16.log_px - fp32.log_px).abs()
    assert moved.mean() < 0.5 * fp32.se.mean(), (moved, fp32.se)
    assert moved.max() < 0.01


def test_the_elbos_of_the_split_are_those_of_their_q_by_quadrature(truth):
    model, x, _ = truth
    x = x[:8]
    with torch.no_grad():
        mu_enc, lv_enc = model.encode(x)
    _, elbo_enc = amortized_bound(model, x, n_samples=20000, chunk=2000, return_elbo=True)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        fit = fit_gaussian_q(model, x, mu_enc, lv_enc, k=1,
                             generator=torch.Generator().manual_seed(2))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    with torch.no_grad():
        stats = streamed_weight_stats(model, x, fit.mu, fit.logvar, 20000, 2000,
                                      torch.Generator().manual_seed(3))
    log_px, (exact_enc, exact_fit) = quadrature(model, x, [(mu_enc, lv_enc),
                                                           (fit.mu, fit.logvar)])
    # 20000 draws: each mean of log w has a standard error of at most 0.007 nat here (measured),
    # their mean over the 8 examples about 0.002
    for got, exact in ((elbo_enc, exact_enc), (stats.mean_log_w, exact_fit)):
        torch.testing.assert_close(got, exact, rtol=0, atol=0.03)
        assert abs((got - exact).mean().item()) < 0.006, got - exact
    assert (exact_fit < log_px).all() and exact_fit.mean() > exact_enc.mean()


# -- the paths of the log weights --------------------------------------------------------------
def headed(seed=0):
    torch.manual_seed(seed)
    model = HeadedVAE().double()
    with torch.no_grad():
        model.decoder.out.weight.mul_(3.0)
    return model


def test_fused_head_and_generic_paths_agree_on_the_same_draws():
    model = headed()
    hidden = Hidden(model)
    x = simulate(hidden, 10, seed=4)
    assert check_model(model, x) == "fused_head" and check_model(hidden, x) == "generic"
    assert check_model(VAE(x_dim=D, z_dim=Z, hidden=(8,)).double(), x) == "log_weights"
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(50, 10, Z, dtype=torch.float64)
        calls = []
        hook = model.decoder.out.register_forward_hook(lambda m, i, o: calls.append(o.shape))
        try:
            fused = log_weights(model, x, mu, logvar, z, path="fused_head")
            assert calls == []  # the fused op reads out.weight: no [n, B, D] logits formed
            generic = log_weights(hidden, x, mu, logvar, z, path="generic")
            assert calls == [(50, 10, D)]
        finally:
            hook.remove()
        logits = model.decode_logits(z)
        by_hand = ((logits * x - nn.functional.softplus(logits)).sum(-1) - 0.5 * (z ** 2).sum(-1)
                   + 0.5 * ((z - mu) ** 2 * torch.exp(-logvar) + logvar).sum(-1))
    assert fused.shape == (50, 10)
    torch.testing.assert_close(fused, generic, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(generic, by_hand, rtol=1e-10, atol=1e-10)
    kw = dict(k_svi=8, max_steps=100, k_eval=1000, batch_size=10, progress=False, warn=False)
    a, b = iwsvi_log_likelihood(model, x, **kw), iwsvi_log_likelihood(hidden, x, **kw)
    assert torch.equal(a.steps, b.steps)
    for name in ("log_px", "elbo", "ess", "elbo_fit", "elbo_enc"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-8)


def test_a_head_that_is_not_the_decoder_falls_back_to_the_generic_path():
    torch.manual_seed(1)
    model = Tempered().double()
    x = simulate(model, 6, seed=5)
    assert check_model(model, x) == "generic"
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = mu + torch.randn(7, 6, Z, dtype=torch.float64)
        want = log_weights(Hidden(model), x, mu, logvar, z)
        got = streamed_weight_stats(model, x, mu, logvar, 7, 7, torch.Generator().manual_seed(0))
        ref = streamed_weight_stats(Hidden(model), x, mu, logvar, 7, 7,
                                    torch.Generator().manual_seed(0))
    assert want.shape == (7, 6)
    torch.testing.assert_close(got.log_mean, ref.log_mean, rtol=0, atol=0)


# -- the bounds of a model without k or bound() ------------------------------------------------
def test_amortized_bound_takes_k_as_a_keyword_on_a_model_without_k(truth):
    model, x, log_px = truth
    x, log_px = x[:8], log_px[:8]
    assert not hasattr(model, "k")
    default = amortized_bound(model, x, n_samples=4000)
    torch.testing.assert_close(default, amortized_bound(model, x, k=1, n_samples=4000),
                               rtol=0, atol=0)
    k8 = amortized_bound(model, x, k=8, n_samples=4000)
    assert k8.mean() > default.mean() + 0.01 and k8.mean() < log_px.mean() + 0.01
    model.k = 8  # a model that carries its own k gets it by default
    try:
        torch.testing.assert_close(amortized_bound(model, x, n_samples=4000), k8, rtol=0, atol=0)
    finally:
        del model.k
    with pytest.raises(ValueError, match="k: expected an int >= 1"):
        amortized_bound(model, x, k=0)


def test_evaluate_bound_on_a_model_without_bound_is_the_clean_bound(truth):
    model, x, _ = truth
    assert not hasattr(model, "bound")
    got = evaluate_bound(model, x, k=5, batch_size=10, seed=7)
    g = torch.Generator().manual_seed(7)
    want = []
    with torch.no_grad():
        for i in range(0, N, 10):
            xb = x[i:i + 10]
            mu, logvar = model.encode(xb)
            eps = torch.randn((5,) + tuple(mu.shape), generator=g, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * eps
            logits = model.decode_logits(z)
            log_w = ((logits * xb - nn.functional.softplus(logits)).sum(-1)
                     - 0.5 * (z ** 2).sum(-1) + 0.5 * (eps ** 2 + logvar).sum(-1))
            want.append(torch.logsumexp(log_w, 0) - math.log(5))
    torch.testing.assert_close(got, torch.cat(want), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(evaluate_bound(model, x, seed=7), evaluate_bound(model, x, k=1,
                                                                                  seed=7))


# -- models off the protocol -------------------------------------------------------------------
class Counter(nn.Module):
    """Counts the rows its methods see; subclasses break the protocol in one way each."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(D, 2 * Z)
        self.head = nn.Linear(Z, D)
        self.rows = {"encode": 0, "decode": 0}

    def encode(self, x):
        self.rows["encode"] += x.shape[0]
        return self.lin(x).chunk(2, -1)

    def decode_logits(self, z):
        self.rows["decode"] += z.numel() // Z
        return self.head(z)


class NoEncode(Counter):
    encode = None


class DecodeOnlyProbabilities(Counter):
    """The PyTorch example's shape: decode() returning probabilities, no decode_logits."""
    decode_logits = None

    def decode(self, z):
        return torch.sigmoid(self.head(z))


class OneTensorEncode(Counter):
    def encode(self, x):
        self.rows["encode"] += x.shape[0]
        return self.lin(x)                                                  # [B, 2Z], not a pair


class FlatDecode(Counter):
    def decode_logits(self, z):
        self.rows["decode"] += z.numel() // Z
        return self.head(z.reshape(-1, Z))                           # loses z's leading dims


ENTRY_POINTS = {
    "iwsvi": lambda m, x: iwsvi_log_likelihood(m, x, progress=False),
    "sharded": lambda m, x: sharded_iwsvi_log_likelihood(m, x, progress=False),
    "amortized_bound": lambda m, x: amortized_bound(m, x),
    "evaluate_bound": lambda m, x: evaluate_bound(m, x),
    "fit_gaussian_q": lambda m, x: fit_gaussian_q(m, x, torch.zeros(len(x), Z),
                                                  torch.zeros(len(x), Z)),
}
BROKEN = {
    NoEncode: r"NoEncode has no encode\(x \[B, D\]\) -> \(mu \[B, Z\], logvar \[B, Z\]\)",
    DecodeOnlyProbabilities: r"has no decode_logits\(z \[\.\.\., B, Z\]\) -> logits \[\.\.\., "
                             r"B, D\].*it has decode\(\)",
    OneTensorEncode: r"OneTensorEncode.encode\(x \[2, 12\]\) returned a tensor of shape "
                     r"\[2, 4\]; expected \(mu, logvar\)",
    FlatDecode: r"FlatDecode.decode_logits\(z \[2, 2, 2\]\) returned a tensor of shape \[4, 12\]"
                r"; expected logits \[2, 2, 12\]",
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("cls", list(BROKEN), ids=lambda c: c.__name__)
def test_a_model_off_the_protocol_is_a_type_error_before_any_work(entry, cls):
    model = cls()
    x = torch.zeros(50, D)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TypeError, match=BROKEN[cls]):
        ENTRY_POINTS[entry](model, x)
    assert model.rows["encode"] <= 2 and model.rows["decode"] <= 4  # the probe on x[:2] only
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_check_model_names_the_expected_module():
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        check_model(object())
    assert check_model(Counter()) == "generic"  # without data: only the methods are looked up


# -- memory ------------------------------------------------------------------------------------
class LargestTensor(TorchDispatchMode):
    """The most elements of any tensor an op returns inside the block."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_memory_is_flat_in_k_eval_on_the_generic_path():
    torch.manual_seed(2)
    model = UserVAE()
    x = (torch.rand(8, D, generator=torch.Generator().manual_seed(6)) < 0.5).float()
    assert check_model(model, x) == "generic"
    seen = {}
    for k_eval in (1000, 10000):
        inputs = []  # elements of every z the decoder receives
        handle = model.dec_hidden.register_forward_hook(
            lambda module, args, out, inputs=inputs: inputs.append(args[0].numel()))
        try:
            with LargestTensor() as mode:
                iwsvi_log_likelihood(model, x, k_eval=k_eval, chunk=100, max_steps=25,
                                     elbo_samples=200, batch_size=8, progress=False, warn=False)
        finally:
            handle.remove()
        seen[k_eval] = (max(inputs), mode.largest, len(inputs))
    assert seen[10000][2] > seen[1000][2] + 80  # the draws did grow with k_eval ...
    assert seen[10000][:2] == seen[1000][:2]    # ... and the largest tensors did not
    assert seen[1000][0] == 100 * 8 * Z          # the decoder sees chunk draws at a time
    assert seen[1000][1] <= 100 * 8 * 20         # nothing above one chunk's hidden layer


# -- the split of the gap ----------------------------------------------------------------------
def test_the_gap_split_adds_up_and_the_fitted_q_beats_the_encoder():
    model = user_model(seed=3, scale=4.0)
    x = simulate(model, 16, seed=8)
    model.k = 4  # the amortized bound L_4 is then not the ELBO
    try:
        r = iwsvi_log_likelihood(model, x, k_svi=1, batch_size=16, progress=False, warn=False)
    finally:
        del model.k
    torch.testing.assert_close(r.approx_gap + r.amort_gap, r.log_px - r.elbo_enc)
    torch.testing.assert_close(r.approx_gap, r.log_px - r.elbo_fit)
    torch.testing.assert_close(r.amort_gap, r.elbo_fit - r.elbo_enc)
    assert (r.approx_gap >= -1e-9).all()             # Jensen, on the same draws
    assert r.elbo.mean() > r.elbo_enc.mean()          # L_4 above L_1
    assert r.elbo_fit.mean() > r.elbo_enc.mean() + 0.02  # q fitted to the ELBO beats the encoder
    s = r.summary()
    assert s["approx_gap"] == pytest.approx(r.approx_gap.mean().item())
    assert s["amort_gap"] == pytest.approx(r.amort_gap.mean().item())
    rows = list(csv.DictReader(r.per_example_csv().splitlines()))
    assert list(rows[0])[:12] == ["index", "log_px", "elbo", "gap", "steps", "hit_cap", "ess",
                                  "se", "elbo_enc", "elbo_fit", "approx_gap", "amort_gap"]
    assert float(rows[3]["amort_gap"]) == pytest.approx(r.amort_gap[3].item(), abs=1e-6)
    plain = iwsvi_log_likelihood(model, x[:4], max_steps=30, k_eval=300, elbo_samples=300,
                                 batch_size=4, progress=False, warn=False)
    torch.testing.assert_close(plain.elbo, plain.elbo_enc)  # k = 1: L_1 is the ELBO


# -- fastair evaluate --model-factory ----------------------------------------------------------
FACTORY = '''
import torch
from torch import nn


class UserVAE(nn.Module):
    def __init__(self, d=784, z=2, h=16):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 2 * z))
        self.dec = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, d))

    def encode(self, x):
        mu, logvar = self.enc(x).chunk(2, -1)
        return mu, logvar

    def decode_logits(self, z):
        return self.dec(z)


class NoLogits(UserVAE):
    decode_logits = None


def build():
    return UserVAE()


def build_wider():
    return UserVAE(h=32)


def build_no_logits():
    return NoLogits()


def not_a_module():
    return 3
'''


def test_fastair_evaluate_runs_a_users_model_from_a_factory(tiny_data, tmp_path, monkeypatch,
                                                            capsys):
    (tmp_path / "fastair_test_user_vae.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fastair_test_user_vae", None)
    import fastair_test_user_vae as user

    torch.manual_seed(0)
    model = user.build()
    ck = tmp_path / "model.pt"
    torch.save(model.state_dict(), ck)
    args = ["evaluate", "--model-factory", "fastair_test_user_vae:build", "--checkpoint",
            str(ck), "--dataset", "tiny", "--max-steps", "25", "--k-eval", "200", "--chunk",
            "50", "--no-progress"]
    assert cli.main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "iwsvi" / "per_example.csv")))
    summary = json.loads((tmp_path / "iwsvi" / "summary.json").read_text())
    assert len(rows) == summary["n"] == 40 and summary["k_model"] == 1
    assert summary["model_factory"] == "fastair_test_user_vae:build"
    assert summary["approx_gap"] >= 0 and math.isfinite(summary["amort_gap"])
    assert "approximation" in capsys.readouterr().out
    # the loaded weights are the saved ones: the same numbers as the library call
    import fastair.data
    x = fastair.data.load_dataset("tiny").test
    direct = iwsvi_log_likelihood(model, x, max_steps=25, k_eval=200, chunk=50, progress=False,
                                  warn=False)
    got = torch.tensor([float(r["log_px"]) for r in rows], dtype=direct.log_px.dtype)
    torch.testing.assert_close(got, direct.log_px, rtol=0, atol=2e-6)
    # a dict with a "model" entry is read too, and --out chooses the directory
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    out = tmp_path / "elsewhere"
    assert cli.main(args[:4] + [str(tmp_path / "wrapped.pt"), "--out", str(out)] + args[5:]) == 0
    assert (out / "per_example.csv").read_text() == \
        (tmp_path / "iwsvi" / "per_example.csv").read_text()


@pytest.mark.parametrize("factory, checkpoint, code, match", [
    ("fastair_no_such_module:build", "model.pt", 2, "cannot import the module"),
    ("fastair_test_user_vae:nothing", "model.pt", 2, "has no 'nothing'"),
    ("fastair_test_user_vae", "model.pt", 2, "expected MODULE:FUNCTION"),
    ("fastair_test_user_vae:not_a_module", "model.pt", 2, "returned a int, not a torch.nn.Module"),
    ("fastair_test_user_vae:build_wider", "model.pt", 1,
     r"model.pt: does not fit the model .*shapes .*torch.save\(model.state_dict\(\), path\)"),
    ("fastair_test_user_vae:build", "garbage.pt", 1, "garbage.pt: cannot read this checkpoint"),
    ("fastair_test_user_vae:build", "missing.pt", 2, "missing.pt: no such checkpoint"),
    ("fastair_test_user_vae:build_no_logits", "model.pt", 2, "NoLogits has no decode_logits"),
])
def test_fastair_evaluate_names_what_is_wrong_with_a_factory_or_checkpoint(
        tiny_data, tmp_path, monkeypatch, capsys, factory, checkpoint, code, match):
    (tmp_path / "fastair_test_user_vae.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fastair_test_user_vae", None)
    import fastair_test_user_vae as user
    torch.save(user.build().state_dict(), tmp_path / "model.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    assert cli.main(["evaluate", "--model-factory", factory, "--checkpoint",
                     str(tmp_path / checkpoint), "--dataset", "tiny", "--max-steps", "2",
                     "--k-eval", "8", "--no-progress"]) == code
    import re
    assert re.search(match, capsys.readouterr().err), match


def test_fastair_evaluate_needs_a_run_dir_or_both_factory_options(tmp_path, capsys):
    assert cli.main(["evaluate"]) == 2
    assert "give RUN_DIR" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model-factory", "m:build"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path), "--model-factory", "m:build", "--checkpoint",
                     "x.pt"]) == 2
    assert "not both" in capsys.readouterr().err
