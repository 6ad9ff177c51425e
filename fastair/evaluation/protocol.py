"""The model protocol of :mod:`fastair.evaluation`: what a model must provide to be evaluated,
the check that it does (:func:`check_model`), and its log importance weights through the
fastest path it offers (:func:`log_weights`).

**Required.** A ``torch.nn.Module`` with

- ``encode(x [B, D]) -> (mu, logvar)``, two ``[B, Z]`` tensors: the Gaussian
  ``q(z|x) = N(mu, diag(exp(logvar)))`` (no noise added; it is called in eval mode);
- ``decode_logits(z [..., B, Z]) -> logits [..., B, D]``: the Bernoulli logits of ``p(x|z)``
  (logits, not probabilities), keeping ``z``'s leading dims (``n`` draws per example:
  ``z [n, B, Z] -> [n, B, D]``; an ``nn.Linear`` stack applied to the last dim does this).

The prior is ``N(0, I)``; the data are binary ``[N, D]`` for the default Bernoulli likelihood.

**Optional likelihood.** ``likelihood`` (str, one of :data:`fastair.nn.LIKELIHOODS`; default
``"bernoulli"``) names ``p(x|z)`` and what ``decode_logits`` returns: the Bernoulli logits; the
continuous Bernoulli's logits (grey levels in [0, 1]); the Gaussian's mean, with the
log-variance ``logvar_x`` (a tensor broadcastable to ``[B, D]``: ``[]``, ``[D]`` or ``[B, D]``)
an attribute of the model or of ``model.decoder`` (:class:`fastair.models.VAE` and its decoders
have both). Every path below scores the model's own likelihood.

**Optional faster paths** for ``log w = log p(x|z) + log p(z) - log q(z|x)`` (:data:`PATHS`, the
first that applies is used):

1. ``"log_weights"``: the model's own ``log_weights(x, mu=mu, logvar=logvar, z=z) -> [n, B]``
   (:meth:`fastair.models.VAE.log_weights`); used when the method's signature names the keywords
   ``mu``, ``logvar`` and ``z`` (a ``log_weights`` of another signature is ignored).
2. ``"fused_head"``: the model has ``model.decoder`` with ``model.decoder.trunk`` (a callable
   ``z [..., Z] -> h [..., H]``) and ``model.decoder.out`` (an ``nn.Linear(H, D)``), and
   ``decode_logits(z)`` equals ``decoder.out(decoder.trunk(z))``, as for
   :class:`fastair.nn.BernoulliMLPDecoder` (the pair :class:`fastair.nn.IWAELoss` takes as
   ``decoder.trunk`` and ``head=decoder.out``). The last layer and the likelihood's term are
   then one fused op (:func:`fastair.linear_bernoulli_log_prob` and its continuous Bernoulli and
   Gaussian twins, docs/design.md §1.7) and no ``[n, B, D]`` logits are stored (under autocast
   the logits are formed in the reduced precision and scored by the unfused op, as the
   decoder's own ``log_prob`` does). :func:`check_model` compares the two on probe draws and
   uses the generic path where they differ.
3. ``"generic"``: the likelihood's op on ``model.decode_logits(z)`` (e.g.
   ``bernoulli_log_prob(model.decode_logits(z), x)``), which holds one ``[n, B, D]`` logits
   tensor per call.

The Gaussian terms are :func:`fastair.gaussian_log_prob`. Callers draw ``z`` ``chunk`` samples
at a time, so on every path memory follows ``chunk``, never the total number of samples.

**Optional attributes.** ``k`` (int): the model's own number of importance samples, the default
``k`` of the amortized bound (1, the ELBO, without it); ``bound(x, k, generator=) -> [B]``: the
clean bound :func:`~fastair.evaluation.bound.evaluate_bound` uses where its signature names
``k`` and ``generator`` (otherwise the bound is formed through this protocol).

A model that does not follow the protocol is a ``TypeError`` naming the method and its expected
signature, raised by :func:`check_model` before any work starts: the fault is in the model's
class, not in an argument's value.
"""
import inspect

