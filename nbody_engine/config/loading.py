"""Configuration: TOML and CLI values checked against the schema and merged (written out: :mod:`.export`).

Precedence (lowest first): schema defaults < top-level TOML keys < the phase's TOML section
(``[train]`` or ``[simulate]``) < CLI flags. Values are coerced only where nothing is lost:
``1e6`` for an integer key is ``1000000``; ``1.5`` is an error.
"""

from __future__ import annotations

import difflib
import re
import threading
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any


from .errors import InputError
from .files import CONFIG_MAX_BYTES, ic_shape, open_input
from .keytypes import Refused, key_type
from .schema import ALIASES, Config, KEYS, PATH_KEYS, LossBounds, Rollout, Training

PHASES = ("train", "simulate")
TRAINING_SECTIONS = (Training, LossBounds, Rollout)  # keys only training reads: never in [simulate]
_PARAM_MESSAGE_PREFIX = re.compile(r"^\w+ parameter '[^']*' ")


def _closest(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def _unknown_key(key: str, where: str) -> str:
    hint = f"; did you mean '{ALIASES[key]}'?" if key in ALIASES else _closest(key, KEYS)
    return f"unknown key '{key}' in {where}{hint}"


def unknown_key_error(key: str, where: str) -> InputError:
    return InputError(_unknown_key(key, where))


def _check_known(data: Mapping, source: str) -> None:
    """Every unknown key of a parsed TOML document in one InputError (each with its suggestion)."""
    unknown = [_unknown_key(key, f"{source} (top level)") for key, value in data.items()
               if key not in KEYS and key not in PHASES and not isinstance(value, dict)]
    unknown += [_unknown_key(key, f"[{phase}] of {source}") for phase in PHASES
                if isinstance(data.get(phase), dict) for key in data[phase] if key not in KEYS]
    if unknown:
        raise InputError(" Also ".join(unknown))


def check_value(key: str, value: Any, where: str) -> Any:
    """The value of ``key`` as the schema types it; raises InputError naming key and place."""
    p = Config.param[key]
    if value is None and p.allow_None:
        return None
    kind = key_type(p)
    try:
        value = kind.coerce(p, value)
    except TypeError:
        raise InputError(f"{where}: '{key}' must be {kind.describe(p)}, not {_shown(value)}") from None
    except Refused as err:
        raise InputError(f"{where}: '{key}' {err}") from None
    try:
        _assign(key, value)
    except ValueError as err:
        reason = _PARAM_MESSAGE_PREFIX.sub("", str(err)).rstrip(".")
        raise InputError(f"{where}: '{key}' {reason}") from None
    return value


_scratch = threading.local()


def _assign(key: str, value: Any) -> None:
    """Param's own check of ``value`` for ``key`` (bounds, options, lengths, item bounds): an
    assignment to this thread's scratch Config, the public way to have Param check a value
    without keeping it. Raises Param's ValueError."""
    config = getattr(_scratch, "config", None)
    if config is None:
        config = _scratch.config = Config()
    setattr(config, key, value)


def _shown(value: Any) -> str:
    """A value as a message quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_text(key: str, text: str | list[str]) -> Any:
    """Turn a CLI string (or list of strings) into a TOML-like value for :func:`check_value`."""
    p = Config.param[key]
    return key_type(p).from_text(p, text)


def read_toml(path: str | Path, what: str = "config file", flag: str = "--config") -> dict:
    """Parse a TOML file; unreadable, oversized or malformed files raise InputError naming the
    file (``what`` it is and the ``flag`` that named it)."""
    path = Path(path)
    with open_input(path, what, f"the path given to {flag}", CONFIG_MAX_BYTES) as fh:
        raw = fh.read()
    try:
        text = raw.decode()
    except UnicodeDecodeError as err:
        raise InputError(f"{what} '{path}' is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    return _parsed(text, f"{what} '{path}'")


def parse_toml(text: str, source: str) -> dict:
    """Parse TOML ``text`` (from ``source``, as messages name it); oversized or malformed text
    raises InputError."""
    size = len(text.encode(errors="replace"))
    if size > CONFIG_MAX_BYTES:
        raise InputError(f"{source} is {size / 2**20:.3g} MiB of text, more than the {CONFIG_MAX_BYTES // 2**20} MiB "
                         "a config may be; a config is a few kB")
    return _parsed(text, source)


def _parsed(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{source} is not valid TOML: {err}") from None
    except RecursionError:  # the reader recurses once per level of nesting
        raise InputError(f"{source} nests arrays or tables too deeply to read; a config needs two levels at most"
                         ) from None


def split_layers(data: Mapping, source: str) -> dict[str, dict]:
    """Check a parsed TOML document and split it into its top level and phase sections."""
    layers: dict[str, dict] = {"top": {}, "train": {}, "simulate": {}}
    _check_known(data, source)
    for key, value in data.items():
        if key in PHASES:
            if not isinstance(value, dict):
                raise InputError(f"{source}: '{key}' must be a section [{key}], not a value")
            layers[key] = _checked_layer(value, f"[{key}] of {source}")
            if key == "simulate":
                _refuse_training_keys(value, f"[simulate] of {source}")
        elif isinstance(value, dict):
            raise InputError(f"{source}: unknown section [{key}]; the sections are [train] and [simulate]"
                             f"{_closest(key, PHASES)}")
        else:
            layers["top"].update(_checked_layer({key: value}, f"{source} (top level)"))
    return layers


def _refuse_training_keys(values: Mapping, where: str) -> None:
    """A training key in [simulate] does nothing (a simulation reads none of them): it is a
    mistake, most likely a key meant for [train]."""
    for key in values:
        if KEYS[key] in TRAINING_SECTIONS:
            raise InputError(f"{where}: '{key}' is a training key ({KEYS[key].title}), which a simulation does not "
                             "read; move it to [train] or the top level")


def _checked_layer(values: Mapping, where: str) -> dict:
    out = {}
    for key, value in values.items():
        if key not in KEYS:
            raise unknown_key_error(key, where)
        out[key] = check_value(key, value, where)
    return out


def build_config(values: Mapping[str, Any], given_keys=None, command: str | None = None) -> Config:
    """A Config from the defaults updated by already-checked ``values``.

    ``cfg.given_keys`` records which keys the user set (default: all of ``values``)."""
    cfg = Config(**values)
    cfg.given_keys = frozenset(values if given_keys is None else given_keys)
    check_consistency(cfg, command)
    return cfg


def check_consistency(cfg: Config, command: str | None = None) -> None:
    """Rules that involve more than one key; ``command = "evaluate"`` skips those of a
    simulation's policy (evaluate takes its policies from the checkpoint and the baselines)."""
    for low, high in (("E_lower", "E_upper"), ("L_lower", "L_upper"), ("e_min", "e_max"), ("a_min", "a_max")):
        if getattr(cfg, low) > getattr(cfg, high):
            raise InputError(f"'{low}' ({getattr(cfg, low)}) must not exceed '{high}' ({getattr(cfg, high)})")
    has_mass = cfg.external_field_mass is not None
    has_pos = cfg.external_field_position is not None
    if has_mass != has_pos:
        raise InputError("the external field needs both 'external_field_mass' and 'external_field_position'"
                         " (x y z); set both or neither")
    if cfg.integrator_mode == "history" and cfg.history_len < 1 and not cfg.model_path:
        raise InputError("integrator_mode 'history' needs 'history_len' >= 1 (or a model_path whose"
                         " checkpoint has a history)")
    if cfg.time_symmetric and cfg.integrator_mode != "analytic" and command != "evaluate":
        raise InputError(f"'time_symmetric' applies to integrator_mode 'analytic', not {cfg.integrator_mode!r};"
                         " unset it for a learned policy")
    if cfg.integrator_mode in ("ttl", "ml_ttl") and command != "evaluate":
        _check_ttl(cfg)
    if cfg.save_name is not None:
        check_save_name(cfg.save_name)


def _check_ttl(cfg: Config) -> None:
    """The time-transformed leapfrog's step is set by ``eps`` alone and runs eager."""
    if cfg.dt > 0:
        raise InputError(f"'dt' = {cfg.dt} sets a fixed step of integrator_mode 'analytic'; the time-transformed "
                         f"leapfrog ({cfg.integrator_mode}) takes its fictitious step from 'eps': set dt = -1")
    if cfg.compile:
        raise InputError(f"integrator_mode '{cfg.integrator_mode}' runs eager; unset 'compile' (it compiles the "
                         "leapfrog's stepper)")


def check_multi_orbit(cfg: Config) -> None:
    """``multi_orbit_sim`` samples two-body orbits."""
    if cfg.multi_orbit_sim and cfg.num_particles != 2:
        raise InputError("'multi_orbit_sim' samples two-body orbits; "
                         f"set num_particles = 2 (it is {cfg.num_particles}) or turn multi_orbit_sim off")


def check_paths_within(cfg: Config, roots: list[Path], source: str, hint: str) -> None:
    """Every path key of ``cfg`` that is set must lie inside one of ``roots`` (after resolving
    ``..`` and links; relative paths from the working directory). ``source`` names where the
    value came from and ``hint`` how to allow more, for the message."""
    allowed = [Path(r).resolve() for r in roots]
    for key in PATH_KEYS:
        named = getattr(cfg, key)  # one path, a list of them (eval_model_paths), or none
        for value in named if isinstance(named, list) else [named] if named else []:
            if not any(Path(value).resolve().is_relative_to(root) for root in allowed):
                where = " or ".join(f"'{r}'" for r in allowed)
                raise InputError(f"{source}: '{key}' = {_shown(value)} lies outside {where}, the only place this "
                                 f"server reads and writes files; {hint}")


SAVE_NAME_MAX = 128
_PORTABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def check_save_name(name: str) -> None:
    """``save_name`` is a directory name under data/, never a path: a portable file name (POSIX's
    letters, digits, '.', '_' and '-', not starting with '.' or '-'), at most SAVE_NAME_MAX long."""
    if not _PORTABLE_NAME.fullmatch(name) or len(name) > SAVE_NAME_MAX:
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise InputError(f"'save_name' must be a plain folder name under data/ (letters, digits, '.', '_', '-'; "
                         f"at most {SAVE_NAME_MAX} characters, not starting with '.' or '-'), not {shown!r}")


def default_save_name(mode: str) -> str:
    return f"{mode}_{datetime.now():%Y%m%d_%H%M%S}"


def final_checkpoint(save_name: str, epochs: int, data_dir: str | Path = "data") -> str:
    """Where training leaves its last checkpoint: data/<save_name>/model/model_epoch_<epochs-1>.pt."""
    return str(Path(data_dir) / save_name / "model" / f"model_epoch_{epochs - 1:04d}.pt")


def load_configs(mode: str, config: str | Path | Mapping | None = None, cli: Mapping[str, Any] | None = None,
                 phase_cli: Mapping[str, Mapping[str, Any]] | None = None, run_defaults: bool = True,
                 source: str | None = None) -> dict[str, Config]:
    """Resolve the configuration of each phase that ``mode`` runs.

    ``config`` is a TOML file's path or an already parsed document (a dict, as :func:`parse_toml`
    returns), which messages call ``source`` (default: the file's name, or "the config").

    ``cli`` holds flag values for every phase (already checked), ``phase_cli`` values for one
    phase only (``--train-ic-path``). Returns ``{"train": Config, "simulate": Config}`` restricted
    to the phases of ``mode`` (``both`` runs both; ``evaluate`` reads the simulate phase).
    ``run_defaults=False`` leaves out what a run fills in (for editors that load a file without
    running it): the spec's ``both`` rules for the simulation's model_path and integrator_mode,
    and ``evaluate``'s model_path, which is the checkpoint training with the same file writes
    when the file or the flags name the run (``save_name``).
    """
    if config is None:
        layers = {"top": {}, "train": {}, "simulate": {}}
    elif isinstance(config, Mapping):
        layers = split_layers(config, source or "the config")
    else:
        layers = split_layers(read_toml(config), source or f"'{config}'")
    cli = dict(cli or {})
    phase_cli = phase_cli or {}
    phases = PHASES if mode == "both" else ("simulate",) if mode == "evaluate" else (mode,)
    given = {ph: {**layers["top"], **layers[ph], **cli, **phase_cli.get(ph, {})} for ph in PHASES}
    explicit = {ph: frozenset(given[ph]) for ph in PHASES}
    named = given["train"].get("save_name") or given["simulate"].get("save_name")
    name = named or default_save_name(mode)
    for ph in PHASES:
        given[ph].setdefault("save_name", name)
    if mode == "both" and run_defaults:
        _apply_both_defaults(given)
    if mode == "evaluate" and run_defaults and named and "model_path" not in given["simulate"]:
        given["simulate"]["model_path"] = _trained_checkpoint(given)
    configs = {ph: build_config(given[ph], explicit[ph], mode) for ph in phases}
    if run_defaults:
        from .budget import check_memory  # imports torch: only once every value has passed

        for ph, cfg in configs.items():
            check_memory(cfg, "evaluate" if mode == "evaluate" else ph)
    return configs


def adopt_ic_file(cfg: Config, phase: str) -> None:
    """Read the shape of the IC file ``cfg`` names (``ic_path``), before a run takes its lock:
    the file decides the shape of the systems it holds, so ``num_particles`` and ``dim`` (and
    for training, whose systems are the file's, ``num_orbits``) take its values, and config.toml
    and the memory estimate tell the truth; a value the user set to something else is refused.
    ``phase`` is 'train', 'simulate' or 'evaluate'; the memory estimate is checked again with the
    file's systems."""
    path = cfg.ic_path
    if not path or (phase != "train" and cfg.use_train_ic):
        return
    from .budget import check_memory

    systems, bodies, dim = ic_shape(path)
    shape = {"num_orbits": systems, "num_particles": bodies, "dim": dim}
    for key in ("num_orbits", "num_particles", "dim") if phase == "train" else ("num_particles", "dim"):
        if key in cfg.given_keys and getattr(cfg, key) != shape[key]:
            raise InputError(f"IC file '{path}' holds {systems} system(s) of {bodies} bodies in {dim}-D, but '{key}' "
                             f"= {getattr(cfg, key)}; set {key} = {shape[key]}, or leave it out and the file sets it")
        setattr(cfg, key, check_value(key, shape[key], f"IC file '{path}'"))
    check_memory(cfg, phase, systems)


def _apply_both_defaults(given: dict[str, dict]) -> None:
    """Spec: in ``both``, simulation uses the checkpoint training just wrote, with the learned policy."""
    train, sim = given["train"], given["simulate"]
    if "model_path" not in sim:
        sim["model_path"] = _trained_checkpoint(given)
    if "integrator_mode" not in sim:
        history_len = train.get("history_len", Config.param["history_len"].default)
        sim["integrator_mode"] = "history" if history_len > 0 else "ml"


def _trained_checkpoint(given: dict[str, dict]) -> str:
    """The last checkpoint that training with these values writes."""
    train = given["train"]
    return final_checkpoint(train["save_name"], train.get("epochs", Config.param["epochs"].default))


def config_values(cfg: Config) -> dict[str, Any]:
    """Every key's value, in schema order."""
    return {key: getattr(cfg, key) for key in KEYS}
