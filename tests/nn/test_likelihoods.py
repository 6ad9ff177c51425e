"""The likelihood seam (issue items 3 and 4): ``IWAELoss`` / ``iwae_loss`` / ``VAE`` with
``likelihood="continuous_bernoulli"`` and ``"gaussian"``, and the grey-level ``mnist5k-grey``.

On the same draws (``eps=``) the loss equals a float64 reference built from
:func:`fastair.nn.estimators.importance_bound` with torch.distributions' densities, values and
gradients to 1e-9, for the three estimators, whole, with a trunk and head, and with a
``k_chunk`` that does not divide k; the Gaussian's learned ``log_scale`` is a parameter of the
loss (of the decoder, in a VAE) and gets its gradient once, chunked or not; the data checks are
named errors; a VAE of each likelihood trains on ``mnist5k-grey`` and is evaluated by IW-SVI.
"""
import math
import warnings

import pytest
import torch
from helpers import TRAIN_SETTINGS
from torch import nn
from torch.distributions import ContinuousBernoulli, Normal

import fastair
from fastair.data import DATASETS, load_dataset
from fastair.evaluation import iwsvi_log_likelihood
from fastair.models import VAE, preset
from fastair.nn import (
    ContinuousBernoulliMLPDecoder,
    GaussianMLPDecoder,
    IWAELoss,
    iwae_loss,
)
from fastair.nn.estimators import importance_bound
from fastair.training import Trainer, seed_everything

ESTIMATORS = ("iwae", "stl", "dreg")
OTHERS = ("continuous_bernoulli", "gaussian")
F64 = dict(rtol=1e-9, atol=1e-9)
B, Z, D, H, K = 5, 3, 9, 7, 7


class Net:
    """A float64 encoder and a decoder split into ``trunk`` and ``head``, grey data ``x``."""

    def __init__(self, b=B, z_dim=Z, seed=0):
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(D, 11), nn.Tanh(), nn.Linear(11, 2 * z_dim))
        self.trunk = nn.Sequential(nn.Linear(z_dim, H), nn.Tanh())
        self.head = nn.Linear(H, D)
        self.decoder = nn.Sequential(self.trunk, self.head)
        for m in (self.encoder, self.decoder):
            m.double()
        g = torch.Generator().manual_seed(seed + 1)
        self.x = torch.rand(b, D, generator=g, dtype=torch.float64)
        self.x[0, :3] = torch.tensor([0.0, 1.0, 0.5])  # the ends of [0, 1] and the middle
        self.eps = torch.randn((K, b, z_dim), generator=g, dtype=torch.float64)
        self.params = (list(self.encoder.parameters()) + list(self.trunk.parameters())
                       + list(self.head.parameters()))

    def encode(self):
        return self.encoder(self.x).chunk(2, dim=-1)


def grads(loss, tensors):
    out = torch.autograd.grad(loss, tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(out, tensors)]


def reference(net, likelihood, estimator, logvar_x=None, eps=None, kl=None):
    """``-L_k`` per example by importance_bound, on torch.distributions' densities."""
    mu, logvar = net.encode()
    eps = net.eps if eps is None else eps
    z = mu + torch.exp(0.5 * logvar) * eps
    out = net.decoder(z)
    if likelihood == "continuous_bernoulli":
        log_lik = ContinuousBernoulli(logits=out).log_prob(net.x).sum(-1)
    else:
        log_lik = Normal(out, torch.exp(0.5 * logvar_x)).log_prob(net.x).sum(-1)
    if kl == "analytic":
        return 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1) - log_lik[0]
    return -importance_bound(log_lik, z, mu, logvar, estimator)


def assert_close_all(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, msg=f"tensor {i}", **F64)


# --- the loss against the float64 reference --------------------------------------------------