import torch
from torch import nn

from fastair.functional import gaussian_log_prob
from fastair.nn.likelihoods import LIKELIHOODS, head_log_likelihood, log_likelihood

__all__ = ["PATHS", "REQUIRED", "check_model", "log_weights", "model_likelihood", "resolve_path",
           "sample_x", "weights_path"]

PATHS = ("log_weights", "fused_head", "generic")
"""The ways :func:`log_weights` forms the log weights, fastest first (module docstring)."""

REQUIRED = {
    "encode": "encode(x [B, D]) -> (mu [B, Z], logvar [B, Z])",
    "decode_logits": "decode_logits(z [..., B, Z]) -> logits [..., B, D]",
}
"""The methods every evaluated model must have, with their signatures in words."""

_NEEDS = ("the evaluation protocol needs " + " and ".join(REQUIRED.values())
          + " (fastair.evaluation.protocol)")


def _accepts(fn, *names):
    """Whether the callable ``fn`` takes every keyword in ``names`` (or ``**kwargs``)."""
    if not callable(fn):
        return False
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    ok = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return all(n in params and params[n].kind in ok for n in names)


def _head(model):
    """``(trunk, out)`` of ``model.decoder`` where it exposes them (module docstring), else
    None."""
    decoder = getattr(model, "decoder", None)
    trunk, out = getattr(decoder, "trunk", None), getattr(decoder, "out", None)
    if isinstance(decoder, nn.Module) and callable(trunk) and isinstance(out, nn.Linear):
        return trunk, out
    return None


def model_likelihood(model):
    """``(likelihood, logvar_x)`` of ``p(x|z)`` for ``model`` (module docstring): its
    ``likelihood`` attribute, ``"bernoulli"`` without one, and for ``"gaussian"`` the
    log-variance ``logvar_x`` of the model or of ``model.decoder`` (None otherwise).

    Raises:
        TypeError: ``likelihood`` is not one of :data:`fastair.nn.LIKELIHOODS`, or a Gaussian
            model has no ``logvar_x`` tensor.
    """
    likelihood = getattr(model, "likelihood", "bernoulli")
    if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
        raise TypeError(f"model: {_name(model)}.likelihood is {likelihood!r}; expected one of "
                        f"{LIKELIHOODS} (or no such attribute, for the Bernoulli likelihood)")
    if likelihood != "gaussian":
        return likelihood, None
    for owner in (model, getattr(model, "decoder", None)):
        logvar_x = getattr(owner, "logvar_x", None)
        if isinstance(logvar_x, torch.Tensor):
            return likelihood, logvar_x
    raise TypeError(f"model: {_name(model)} has likelihood 'gaussian' but no logvar_x tensor "
                    f"(the log-variance of p(x|z), broadcastable to [B, D]) on the model or on "
                    f"model.decoder; add one (e.g. a property returning 2 * log_scale)")


def sample_x(model, out, generator):
    """Data drawn from ``p(x|z)`` given the decoder's output ``out [..., D]``, in ``out``'s
    dtype (the grey and real draws made in float64): binary ``x ~ Bernoulli(sigmoid(l))``;
    continuous Bernoulli grey levels by its inverse CDF, ``x = log(1 + u (e^l - 1)) / l``
    (written ``1 + log(u + (1 - u) e^-l) / l`` for ``l > 0`` so that no exponential overflows,
    and ``u`` itself at ``|l| < 1e-8``); Gaussian ``x = mean + exp(logvar_x / 2) eps``.
    ``generator`` drives the draws."""
    likelihood, logvar_x = model_likelihood(model)
    if likelihood == "bernoulli":  # in out's dtype: the draws of earlier releases, bit for bit
        probs = torch.sigmoid(out.detach())
        return (torch.rand(probs.shape, generator=generator, dtype=out.dtype,
                           device=out.device) < probs).to(out.dtype)
    o = out.detach().double()
    u = torch.rand(o.shape, generator=generator, dtype=torch.float64, device=o.device)
    if likelihood == "continuous_bernoulli":
        small = o.abs() < 1e-8
        safe = torch.where(small, torch.ones_like(o), o)
        pos = 1 + torch.log(u + (1 - u) * torch.exp(-safe.clamp(min=0))) / safe
        neg = torch.log1p(u * torch.expm1(safe.clamp(max=0))) / safe
        x = torch.where(small, u, torch.where(o > 0, pos, neg)).clamp(0, 1)
    else:
        eps = torch.randn(o.shape, generator=generator, dtype=torch.float64, device=o.device)
        x = o + torch.exp(0.5 * logvar_x.detach().double()) * eps
    return x.to(out.dtype)


