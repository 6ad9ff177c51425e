"""The drop-in loss with the fused head, k-chunking and the analytic KL (issue 32).

On the same draws the head path (``loss(x, mu, logvar, trunk, head=head)``) and every
``k_chunk`` give the plain path's loss and gradients (float64, to 1e-9) for the three
estimators; the chunked paths keep no ``[k, B, H]`` or ``[k, B, D]`` activation; under bf16
autocast the head runs its matmul in bfloat16 (float32 sums) and matches the unfused autocast
path; ``kl="analytic"`` is the closed-form KL at k = 1 and a named error beyond; a decoder that
outputs probabilities is warned about once per loss instance.
"""
import warnings

import pytest
import torch
from helpers import peak_bytes
from torch import nn

import fastair
from fastair.nn import IWAELoss, analytic_kl, iwae_loss

ESTIMATORS = ("iwae", "stl", "dreg")
F64 = dict(rtol=1e-9, atol=1e-9)


class Net:
    """An encoder and a decoder split as ``trunk`` (tanh MLP) and ``head`` (nn.Linear)."""

    def __init__(self, b, z_dim, d=23, h=11, dtype=torch.float64, seed=0, dropout=0.0):
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(d, 13), nn.Tanh(), nn.Linear(13, 2 * z_dim))
        layers = [nn.Linear(z_dim, h), nn.Tanh()] + ([nn.Dropout(dropout)] if dropout else [])
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(h, d)
        self.decoder = nn.Sequential(self.trunk, self.head)
        for m in (self.encoder, self.decoder):
            m.to(dtype)
        self.x = (torch.rand(b, d, generator=torch.Generator().manual_seed(seed + 1)) < 0.4
                  ).to(dtype)
        self.named = ([("encoder." + n, p) for n, p in self.encoder.named_parameters()]
                      + [("trunk." + n, p) for n, p in self.trunk.named_parameters()]
                      + [("head.weight", self.head.weight), ("head.bias", self.head.bias)])

    def run(self, loss_fn, head=False, trunk=None, seed=3, backward=True):
        """The loss and every parameter's gradient (and the generator's next draw)."""
        for _, p in self.named:
            p.grad = None
        mu, logvar = self.encoder(self.x).chunk(2, dim=-1)
        g = torch.Generator().manual_seed(seed)
        if head:
            loss = loss_fn(self.x, mu, logvar, trunk or self.trunk, head=self.head, generator=g)
        else:
            loss = loss_fn(self.x, mu, logvar, self.decoder, generator=g)
        if backward:
            loss.sum().backward()
        grads = {n: p.grad.clone() for n, p in self.named} if backward else {}
        return loss.detach(), grads, torch.rand(2, generator=g)


def assert_same(got, want, **tol):
    torch.testing.assert_close(got[0], want[0], **tol)
    assert set(got[1]) == set(want[1])
    for name in want[1]:
        torch.testing.assert_close(got[1][name], want[1][name], msg=name, **tol)
    torch.testing.assert_close(got[2], want[2], rtol=0, atol=0)  # the same number of draws


# (B, Z): B*Z = 15 keeps the [k, B, Z] draws; B*Z = 16 remakes each chunk's from the generator
@pytest.mark.parametrize("b,z_dim", [(5, 3), (8, 2)])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_head_and_every_k_chunk_equal_the_plain_path(b, z_dim, estimator):
    net = Net(b, z_dim)
    k = 7
    want = net.run(IWAELoss(k=k, estimator=estimator))
    for k_chunk in (None, 3, 1, 7, 100):  # 3 does not divide 7
        loss_fn = IWAELoss(k=k, estimator=estimator, k_chunk=k_chunk)
        assert_same(net.run(loss_fn, head=True), want, **F64)
        if k_chunk is not None:
            assert_same(net.run(loss_fn), want, **F64)  # the whole decoder, chunked
    # a trunk that is not an nn.Module (its parameters unknown): torch.utils.checkpoint chunks
    trunk = net.trunk
    assert_same(net.run(IWAELoss(k=k, estimator=estimator, k_chunk=3), head=True,
                         trunk=lambda z: trunk(z)), want, **F64)
    # per example too, and the functional twin
    per = net.run(IWAELoss(k=k, estimator=estimator, reduction="none"))
    mu, logvar = net.encoder(net.x).chunk(2, dim=-1)
    twin = iwae_loss(net.x, mu, logvar, net.trunk, k, estimator, "none",
                     torch.Generator().manual_seed(3), head=net.head, k_chunk=2)
    torch.testing.assert_close(twin, per[0], **F64)


