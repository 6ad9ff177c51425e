"""The VAE family: shapes, the bound against its definition, denoising, WNI, presets, errors."""
import math

import pytest
import torch
import torch.nn.functional as F

import fastair
from fastair.models import PRESETS, VAE, preset, preset_kwargs

D, Z, B = 30, 4, 6


def _x(b=B, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, d, generator=g) < 0.4).float()


def _model(**kw):
    torch.manual_seed(1)
    return VAE(**{"x_dim": D, "z_dim": Z, "hidden": (16, 12), **kw})


def _log_normal(z, mu, logvar):
    return -0.5 * ((z - mu) ** 2 * torch.exp(-logvar) + logvar + math.log(2 * math.pi)).sum(-1)


def test_default_architecture_matches_the_design():
    m = VAE()
    linears = [(l.in_features, l.out_features) for l in m.encoder.modules()
               if isinstance(l, torch.nn.Linear)]
    assert linears == [(784, 200), (200, 200), (200, 50), (200, 50)]
    linears = [(l.in_features, l.out_features) for l in m.decoder.modules()
               if isinstance(l, torch.nn.Linear)]
    assert linears == [(50, 200), (200, 200), (200, 784)]
    assert m.hparams == dict(x_dim=784, z_dim=50, hidden=[200, 200], k=1, sigma=0.0, alpha=1.0,
                             H=None)


def test_shapes():
    m, x = _model(k=3), _x()
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (B, Z)
    assert m.decode_logits(torch.randn(5, B, Z)).shape == (5, B, D)
    assert m.log_weights(x).shape == (3, B)
    assert m.log_weights(x, k=7).shape == (7, B)
    assert m.bound(x).shape == (B,)
    assert m.eval().bound(x, k=2).shape == (B,)
    assert m.bound(x[:1], k=1).shape == (1,)


def test_k1_bound_is_the_elbo():
    m, x = _model().eval(), _x()
    torch.manual_seed(5)
    got = m.bound(x)
    torch.manual_seed(5)
    eps = torch.randn(1, B, Z)
    mu, logvar = m.encode(x)
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = m.decode_logits(z)
    log_px = (x * logits - F.softplus(logits)).sum(-1)
    elbo = log_px + _log_normal(z, 0.0, torch.zeros(())) - _log_normal(z, mu, logvar)
    torch.testing.assert_close(got, elbo[0], rtol=1e-5, atol=1e-4)


def test_iwae_bound_is_logsumexp_of_log_weights():
    m, x = _model(k=5).eval(), _x()
    torch.manual_seed(2)
    log_w = m.log_weights(x)
    torch.manual_seed(2)
    got = m.bound(x)
    torch.testing.assert_close(got, torch.logsumexp(log_w, 0) - math.log(5), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got, fastair.iwae_bound(log_w), rtol=1e-5, atol=1e-4)


def test_eval_mode_bound_is_the_clean_bound():
    m, x = _model(k=2, sigma=0.5, alpha=0.5), _x()
    m.eval()
    torch.manual_seed(3)
    got = m.bound(x)
    torch.manual_seed(3)
    clean = m.bound_from(x, x, torch.randn(2, B, Z))
    torch.testing.assert_close(got, clean)
    m.train()
    torch.manual_seed(3)
    assert not torch.allclose(m.bound(x), got)  # train mode: the denoising objective


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_denoising_objective_is_the_explicit_alpha_mixture(alpha):
    sigma, k = 0.7, 3
    m, x = _model(k=k, sigma=sigma, alpha=alpha).train(), _x()
    torch.manual_seed(11)
    got = m.bound(x)
    torch.manual_seed(11)
    noise = torch.randn(B, D)
    terms = 2 if alpha < 1 else 1
    eps = torch.randn(k, terms * B, Z)
    noisy = m.bound_from(x + sigma * noise, x, eps[:, :B])
    want = alpha * noisy
    if alpha < 1:
        want = want + (1 - alpha) * m.bound_from(x, x, eps[:, B:])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_no_noise_or_no_noisy_weight_gives_the_clean_bound():
    x = _x()
    for kw in (dict(sigma=0.0, alpha=0.5), dict(sigma=0.5, alpha=0.0)):
        m = _model(k=2, **kw).train()
        torch.manual_seed(4)
        got = m.bound(x)
        torch.manual_seed(4)
        torch.testing.assert_close(got, m.bound_from(x, x, torch.randn(2, B, Z)))