@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("likelihood", OTHERS)
def test_loss_equals_the_importance_bound_reference(likelihood, estimator):
    net = Net()
    log_scale = None
    if likelihood == "gaussian":
        log_scale = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    wrt = net.params + ([log_scale] if log_scale is not None else [])
    logvar_x = None if log_scale is None else 2 * log_scale
    want_loss = reference(net, likelihood, estimator, logvar_x)
    want = [want_loss.detach()] + grads(want_loss.sum(), wrt)
    trunk_fn = lambda z: net.trunk(z)  # noqa: E731  (not an nn.Module: checkpointed chunks)
    for k_chunk in (None, 3, 1, K, 100):  # 3 does not divide 7
        for decoder, head in ((net.decoder, None), (net.trunk, net.head), (trunk_fn, net.head)):
            mu, logvar = net.encode()
            lv = None if log_scale is None else 2 * log_scale
            loss = iwae_loss(net.x, mu, logvar, decoder, k=K, estimator=estimator,
                             reduction="none", head=head, k_chunk=k_chunk, eps=net.eps,
                             likelihood=likelihood, logvar_x=lv)
            got = [loss.detach()] + grads(loss.sum(), wrt)
            assert_close_all(got, want)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("likelihood", OTHERS)
def test_the_module_matches_the_reference_on_generator_draws(likelihood, estimator):
    """No ``eps``: the draws of one ``torch.randn`` ``[k, B, Z]``, kept (B*Z = 15) or remade
    a chunk at a time (B*Z = 16); the module's own log_scale gets the Gaussian's gradient."""
    for b, z_dim in ((5, 3), (8, 2)):
        net = Net(b, z_dim)
        eps = torch.randn((K, b, z_dim), generator=torch.Generator().manual_seed(4),
                          dtype=torch.float64)
        loss_fn = IWAELoss(k=K, estimator=estimator, likelihood=likelihood,
                           init_log_scale=-0.3).double()
        extra = list(loss_fn.parameters())
        if likelihood == "gaussian":
            assert [p.shape for p in extra] == [torch.Size([])]
            assert extra[0] is loss_fn.log_scale and extra[0].requires_grad
            lv = 2 * loss_fn.log_scale
        else:
            assert extra == []
            lv = None
        want_loss = reference(net, likelihood, estimator, lv, eps=eps).mean()
        want = [want_loss.detach()] + grads(want_loss, net.params + extra)
        for k_chunk in (None, 3):
            loss_fn.k_chunk = k_chunk
            mu, logvar = net.encode()
            for trunk, head in ((net.decoder, None), (net.trunk, net.head)):
                g = torch.Generator().manual_seed(4)
                loss = loss_fn(net.x, *net.encode(), trunk, g, head=head)
                got = [loss.detach()] + grads(loss, net.params + extra)
                assert_close_all(got, want)
                if extra:
                    assert got[-1].abs() > 0  # the log-scale learns


@pytest.mark.parametrize("likelihood", OTHERS)
def test_analytic_kl_with_every_likelihood(likelihood):
    net = Net()
    eps = net.eps[:1]
    lv = torch.tensor(0.4, dtype=torch.float64) if likelihood == "gaussian" else None
    want = reference(net, likelihood, "iwae", lv, eps=eps, kl="analytic")
    want_g = grads(want.sum(), net.params)
    for k_chunk, head in ((None, None), (1, None), (None, net.head)):
        mu, logvar = net.encode()
        got = iwae_loss(net.x, mu, logvar, net.trunk if head is not None else net.decoder,
                        reduction="none", kl="analytic", eps=eps, head=head, k_chunk=k_chunk,
                        likelihood=likelihood, logvar_x=lv)
        torch.testing.assert_close(got, want.detach(), **F64)
        assert_close_all(grads(got.sum(), net.params), want_g)