def test_the_estimators_differ_where_they_should():
    """The comparisons above can fail: the encoder's gradients differ between estimators on
    the same draws, and another seed gives another loss."""
    net = Net(5, 3)
    runs = {e: net.run(IWAELoss(k=7, estimator=e, k_chunk=3), head=True) for e in ESTIMATORS}
    for e in ("stl", "dreg"):
        enc = "encoder.0.weight"
        assert not torch.allclose(runs[e][1][enc], runs["iwae"][1][enc])
        torch.testing.assert_close(runs[e][1]["head.weight"], runs["iwae"][1]["head.weight"], **F64)
    assert not torch.allclose(net.run(IWAELoss(k=7), head=True, seed=4)[0], runs["iwae"][0])


def test_no_grad_chunks_give_the_same_value():
    net = Net(8, 2)
    want = net.run(IWAELoss(k=9), backward=False)
    with torch.no_grad():
        got = net.run(IWAELoss(k=9, k_chunk=4), head=True, backward=False)
    assert_same(got, want, **F64)


def test_dropout_in_the_trunk_sees_the_same_masks_when_a_chunk_is_remade():
    """The chunks of an nn.Module trunk (remade by fastair) and of a plain function (remade by
    torch.utils.checkpoint, which restores the RNG) agree, dropout included."""
    net = Net(8, 2, dropout=0.3)
    trunk = net.trunk
    out = []
    for fn in (None, lambda z: trunk(z)):
        torch.manual_seed(11)
        out.append(net.run(IWAELoss(k=6, estimator="dreg", k_chunk=4), head=True, trunk=fn))
    assert_same(out[0], out[1], **F64)


