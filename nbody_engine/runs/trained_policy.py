"""A checkpoint's learned dt policy or learned time transformation (ml_ttl), checked against the
config that asks for it."""

from __future__ import annotations

import torch

from ..config.errors import InputError
from ..integrators.ttl import TimeTransformedLeapfrog
from ..learning.network import DtNetwork, LearnedDt, build_network, load_weights
from ..learning.time_transform import LearnedOmega, OmegaNetwork, build_omega_network
from ..physics.runtime import gravity_of
from .checkpoints import ARCHITECTURE_KEYS, load_checkpoint


def checked_network(ckpt) -> DtNetwork:
    """The network a checkpoint describes, with its weights checked and loaded."""
    network = build_network(ckpt.config)
    load_weights(network, ckpt.model_state, ckpt.path)
    return network


def learned_policy_from_checkpoint(cfg, device, as_trained: bool = False):
    """The ``ml``/``history`` policy stored at ``cfg.model_path`` and its training ICs.

    Architecture and feature settings come from the checkpoint; a key the user set explicitly
    to a different value is an error rather than silently ignored. ``as_trained`` takes the mode
    from the checkpoint too (``history`` when it was trained with a history) instead of checking
    ``cfg.integrator_mode`` against it.
    """
    if not cfg.model_path:
        raise InputError(f"integrator_mode '{cfg.integrator_mode}' needs 'model_path' (a checkpoint from training)")
    ckpt = load_checkpoint(cfg.model_path)
    trained = ckpt.config
    if trained["integrator_mode"] == "ml_ttl":
        raise InputError(f"checkpoint '{cfg.model_path}' holds a learned time transformation (trained with "
                         "integrator_mode = 'ml_ttl'), not a dt network; use integrator_mode = 'ml_ttl'")
    _check_compatible(cfg, trained, check_mode=not as_trained)
    network = checked_network(ckpt).to(device=device).eval()
    policy = LearnedDt(network, trained["feature_type"], trained["history_len"], gravity_of(cfg), cfg.eps)
    return policy, ckpt.train_ic


def _check_compatible(cfg, trained: dict, check_mode: bool) -> None:
    path = cfg.model_path
    if check_mode and cfg.integrator_mode == "history" and trained["history_len"] == 0:
        raise InputError(f"checkpoint '{path}' was trained without history (history_len = 0); "
                         "use integrator_mode = 'ml'")
    if check_mode and cfg.integrator_mode == "ml" and trained["history_len"] > 0:
        raise InputError(f"checkpoint '{path}' was trained with history_len = {trained['history_len']}; "
                         "use integrator_mode = 'history'")
    for key in ARCHITECTURE_KEYS:
        if key in cfg.given_keys and getattr(cfg, key) != trained[key]:
            raise InputError(f"'{key}' = {getattr(cfg, key)!r} does not match checkpoint '{path}', which was "
                             f"trained with {trained[key]!r}; "
                             "drop the key (it is read from the checkpoint) or match it")


def checked_omega_network(ckpt) -> OmegaNetwork:
    """The Omega network an ml_ttl checkpoint describes, with its weights checked and loaded (float64)."""
    if ckpt.config["integrator_mode"] != "ml_ttl":
        raise InputError(f"checkpoint '{ckpt.path}' holds a dt network (trained with integrator_mode = "
                         f"{ckpt.config['integrator_mode']!r}), not a time transformation; train one with "
                         "integrator_mode = 'ml_ttl' and objective = 'rollout'")
    network = build_omega_network(ckpt.config).double()
    load_weights(network, ckpt.model_state, ckpt.path)
    return network.eval()


def learned_ttl_from_checkpoint(cfg, device, eps: float | torch.Tensor | None = None):
    """The time-transformed leapfrog with the learned ``Omega = U exp(g)`` stored at
    ``cfg.model_path`` (its step ``h = eps Omega(q0) tau(q0)``, ``eps`` from ``cfg`` unless given:
    a number or one per system), and the checkpoint's training ICs."""
    if not cfg.model_path:
        raise InputError("integrator_mode 'ml_ttl' needs 'model_path' (a checkpoint from training with "
                         "integrator_mode = 'ml_ttl')")
    ckpt = load_checkpoint(cfg.model_path)
    for key in ("hidden_dims", "activation"):
        if key in cfg.given_keys and getattr(cfg, key) != ckpt.config[key]:
            raise InputError(f"'{key}' = {getattr(cfg, key)!r} does not match checkpoint '{cfg.model_path}', which "
                             f"was trained with {ckpt.config[key]!r}; drop the key (it is read from the checkpoint) "
                             "or match it")
    gravity = gravity_of(cfg)
    omega = LearnedOmega(checked_omega_network(ckpt).to(device=device), gravity.softening)
    return TimeTransformedLeapfrog(omega, gravity, eps=cfg.eps if eps is None else eps), ckpt.train_ic