@pytest.mark.parametrize("shape", [(), (D,), (1, D), (B, D)])
def test_functional_logvar_x_broadcasts_and_gets_its_gradient(shape):
    net = Net()
    g = torch.Generator().manual_seed(7)
    logvar_x = (0.3 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    want = reference(net, "gaussian", "dreg", logvar_x.expand(B, D))
    want_g = grads(want.sum(), net.params + [logvar_x])
    for k_chunk in (None, 2):
        mu, logvar = net.encode()
        got = iwae_loss(net.x, mu, logvar, net.decoder, k=K, estimator="dreg",
                        reduction="none", eps=net.eps, k_chunk=k_chunk,
                        likelihood="gaussian", logvar_x=logvar_x)
        torch.testing.assert_close(got, want, **F64)
        got_g = grads(got.sum(), net.params + [logvar_x])
        assert got_g[-1].shape == logvar_x.shape
        assert_close_all(got_g, want_g)
    mu, logvar = net.encode()  # a number works too
    num = iwae_loss(net.x, mu, logvar, net.decoder, k=K, reduction="none", eps=net.eps,
                    likelihood="gaussian", logvar_x=0.25)
    torch.testing.assert_close(num, reference(net, "gaussian", "iwae",
                                              torch.tensor(0.25, dtype=torch.float64)), **F64)


def test_per_pixel_scale():
    net = Net()
    loss_fn = IWAELoss(k=K, estimator="iwae", likelihood="gaussian", gaussian_scale="pixel",
                       x_dim=D).double()
    assert loss_fn.log_scale.shape == (D,)
    assert "gaussian_scale='pixel'" in repr(loss_fn)
    with torch.no_grad():
        loss_fn.log_scale.copy_(torch.linspace(-1, 0.5, D, dtype=torch.float64))
    want = reference(net, "gaussian", "iwae", 2 * loss_fn.log_scale, eps=net.eps).mean()
    want_g = grads(want, [loss_fn.log_scale])[0]
    mu, logvar = net.encode()
    loss = iwae_loss(net.x, mu, logvar, net.decoder, k=K, eps=net.eps, likelihood="gaussian",
                     logvar_x=loss_fn.logvar_x)
    torch.testing.assert_close(loss, want, **F64)
    got_g = grads(loss, [loss_fn.log_scale])[0]
    torch.testing.assert_close(got_g, want_g, **F64)
    assert (got_g != 0).all()
    with pytest.raises(ValueError, match="x_dim: gaussian_scale='pixel'"):
        IWAELoss(likelihood="gaussian", gaussian_scale="pixel")
    with pytest.raises(ValueError, match="gaussian_scale: expected one of"):
        IWAELoss(likelihood="gaussian", gaussian_scale="channel")
    with pytest.raises(ValueError, match="x: expected .B, D. with D = 9, the x_dim"):
        loss_fn(net.x[:, :4], mu, logvar, net.decoder)


def test_a_decoder_owned_scale_gets_one_gradient_chunked_or_not():
    """A Module decoder whose own parameter makes ``logvar_x`` (GaussianMLPDecoder's
    log_scale): the chunked backward must not count its gradient twice."""
    torch.manual_seed(0)
    dec = GaussianMLPDecoder(Z, D, (H,), init_log_scale=-0.5).double()
    net = Net()
    runs = []
    for k_chunk in (None, 3, 1):
        mu, logvar = net.encode()
        loss = iwae_loss(net.x, mu, logvar, dec, k=K, estimator="dreg", eps=net.eps,
                         k_chunk=k_chunk, likelihood="gaussian", logvar_x=dec.logvar_x)
        runs.append([loss.detach()] + grads(loss, list(dec.parameters()) + net.params))
    for run in runs[1:]:
        assert_close_all(run, runs[0])


def test_no_logits_warning_for_the_other_likelihoods():
    net = Net()
    probs = nn.Sequential(net.decoder, nn.Sigmoid())
    mu, logvar = net.encode()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for likelihood in OTHERS:
            IWAELoss(k=2, likelihood=likelihood).double()(net.x, mu, logvar, probs)
    with pytest.warns(UserWarning, match="probabilities passed as logits"):
        IWAELoss(k=2)(net.x, mu, logvar, probs)


# --- checks: named errors ----------------------------------------------------------------------

def test_options_are_checked():
    with pytest.raises(ValueError, match="likelihood: expected one of"):
        IWAELoss(likelihood="poisson")
    net = Net()
    mu, logvar = net.encode()
    with pytest.raises(ValueError, match="likelihood: expected one of"):
        iwae_loss(net.x, mu, logvar, net.decoder, likelihood="normal")
    with pytest.raises(ValueError, match="logvar_x: likelihood='gaussian' needs"):
        iwae_loss(net.x, mu, logvar, net.decoder, likelihood="gaussian")
    with pytest.raises(ValueError, match="logvar_x: the log-variance of the Gaussian"):
        iwae_loss(net.x, mu, logvar, net.decoder, likelihood="continuous_bernoulli",
                  logvar_x=torch.zeros(()))
    with pytest.raises(ValueError, match="logvar_x: expected a shape that broadcasts"):
        iwae_loss(net.x, mu, logvar, net.decoder, likelihood="gaussian",
                  logvar_x=torch.zeros(D + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"decoder: expected Gaussian means of shape \[k, B, D\]"):
        iwae_loss(net.x, mu, logvar, net.trunk, likelihood="gaussian", logvar_x=0.0)


@pytest.mark.parametrize("bad,match", [
    (1.5, r"x: values range over \[0, 1.5\], outside \[0, 1\].*continuous Bernoulli"),
    (-0.2, r"x: values range over \[-0.2, 1\].*likelihood='gaussian'"),
    (200.0, r"0-255 pixels\? divide by 255\)"),
    (math.nan, r"x: 1 entries are not finite \(NaN\); expected data in \[0, 1\] for the "
               r"continuous Bernoulli"),
])
def test_continuous_bernoulli_rejects_data_outside_the_unit_interval(bad, match):
    net = Net()
    x = net.x.clone()
    x[1, 4] = bad
    mu, logvar = net.encode()
    with pytest.raises(ValueError, match=match):
        iwae_loss(x, mu, logvar, net.decoder, likelihood="continuous_bernoulli")
    with pytest.raises(ValueError, match=match):
        IWAELoss(likelihood="continuous_bernoulli")(x, mu, logvar, net.trunk, head=net.head)
    iwae_loss(x, mu, logvar, net.decoder, likelihood="continuous_bernoulli", check_input=False)


def test_gaussian_rejects_non_finite_data_only():
    net = Net()
    mu, logvar = net.encode()
    for bad, kind in ((math.inf, "inf"), (math.nan, "NaN")):
        x = net.x.clone()
        x[0, 0] = bad
        with pytest.raises(ValueError, match=rf"x: 1 entries are not finite \({kind}\); expected "
                                             r"finite data for the Gaussian"):
            IWAELoss(likelihood="gaussian").double()(x, mu, logvar, net.decoder)
    x = 3.0 * net.x - 1.0  # real-valued data are a Gaussian's
    loss = IWAELoss(likelihood="gaussian").double()(x, mu, logvar, net.decoder)
    assert torch.isfinite(loss)


def test_bernoulli_messages_are_unchanged():
    net = Net()
    mu, logvar = net.encode()
    x = net.x.clone()
    x[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"expected Bernoulli targets in \[0, 1\]"):
        iwae_loss(x, mu, logvar, net.decoder)
    with pytest.raises(ValueError, match=r"0-255 pixels\? divide by 255 and binarize"):
        iwae_loss(net.x * 255, mu, logvar, net.decoder)


# --- decoders, the VAE, the data set, the trainer, IW-SVI ----------------------------------------

def test_mnist5k_grey_is_registered():
    assert "mnist5k-grey" in DATASETS
    grey = load_dataset("mnist5k-grey")
    binary = load_dataset("mnist5k")
    assert grey.name == "mnist5k-grey" and grey.sizes == binary.sizes == (4000, 500, 500)
    assert grey.train.dtype == torch.float32 and grey.x_dim == 784
    assert grey.train.min() == 0 and grey.train.max() == 1
    assert ((grey.train > 0) & (grey.train < 1)).any()  # grey levels, not 0/1
    torch.testing.assert_close(grey.train * 255, (grey.train * 255).round(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("likelihood", OTHERS)
def test_decoders_log_prob(likelihood):
    torch.manual_seed(0)
    cls = ContinuousBernoulliMLPDecoder if likelihood == "continuous_bernoulli" \
        else GaussianMLPDecoder
    dec = cls(Z, D, (H,)).double()
    assert dec.likelihood == likelihood
    z = torch.randn(4, B, Z, dtype=torch.float64)
    x = torch.rand(B, D, dtype=torch.float64)
    out = dec(z)
    if likelihood == "gaussian":
        with torch.no_grad():
            dec.log_scale.fill_(-0.4)
        want = Normal(out, math.exp(-0.4)).log_prob(x).sum(-1)
        assert dict(dec.named_parameters())["log_scale"] is dec.log_scale
        assert GaussianMLPDecoder(Z, D, (H,), scale="pixel").log_scale.shape == (D,)
    else:
        want = ContinuousBernoulli(logits=out).log_prob(x).sum(-1)
    torch.testing.assert_close(dec.log_prob(z, x), want, **F64)


def tiny(likelihood, **kw):
    seed_everything(0)
    return VAE(x_dim=784, z_dim=3, hidden=(8,), k=2, likelihood=likelihood, **kw)


@pytest.mark.parametrize("likelihood", OTHERS)
def test_vae_hparams_decoder_and_bias(likelihood):
    model = tiny(likelihood)
    assert model.hparams["likelihood"] == likelihood
    assert model.decoder.likelihood == likelihood
    assert "likelihood" not in tiny("bernoulli").hparams
    assert "likelihood" not in preset("iwae").hparams
    rebuilt = VAE(**model.hparams)
    assert rebuilt.hparams == model.hparams
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    x = load_dataset("mnist5k-grey").train[:200]
    bias = model.init_decoder_bias(x).double()
    mean = x.double().mean(0)
    if likelihood == "gaussian":
        torch.testing.assert_close(bias, mean, rtol=0, atol=1e-7)
        assert "decoder.log_scale" in dict(model.named_parameters())
    else:
        clamped = mean.clamp(1e-3, 1 - 1e-3)
        # the CB mean 1 / (1 - exp(-l)) - 1/l (torch's .mean clamps the probabilities: not
        # at |l| = 1000); logits where it cancels are compared by value
        near0 = bias.abs() < 1e-3
        safe = torch.where(near0, torch.ones_like(bias), bias)
        got = torch.where(near0, 0.5 + bias / 12, -1 / torch.expm1(-safe) - 1 / safe)
        torch.testing.assert_close(got, clamped, rtol=1e-5, atol=1e-6)
        assert bias.min() < -900 and bias.max() > 0  # a border pixel's mean: 1e-3
    with pytest.raises(ValueError, match="likelihood: expected one of"):
        VAE(likelihood="gauss")


@pytest.mark.parametrize("likelihood", OTHERS)
def test_vae_bound_matches_log_weights_and_k_chunk(likelihood):
    """The training bound (iwae_loss with the likelihood) equals iwae_bound of log_weights on
    the same draws, and k_chunk changes neither it nor any gradient (log_scale's included)."""
    model = tiny(likelihood, estimator="dreg").double().eval()
    x = load_dataset("mnist5k-grey").train[:6].double()
    eps = torch.randn(5, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    runs, params = [], list(model.parameters())
    for k_chunk in (None, 2):
        model.k_chunk = k_chunk
        bound = model.bound_from(x, x, eps)
        runs.append([bound.detach()] + grads(bound.sum(), params))
    assert_close_all(runs[1], runs[0])
    mu, logvar = model.encode(x)
    log_w = model.log_weights(x, mu=mu, logvar=logvar, z=mu + torch.exp(0.5 * logvar) * eps)
    torch.testing.assert_close(fastair.iwae_bound(log_w), runs[0][0], **F64)
    if likelihood == "gaussian":
        i = next(i for i, p in enumerate(params) if p is model.decoder.log_scale)
        assert runs[0][1 + i].abs() > 0  # the log-scale learns


@pytest.mark.parametrize("likelihood", OTHERS)
def test_vae_trains_on_grey_data_and_iwsvi_runs(likelihood):
    data = load_dataset("mnist5k-grey")
    model = tiny(likelihood)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, data.train[:64], data.valid[:32], None, None,
                      **{**TRAIN_SETTINGS, "epochs": 2})
    trainer.fit()
    assert len(trainer.metrics) == 2
    assert all(math.isfinite(row["valid_bound"]) for row in trainer.metrics)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if likelihood == "gaussian":
        assert model.decoder.log_scale.item() != 0.0
    model.eval()
    x = data.test[:4]
    with torch.no_grad():
        log_w = model.log_weights(x, 8, generator=torch.Generator().manual_seed(0))
        assert log_w.shape == (8, 4) and torch.isfinite(log_w).all()
    res = iwsvi_log_likelihood(model, x, k_svi=4, max_steps=2, k_eval=8, chunk=8, batch_size=4,
                               elbo_samples=8, progress=False, warn=False, precision="fp32",
                               fit_precision="fp32")
    assert torch.isfinite(res.log_px).all() and torch.isfinite(res.elbo).all()


def test_trainer_checks_data_by_likelihood():
    grey = load_dataset("mnist5k-grey")
    tx, vx = grey.train[:16], grey.valid[:8]
    for likelihood in ("bernoulli",) + OTHERS:  # grey levels in [0, 1]: every likelihood
        Trainer(tiny(likelihood), tx, vx, None, None, **TRAIN_SETTINGS)
    high = tx.clone()
    high[0, 0] = 1.5
    with pytest.raises(ValueError, match=r"train_x: values range over .*continuous Bernoulli"):
        Trainer(tiny("continuous_bernoulli"), high, vx, None, None, **TRAIN_SETTINGS)
    with pytest.raises(ValueError, match=r"train_x: values range over \[0, 1.5\], outside"):
        Trainer(tiny("bernoulli"), high, vx, None, None, **TRAIN_SETTINGS)
    Trainer(tiny("gaussian"), high - 0.5, vx, None, None, **TRAIN_SETTINGS)  # real data: fine
    nan = vx.clone()
    nan[1, 1] = math.nan
    with pytest.raises(ValueError, match=r"valid_x: 1 entries are not finite \(NaN\); expected "
                                         r"finite data for the Gaussian"):
        Trainer(tiny("gaussian"), tx, nan, None, None, **TRAIN_SETTINGS)


@pytest.mark.parametrize("likelihood", ["continuous_bernoulli", "gaussian"])
def test_iwsvi_fits_q_to_the_models_own_likelihood(likelihood):
    """One Adam step of the fit moves each coordinate by -lr * sign(gradient) (Adam's first
    step): the gradient must be that of the model's likelihood's bound, not a Bernoulli one."""
    import math

    from fastair.evaluation import fit_gaussian_q
    from fastair.models import VAE
    torch.manual_seed(0)
    model = VAE(x_dim=30, z_dim=4, hidden=(16,), likelihood=likelihood).double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(5, 30, dtype=torch.float64)
    mu, logvar = model.encode(x)
    lr, k = 0.05, 6
    fit = fit_gaussian_q(model, x, mu, logvar, k=k, lr=lr, max_steps=1, check_every=1000,
                         generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    torch.randn((k, 5, 4), generator=g, dtype=torch.float64)  # the fit's fixed check draws
    eps = torch.randn((k, 5, 4), generator=g, dtype=torch.float64)
    p = torch.cat([mu, logvar], 1).clone().requires_grad_(True)
    m, lv = p.chunk(2, 1)
    z = m + torch.exp(0.5 * lv) * eps
    bound = torch.logsumexp(model.log_weights(x, mu=m, logvar=lv, z=z), 0) - math.log(k)
    (grad,) = torch.autograd.grad(bound.sum(), p)
    want = torch.cat([mu, logvar], 1) + lr * torch.sign(grad)
    torch.testing.assert_close(torch.cat([fit.mu, fit.logvar], 1), want, rtol=0, atol=1e-6)


def test_a_stack_refuses_a_non_bernoulli_member():
    from fastair.models import VAE
    from fastair.models.stacked import StackedVAE
    models = [VAE(x_dim=30, z_dim=4, hidden=(16,)),
              VAE(x_dim=30, z_dim=4, hidden=(16,), likelihood="gaussian")]
    with pytest.raises(ValueError, match="likelihood 'bernoulli', 'gaussian' cannot be stacked"):
        StackedVAE(models)
    StackedVAE(models[:1])  # Bernoulli members stack as before
