"""The band loss of training: how far, in log space, a step's |dE/E| and |dL/L| fall outside
``[E_lower, E_upper]`` and ``[L_lower, L_upper]``; non-finite errors get a large finite penalty."""

from __future__ import annotations

import math

import torch

from ..config.schema import Config

NONFINITE_PENALTY = 1e3
ROUNDOFF = 1e3  # errors below ROUNDOFF * machine epsilon are rounding, not the step's doing


def band_loss(error: torch.Tensor, lower: float | tuple[float, ...], upper: float | tuple[float, ...],
              floor: float) -> torch.Tensor:
    """Squared distance in log10 space of ``error`` (B,) outside ``[lower, upper]``; or of
    ``error`` (B, K) outside one band per column (``lower``, ``upper``: K numbers each), which
    costs training one pass instead of K.

    Errors at or below ``floor`` (round-off) count as inside the band: they carry no signal.
    """
    log_err = torch.log10(error.clamp_min(floor))
    below = torch.relu(_log10(lower, error) - log_err) * (error > floor)
    above = torch.relu(log_err - _log10(upper, error))
    return below**2 + above**2


def _log10(bound: float | tuple[float, ...], like: torch.Tensor) -> float | torch.Tensor:
    if isinstance(bound, tuple):
        return like.new_tensor([math.log10(b) for b in bound])
    return math.log10(bound)


def step_loss(rel_dE: torch.Tensor, rel_dL: torch.Tensor, dt: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Per-system loss (B,): energy band plus angular-momentum band. A non-finite error costs
    NONFINITE_PENALTY, with a gradient that shrinks that system's dt.

    Above ``energy_threshold`` the energy error's gradient is taken from the leapfrog's order,
    ``|dE/E| ~ dt^2``, instead of from backpropagation: that far outside the band an attempt
    has stepped through a pericentre or an encounter with a step far too long, the error is a
    chaotic function of dt, and its true gradient can point either way, so a rejected state
    could be retrained forever without its step getting shorter."""
    floor = ROUNDOFF * torch.finfo(rel_dE.dtype).eps
    finite = torch.isfinite(rel_dE) & torch.isfinite(rel_dL)
    order_two = torch.where(finite, rel_dE.detach(), 0.0) * (dt / dt.detach()) ** 2
    rel_dE = torch.where(rel_dE.detach() > cfg.energy_threshold, order_two, rel_dE)
    safe_E = torch.where(finite, rel_dE, torch.ones_like(rel_dE))
    safe_L = torch.where(finite, rel_dL, torch.ones_like(rel_dL))
    bands = band_loss(torch.stack([safe_E, safe_L], -1), (cfg.E_lower, cfg.L_lower), (cfg.E_upper, cfg.L_upper),
                      floor)
    return torch.where(finite, bands[:, 0] + bands[:, 1], NONFINITE_PENALTY * dt / dt.detach())


def clipped_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, parameters, clip: float) -> None:
    """One optimizer step on ``loss`` (a scalar), its gradient norm clipped to ``clip``; a
    non-finite loss (a rollout that blew up) takes no step."""
    optimizer.zero_grad(set_to_none=True)
    if bool(torch.isfinite(loss)):
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, clip)
        optimizer.step()