def weights_path(model):
    """The path :func:`log_weights` takes for ``model`` judged from its attributes alone (one of
    :data:`PATHS`); :func:`check_model` also verifies the fused head on probe draws."""
    if _accepts(getattr(model, "log_weights", None), "mu", "logvar", "z"):
        return "log_weights"
    return "fused_head" if _head(model) is not None else "generic"


def _name(model):
    return type(model).__name__


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(f"[{', '.join(map(str, v.shape))}]" if isinstance(v, torch.Tensor)
                          else type(v).__name__ for v in value)
        return f"a {type(value).__name__} of {len(value)} ({inner})"
    return f"a {type(value).__name__}"


def _missing(model, method):
    hint = ""
    if method == "decode_logits" and callable(getattr(model, "decode", None)):
        hint = ("; it has decode(): if decode returns logits, add decode_logits = decode to the "
                "class; if it returns probabilities (a sigmoid at the end), make decode_logits "
                "return the values before the sigmoid")
    return TypeError(f"model: {_name(model)} has no {REQUIRED[method]}; {_NEEDS}{hint}")


def _call(model, method, arg, what):
    try:
        return getattr(model, method)(arg)
    except Exception as err:
        first = (str(err).splitlines() or [""])[0]
        raise TypeError(f"model: {_name(model)}.{method}({what}) failed ({type(err).__name__}: "
                        f"{first}); {_NEEDS}") from err


