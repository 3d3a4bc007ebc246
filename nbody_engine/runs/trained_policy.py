"""A checkpoint's learned dt policy, checked against the config that asks for it."""

from __future__ import annotations

from ..config.errors import InputError
from ..learning.network import DtNetwork, LearnedDt, build_network, load_weights
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
