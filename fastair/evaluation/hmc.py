"""Hamiltonian Monte Carlo for many chains at once: one transition per chain per call, each
chain with its own step size, a fixed diagonal preconditioner (the transitions of
:mod:`fastair.evaluation.ais`).

Target ``f(z)`` (unnormalized, ``z [..., Z]``, every leading index an independent chain), given
by ``log f`` and its gradient. With step size ``h`` ``[...]`` (per chain), scale ``s``
(broadcastable to ``z``: the mass matrix ``M = diag(s^-2)``) and ``L`` leapfrog steps, the momentum
is written in units of ``s`` (``v = s p ~ N(0, I)``)::

    v  ~ N(0, I)
    v <- v + (h/2) s * grad log f(z)
    L times:  z <- z + h s * v,   v <- v + h s * grad log f(z)    (the last of these a half step)
    H(z, v) = -log f(z) + |v|^2 / 2
    accept (z', v') with probability  a = min(1, exp(H(z, v) - H(z', v')))

This is plain HMC in the coordinates ``u = z / s`` with the identity mass matrix: leapfrog there
is volume preserving and reversible, the Jacobian of the fixed linear map is a constant, so each
transition leaves ``f`` invariant for any fixed ``h > 0`` and ``s > 0``. A proposal whose energy
is not finite (a leapfrog that left the region where ``log f`` is finite, or NaN) is rejected.
``L + 1`` gradients per transition, one of which (at the starting point) the caller caches from
the previous transition: ``L`` evaluations of ``log f`` and its gradient per call.
"""
import torch

__all__ = ["hmc_transition"]


def hmc_transition(z, state, target, step, scale, leapfrog, generator=None, jitter=0.0):
    """One HMC transition of every chain (module docstring).

    Args:
        z: ``[..., Z]`` current positions (not modified).
        state: ``(log_f [...], grad [..., Z], *aux)`` at ``z``: what ``target(z)`` returned (the
            caller keeps it from the previous call; ``aux`` are any further per-chain tensors of
            shape ``[...]`` or ``[..., Z]`` that follow the accepted position, such as cached
            parts of ``log f``).
        target: ``z [..., Z] -> (log_f [...], grad [..., Z], *aux)``, without a graph.
        step: ``[...]`` step size of each chain (> 0), or a float.
        scale: ``[..., Z]`` or broadcastable: the preconditioner ``s`` (> 0); 1 for plain HMC.
        leapfrog: ``L >= 1`` leapfrog steps.
        generator: the torch.Generator of the draws: the jitter (if any), the momentum, the
            accept draw, in that order.
        jitter: each chain's step is ``step (1 + jitter u)``, ``u ~ U(-1, 1)`` drawn afresh per
            chain and call (``0 <= jitter < 1``): a random mixture of invariant kernels, so
            invariant, which breaks the near-periodic trajectories of a fixed step.
    Returns:
        ``(z, state, accept_prob)``: the new positions, their ``state`` (the old one where
        rejected) and ``a`` ``[...]`` (float, 0 where the proposal's energy is not finite).
    """
    if isinstance(leapfrog, bool) or not isinstance(leapfrog, int) or leapfrog < 1:
        raise ValueError(f"leapfrog: expected an int >= 1, got {leapfrog!r}")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter: expected a number in [0, 1), got {jitter!r}")
    if not torch.is_tensor(step):
        step = torch.full(z.shape[:-1], float(step), dtype=z.dtype, device=z.device)
    if jitter:
        step = step * (1 + jitter * (2 * torch.rand(step.shape, generator=generator,
                                                     dtype=step.dtype, device=step.device) - 1))
    h = step.unsqueeze(-1)                                        # [..., 1]
    hs = h * scale                                                # [..., Z]
    log_f0, grad0 = state[0], state[1]
    v0 = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    v = v0 + 0.5 * hs * grad0
    new = z
    proposal = state
    for i in range(leapfrog):
        new = new + hs * v
        proposal = target(new)
        v = v + (hs if i < leapfrog - 1 else 0.5 * hs) * proposal[1]
    h_old = -log_f0 + 0.5 * v0.square().sum(-1)
    h_new = -proposal[0] + 0.5 * v.square().sum(-1)
    log_a = (h_old - h_new).clamp(max=0.0)
    log_a = torch.where(torch.isfinite(h_new) & torch.isfinite(h_old), log_a,
                        torch.full_like(log_a, -float("inf")))
    u = torch.rand(log_a.shape, generator=generator, dtype=log_a.dtype, device=log_a.device)
    accept = torch.log(u) < log_a                                 # [...]
    z_out = torch.where(accept.unsqueeze(-1), new, z)
    out = tuple(torch.where(accept if a.dim() == accept.dim() else accept.unsqueeze(-1), b, a)
                for a, b in zip(state, proposal))
    return z_out, out, torch.exp(log_a)