@torch.no_grad()
def check_model(model, x=None):
    """Check that ``model`` follows the evaluation protocol (module docstring) and choose how its
    log weights are formed; raises before any work starts.

    Without ``x`` only the methods are looked up. With ``x`` ``[N, D]`` the model is probed on
    its first (at most) two rows, in eval mode (restored afterwards) and without gradients:
    ``encode`` must return two ``[b, Z]`` tensors of one shape, ``decode_logits`` must map
    ``z [2, b, Z]`` to ``[2, b, D]``, and a fused head (``model.decoder.trunk`` and
    ``model.decoder.out``) is used only where ``decoder.out(decoder.trunk(z))`` equals
    ``decode_logits(z)`` on those draws.

    Args:
        model: the model to check.
        x: optional ``[N, D]`` data on the model's device (the probe reads ``x[:2]``).
    Returns:
        the path of :func:`log_weights` for this model, one of :data:`PATHS`.
    Raises:
        TypeError: ``model`` is not an ``nn.Module``, lacks ``encode`` or ``decode_logits``, or
            (with ``x``) they fail or return the wrong kind or shape of value; the message names
            the method and its expected signature.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module with {' and '.join(REQUIRED.values())}"
                        f", got {type(model).__name__}")
    for method in REQUIRED:
        if not callable(getattr(model, method, None)):
            raise _missing(model, method)
    model_likelihood(model)
    path = weights_path(model)
    if x is None:
        return path
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] == 0:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a non-empty [N, D] tensor, got {shape}")
    was_training = model.training
    model.eval()
    try:
        xp = x[:2]
        b, d = xp.shape
        got = _call(model, "encode", xp, f"x [{b}, {d}]")
        if not (isinstance(got, (tuple, list)) and len(got) == 2
                and all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in got)):
            raise TypeError(f"model: {_name(model)}.encode(x [{b}, {d}]) returned "
                            f"{_describe(got)}; expected (mu, logvar), two floating-point "
                            f"[B, Z] tensors: {REQUIRED['encode']}")
        mu, logvar = got
        if mu.dim() != 2 or mu.shape[0] != b or logvar.shape != mu.shape:
            raise TypeError(f"model: {_name(model)}.encode(x [{b}, {d}]) returned mu "
                            f"{list(mu.shape)} and logvar {list(logvar.shape)}; expected two "
                            f"[B, Z] tensors with B = {b}: {REQUIRED['encode']}")
        mu = mu.float() if mu.dtype in (torch.float16, torch.bfloat16) else mu
        z = torch.stack([mu, mu + 0.5])                                       # [2, b, Z]
        logits = _call(model, "decode_logits", z, f"z [2, {b}, {mu.shape[1]}]")
        want = (2, b, d)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
            raise TypeError(f"model: {_name(model)}.decode_logits(z [2, {b}, {mu.shape[1]}]) "
                            f"returned {_describe(logits)}; expected logits [2, {b}, {d}] (the "
                            f"data have D = {d}): {REQUIRED['decode_logits']}, keeping z's "
                            "leading dims")
        if path == "fused_head":
            trunk, out = _head(model)
            fused = out(trunk(z))
            if fused.shape != logits.shape or not torch.allclose(
                    fused.float(), logits.float(), rtol=1e-4, atol=1e-4):
                path = "generic"
    finally:
        model.train(was_training)
    return path


def resolve_path(model, x, path=None):
    """``path`` itself where given (one of :data:`PATHS`), else :func:`check_model` ``(model,
    x)``: what each public entry point of :mod:`fastair.evaluation` does first."""
    if path is None:
        return check_model(model, x)
    if path not in PATHS:
        raise ValueError(f"path: expected one of {PATHS} or None, got {path!r}")
    return path


def log_weights(model, x, mu, logvar, z, *, path=None):
    """Log importance weights ``log p(x|z) + log p(z) - log q(z|x)`` of a protocol model.

    Args:
        model: a model of the protocol (module docstring).
        x: ``[B, D]`` data (binary for the default Bernoulli likelihood).
        mu: ``[B, Z]``: the mean of the Gaussian ``q = N(mu, exp(logvar))`` the draws come
            from.
        logvar: ``[B, Z]``: its log-variance.
        z: ``[n, B, Z]`` draws (any number ``n``; the caller keeps it at its ``chunk``).
        path: one of :data:`PATHS` (:func:`check_model`'s choice); None: :func:`weights_path`.
    Returns:
        ``[n, B]`` in ``mu``'s dtype. The paths differ only in rounding.
    """
    path = weights_path(model) if path is None else path
    if path == "fused_head" and _head(model) is None:
        raise ValueError(f"path: 'fused_head' needs model.decoder.trunk and model.decoder.out "
                         f"(an nn.Linear); {_name(model)} has no such pair")
    if path == "log_weights":
        return model.log_weights(x, mu=mu, logvar=logvar, z=z)
    likelihood, logvar_x = model_likelihood(model)
    if path == "fused_head":
        trunk, out = _head(model)
        if torch.is_autocast_enabled(z.device.type):
            log_lik = log_likelihood(likelihood, out(trunk(z)), x, logvar_x)
        else:
            log_lik = head_log_likelihood(likelihood, trunk(z), out.weight, out.bias, x, logvar_x)
    elif path == "generic":
        log_lik = log_likelihood(likelihood, model.decode_logits(z), x, logvar_x)
    else:
        raise ValueError(f"path: expected one of {PATHS}, got {path!r}")
    return (log_lik + gaussian_log_prob(z) - gaussian_log_prob(z, mu, logvar)).to(mu.dtype)