def test_analytic_kl_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(6, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(6, 4, generator=g, dtype=torch.float64)
    normal = torch.distributions.Normal
    want = torch.distributions.kl_divergence(normal(mu, torch.exp(0.5 * logvar)),
                                             normal(torch.zeros_like(mu), torch.ones_like(mu)))
    torch.testing.assert_close(analytic_kl(mu, logvar), want.sum(-1), **F64)
    assert analytic_kl(mu.bfloat16(), logvar.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("b", [5, 8])
def test_the_analytic_kl_loss(b):
    """``-(log p(x|z) - KL)`` on the same draw, and equal on the head and chunked paths."""
    net = Net(b, 2)
    got = net.run(IWAELoss(kl="analytic", reduction="none"))
    mu, logvar = net.encoder(net.x).chunk(2, dim=-1)
    eps = torch.randn((1,) + tuple(mu.shape), generator=torch.Generator().manual_seed(3),
                      dtype=mu.dtype)
    logits = net.decoder(mu + torch.exp(0.5 * logvar) * eps)
    log_px = -nn.functional.binary_cross_entropy_with_logits(
        logits, net.x.expand_as(logits), reduction="none").sum(-1)[0]
    torch.testing.assert_close(got[0], analytic_kl(mu, logvar) - log_px, **F64)
    sampled = net.run(IWAELoss(reduction="none"))  # the sampled KL: another value, same draw
    assert not torch.allclose(sampled[0], got[0])
    for k_chunk in (None, 1):
        assert_same(net.run(IWAELoss(kl="analytic", reduction="none", k_chunk=k_chunk),
                            head=True), got, **F64)


def test_analytic_kl_is_refused_beyond_k1_by_name():
    with pytest.raises(ValueError, match=r"kl='analytic' needs k = 1, got k = 64"):
        IWAELoss(k=64, kl="analytic")
    net = Net(5, 3)
    mu, logvar = net.encoder(net.x).chunk(2, dim=-1)
    with pytest.raises(ValueError, match=r"kl='analytic' needs k = 1, got k = 2"):
        iwae_loss(net.x, mu, logvar, net.decoder, k=2, kl="analytic")
    with pytest.raises(ValueError, match=r"kl='analytic' takes estimator='iwae'.*'dreg'"):
        IWAELoss(estimator="dreg", kl="analytic")
    with pytest.raises(ValueError, match=r"kl: expected None \(sampled\) or 'analytic'"):
        IWAELoss(kl="exact")
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="k_chunk: expected None or an int >= 1"):
            IWAELoss(k=4, k_chunk=bad)


def test_probabilities_as_logits_are_warned_about_once_per_instance():
    net = Net(5, 3)
    probs = nn.Sequential(net.decoder, nn.Sigmoid())
    mu, logvar = net.encoder(net.x).chunk(2, dim=-1)

    def count(loss_fn, decoder, calls=3):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            for _ in range(calls):
                loss_fn(net.x, mu, logvar, decoder)
        return sum("probabilities passed as logits" in str(w.message) for w in seen)

    loss_fn = IWAELoss(k=4)
    assert count(loss_fn, probs) == 1
    assert count(loss_fn, probs) == 0  # the same instance: already warned
    assert count(IWAELoss(k=4), probs) == 1  # another instance warns again
    assert count(IWAELoss(k=4, k_chunk=3), probs) == 1
    assert count(IWAELoss(k=4), net.decoder) == 0  # logits
    assert count(IWAELoss(k=4, check_input=False), probs) == 0


def _round_through(t, dtype):
    return t.to(dtype).to(torch.float32)


@pytest.mark.parametrize("dtype,native_bf16", [(torch.bfloat16, False), (torch.bfloat16, True),
                                                (torch.float16, False), (torch.float16, True)])
def test_the_fused_head_under_autocast_multiplies_in_the_autocast_dtype(monkeypatch, dtype,
                                                                        native_bf16):
    """Under autocast the op's logits are those of h, weight and bias rounded to the autocast
    dtype, not float32 logits of the raw values: summed in float32 (to float32 rounding) where
    the C++ kernels widen them, and rounded to bfloat16 as autocast's ``Linear`` does where the
    CPU multiplies bfloat16 natively (the bias then added in float32)."""
    monkeypatch.setattr(fastair.functional, "native_bf16", lambda device: native_bf16)
    g = torch.Generator().manual_seed(0)
    h = torch.tanh(torch.randn(3, 7, 40, generator=g))
    weight = torch.randn(50, 40, generator=g) / 40 ** 0.5
    bias = torch.randn(50, generator=g)
    x = (torch.rand(7, 50, generator=g) < 0.4).float()
    if native_bf16 and dtype == torch.bfloat16:  # the product rounded, the bias added in fp32
        product = nn.functional.linear(h.to(dtype), weight.to(dtype)).float()
        emulated = fastair.bernoulli_log_prob(product + _round_through(bias, dtype), x)
    else:
        emulated = fastair.bernoulli_log_prob(nn.functional.linear(
            _round_through(h, dtype), _round_through(weight, dtype), _round_through(bias, dtype)),
            x)
    with torch.autocast("cpu", dtype=dtype):
        got = fastair.linear_bernoulli_log_prob(h, weight, bias, x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, emulated, rtol=1e-6, atol=5e-5)
    exact = fastair.linear_bernoulli_log_prob(h, weight, bias, x)
    assert (exact - emulated).abs().max() > 1e-3  # what the check tells apart


@pytest.mark.parametrize("k_chunk", [None, 3])
def test_autocast_head_matches_the_unfused_autocast_path(k_chunk):
    net = Net(8, 2, d=40, h=32, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = net.run(IWAELoss(k=5, estimator="dreg", reduction="none"), backward=False)
        got = net.run(IWAELoss(k=5, estimator="dreg", reduction="none", k_chunk=k_chunk),
                      head=True, backward=False)
    # the gradients are taken outside autocast, as a training loop does
    grads = []
    for kw in ({}, {"head": True}):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_fn = IWAELoss(k=5, estimator="dreg", k_chunk=k_chunk if kw else None)
            for _, p in net.named:
                p.grad = None
            mu, logvar = net.encoder(net.x).chunk(2, dim=-1)
            g = torch.Generator().manual_seed(3)
            if kw:
                loss = loss_fn(net.x, mu, logvar, net.trunk, head=net.head, generator=g)
            else:
                loss = loss_fn(net.x, mu, logvar, net.decoder, generator=g)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in net.named})
    assert got[0].dtype == torch.float32
    torch.testing.assert_close(got[0], want[0], rtol=1.6e-2, atol=1.5e-1)
    for name in grads[0]:
        scale = grads[0][name].abs().max().item()
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=5e-2,
                                   atol=5e-2 * scale, msg=name)