def test_the_decoder_scores_the_clean_x():
    m, x = _model(sigma=0.5, alpha=1.0), _x()
    torch.manual_seed(8)
    got = m.bound(x)
    torch.manual_seed(8)
    x_enc = x + 0.5 * torch.randn(B, D)
    eps = torch.randn(1, B, Z)
    torch.testing.assert_close(got, m.bound_from(x_enc, x, eps))
    assert not torch.allclose(got, m.bound_from(x_enc, x_enc, eps))


def test_gradients_reach_encoder_and_decoder():
    m, x = _model(k=2, sigma=0.3, alpha=0.5, H=1.0), _x()
    (-m.bound(x).mean()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if not name.endswith("original1"):  # u has no gradient while the cap is inactive
            assert p.grad.abs().sum() > 0, name


def test_wni_caps_every_encoder_row_norm():
    H = 0.3
    m = _model(H=H)
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.mul_(50.0)  # push every row far above the cap
    linears = [l for l in m.encoder.modules() if isinstance(l, torch.nn.Linear)]
    assert len(linears) == 4
    for layer in linears:
        assert torch.linalg.vector_norm(layer.weight, dim=1).max() <= H * (1 + 1e-5)
    dec = [l for l in m.decoder.modules() if isinstance(l, torch.nn.Linear)]
    assert not any(hasattr(l, "parametrizations") for l in dec)
    assert torch.isfinite(m.bound(_x())).all()


def test_wni_on_hidden_layers_caps_the_trunk_and_leaves_the_heads_free():
    H = 0.3
    m = _model(H=H, H_layers="hidden")
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.mul_(50.0)
    for layer in m.encoder.trunk:
        if isinstance(layer, torch.nn.Linear):
            assert torch.linalg.vector_norm(layer.weight, dim=1).max() <= H * (1 + 1e-5)
    for head in (m.encoder.mu, m.encoder.logvar):
        assert not hasattr(head, "parametrizations")
        assert torch.linalg.vector_norm(head.weight, dim=1).max() > 10 * H
    assert m.hparams["H_layers"] == "hidden" and "H_layers" not in _model(H=H).hparams
    assert VAE(**m.hparams).H_layers == "hidden"
    with pytest.raises(ValueError, match="H_layers"):
        _model(H=H, H_layers="heads")


def test_init_decoder_bias_is_the_logit_of_the_clamped_mean():
    m, x = _model(), _x(b=50)
    x[:, 0] = 0.0
    x[:, 1] = 1.0
    m.init_decoder_bias(x)
    mean = x.double().mean(0).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(m.decoder.out.bias, torch.logit(mean).float())
    assert torch.isfinite(m.decoder.out.bias).all()


def test_presets():
    assert set(PRESETS) == {"vae", "dvae", "wni-vae", "iwae", "diwae", "wni-iwae"}
    for name in PRESETS:
        m = preset(name, x_dim=D, z_dim=Z, hidden=(8,))
        assert isinstance(m, VAE) and torch.isfinite(m.bound(_x())).all()
    m = preset("dvae", sigma=0.4, alpha=0.5, x_dim=D)
    assert (m.k, m.sigma, m.alpha, m.H) == (1, 0.4, 0.5, None)
    assert preset("WNI_IWAE", x_dim=D).H == PRESETS["wni-iwae"]["H"]
    assert preset("iwae", k=64, x_dim=D).k == 64
    assert preset_kwargs("diwae", sigma=None) == PRESETS["diwae"]
    assert preset("iwae", x_dim=D).k > 1 and preset("vae", x_dim=D).k == 1
    with pytest.raises(ValueError, match="unknown preset"):
        preset("vqvae")


@pytest.mark.parametrize("kw, match", [
    (dict(sigma=-0.1), "sigma"), (dict(alpha=1.5), "alpha"), (dict(alpha=-0.1), "alpha"),
    (dict(H=0.0), "H"), (dict(H=-1.0), "H"), (dict(k=0), "k"), (dict(k=1.5), "k"),
    (dict(sigma=float("nan")), "sigma"), (dict(z_dim=0), "z_dim"), (dict(hidden=(8, 0)), "hidden"),
])
def test_bad_arguments_raise_value_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        _model(**kw)


def test_bad_inputs_raise():
    m = _model()
    with pytest.raises(ValueError, match=r"\[B, 30\]"):
        m.bound(torch.zeros(B, D + 1))
    with pytest.raises(ValueError, match="x"):
        m.bound(torch.zeros(D))
    with pytest.raises(TypeError, match="floating"):
        m.bound(torch.zeros(B, D, dtype=torch.long))
    with pytest.raises(ValueError, match="k"):
        m.bound(_x(), k=0)
    with pytest.raises(ValueError, match="train_x"):
        m.init_decoder_bias(torch.zeros(3, 5))


def test_decoder_log_prob_is_the_bernoulli_term_of_its_logits():
    """The likelihood seam: the decoder scores data itself, through the fused head."""
    m, x = _model(), _x()
    z = torch.randn(3, B, Z, generator=torch.Generator().manual_seed(5), requires_grad=True)
    got = m.decoder.log_prob(z, x)
    want = fastair.bernoulli_log_prob(m.decoder(z), x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    g_got, = torch.autograd.grad(got.sum(), z)
    g_want, = torch.autograd.grad(want.sum(), z)
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-5)


def test_log_weights_of_a_given_q_and_draws_follow_the_definition():
    m, x = _model(), _x()
    g = torch.Generator().manual_seed(6)
    mu, logvar = torch.randn(B, Z, generator=g), torch.randn(B, Z, generator=g) * 0.3
    z = mu + torch.exp(0.5 * logvar) * torch.randn(4, B, Z, generator=g)
    got = m.log_weights(x, mu=mu, logvar=logvar, z=z)
    logits = m.decode_logits(z)
    want = ((x * logits - F.softplus(logits)).sum(-1) + _log_normal(z, 0.0, torch.zeros(()))
            - _log_normal(z, mu, logvar))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="mu and logvar together"):
        m.log_weights(x, logvar=logvar)


def test_estimator_is_an_argument_of_the_model():
    """The estimator seam: VAE(estimator=...) picks the objective by name."""
    from fastair.nn.estimators import ESTIMATORS
    assert "iwae" in ESTIMATORS
    m, plain, x = _model(k=3, estimator="iwae"), _model(k=3), _x()
    assert m.estimator == "iwae" and "estimator" not in m.hparams  # the default is not saved
    torch.manual_seed(4)
    a = m.bound(x)
    torch.manual_seed(4)
    b = plain.bound(x)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="estimator: expected one of"):
        _model(estimator="dreg-typo")


def _bound_and_grads(model, x, k, seed=3):
    model.zero_grad(set_to_none=True)
    out = model.bound(x, k, generator=torch.Generator().manual_seed(seed))
    out.sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("estimator", ["iwae", "stl", "dreg"])
@pytest.mark.parametrize("kw", [dict(), dict(sigma=0.3, alpha=0.5), dict(H=1.0)])
def test_training_through_the_fused_head_and_in_chunks_equals_the_logits_path(estimator, kw):
    """The training bound through the decoder's trunk and fused head, whole or ``k_chunk`` at a
    time (chunks not dividing k), gives the logits path's values and every gradient (float64)."""
    model = _model(estimator=estimator, **kw).double()
    x = _x().double()
    model.train()
    model.fused_head = False
    want, want_grads = _bound_and_grads(model, x, 5)
    for k_chunk in (None, 2, 5):
        model.fused_head, model.k_chunk = True, k_chunk
        got, grads = _bound_and_grads(model, x, 5)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
        for name in want_grads:
            torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-9, atol=1e-9,
                                       msg=f"{name}, k_chunk={k_chunk}")


def test_fused_head_auto_takes_the_head_for_k_above_1_or_with_chunks(monkeypatch):
    import fastair.models.vae as vae_module

    def no_head(*args, **kwargs):
        raise AssertionError("went through the head")
    model, x = _model(), _x()
    monkeypatch.setattr(vae_module, "iwae_loss", no_head)
    assert model.fused_head == "auto"
    model.bound(x, 1)  # the logits at k = 1
    with pytest.raises(AssertionError, match="head"):
        model.bound(x, 2)
    model.k_chunk = 1
    with pytest.raises(AssertionError, match="head"):
        model.bound(x, 1)
    model.fused_head = "yes"
    with pytest.raises(ValueError, match="fused_head"):
        model.bound(x, 2)