def test_head_argument_errors():
    net = Net(5, 3)
    mu, logvar = net.encoder(net.x).chunk(2, dim=-1)
    loss = IWAELoss(k=2)
    with pytest.raises(TypeError, match=r"head: expected the decoder's last nn.Linear"):
        loss(net.x, mu, logvar, net.trunk, head=net.trunk)
    with pytest.raises(ValueError, match=r"head: expected nn.Linear\(H, D\) with D = 23"):
        loss(net.x, mu, logvar, net.trunk, head=nn.Linear(11, 22).double())
    with pytest.raises(ValueError, match=r"trunk: expected h of shape \[k, B, H\] = \[2, 5, 11\]"):
        loss(net.x, mu, logvar, lambda z: net.trunk(z)[:, :4], head=net.head)


def _largest_saved(fn):
    sizes = [0]

    def pack(t):
        sizes.append(t.numel())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return max(sizes), out


@pytest.mark.parametrize("b,z_dim", [(5, 3), (8, 2)])
def test_k_chunk_saves_no_activation_of_all_samples(b, z_dim):
    """Between forward and backward nothing of ``[k, B, H]`` or ``[k, B, D]`` is saved with
    ``k_chunk``; the head path saves no ``[k, B, D]`` tensor; the plain path saves the logits
    (what the check finds where it is there)."""
    k, d, h = 64, 50, 32
    net = Net(b, z_dim, d=d, h=h)
    mu, logvar = (t.detach().requires_grad_(True) for t in net.encoder(net.x).chunk(2, dim=-1))

    def run(k_chunk=None, head=True):
        loss_fn = IWAELoss(k=k, estimator="dreg", k_chunk=k_chunk)
        out = (loss_fn(net.x, mu, logvar, net.trunk, head=net.head) if head
               else loss_fn(net.x, mu, logvar, net.decoder))
        return out
    plain, loss = _largest_saved(lambda: run(head=False))
    assert plain >= k * b * d
    loss.backward()
    head, _ = _largest_saved(run)
    assert k * b * h <= head < k * b * d
    for k_chunk in (8, 5):
        chunked, loss = _largest_saved(lambda c=k_chunk: run(c))
        assert chunked <= k * b, (k_chunk, chunked)  # the log weights [k, B] at most
        loss.backward()


def test_k_chunk_peak_memory_is_flat_in_k():
    """Peak allocated bytes of forward + backward: with k_chunk about the same at k = 32 and
    k = 512; without, growing with k (what the test tells apart)."""
    net = Net(16, 4, d=784, h=64, dtype=torch.float32)
    mu, logvar = (t.detach().requires_grad_(True) for t in net.encoder(net.x).chunk(2, dim=-1))

    def peak(k, k_chunk):
        def step():
            loss = IWAELoss(k=k, k_chunk=k_chunk)(net.x, mu, logvar, net.trunk, head=net.head)
            loss.backward()
        step()  # warm-up: kernels loaded
        return peak_bytes(step)
    small, large = peak(32, 16), peak(512, 16)
    assert large < 1.5 * small, (small, large)
    assert peak(512, None) > 4 * peak(32, None)


def test_repr_names_the_options():
    assert "k_chunk=128" in repr(IWAELoss(k=2048, k_chunk=128))
    assert "kl='analytic'" in repr(IWAELoss(kl="analytic"))


def test_the_memory_benchmark_writes_its_table_and_plot(tmp_path):
    from bench import bench_loss_memory
    assert bench_loss_memory.main(["--ks", "16", "32", "--k-chunk", "8", "--warmup-k", "4",
                                   "--repeats", "1", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "loss_memory.md").read_text()
    assert "| head + k_chunk=8 <= 0.15x plain at k = 2048 | n/a | n/a |" in text
    assert "`lscpu` model name" in text and "Command: `python -m bench.bench_loss_memory" in text
    rows = (tmp_path / "loss_memory.csv").read_text().splitlines()
    assert rows[0].startswith("path,k,k_chunk,repeat,growth_mb,live_mb") and len(rows) == 1 + 6
    assert (tmp_path / "loss_memory.png").stat().st_size > 1000
