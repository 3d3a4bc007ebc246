"""A run of one or more phases: training, then simulation with the checkpoint training wrote,
as ``nbody-runner train|simulate|both`` and the explorer's jobs ask for."""

from __future__ import annotations

from pathlib import Path

from ..config.errors import InputError
from ..config.export import to_toml
from ..config.loading import Config, PHASES, adopt_ic_file, check_multi_orbit, load_configs
from ..events import Reporter, RunStarted
from ..physics.runtime import resolve_seed
from ..runs.directory import RunDirectory, write_text
from ..runs.progress_log import ProgressLog
from .simulate import run_simulation, sim_label
from .train import run_training


def run_phases(configs: dict[str, Config], reporter: Reporter | None = None, data_dir=None) -> dict[str, dict]:
    """Train and/or simulate, in that order, as ``configs`` (from :func:`load_configs`) says,
    recording every phase's resolved config in the run directory's ``config.toml`` and its events
    in ``progress.jsonl`` (for a follower, :mod:`nbody_engine.runs.progress_log`).

    Phases without a seed share one fresh seed. After training, a simulation whose
    ``model_path`` was not set explicitly uses the checkpoint training actually wrote last (the
    final one, or an earlier one if ``duration`` cut it short). A simulation that cannot start
    is refused before training, and IC files are read (their shapes adopted:
    :func:`~nbody_engine.config.loading.adopt_ic_file`) before the run directory is locked.
    """
    if "simulate" in configs:
        check_multi_orbit(configs["simulate"])
    for phase, cfg in configs.items():
        adopt_ic_file(cfg, phase)  # inputs are read before the lock: a FIFO named as a file is refused, not waited on
    seed = next((c.seed for c in configs.values() if c.seed is not None), None)
    for cfg in configs.values():
        cfg.seed = cfg.seed if cfg.seed is not None else seed
        seed = resolve_seed(cfg)
    run = RunDirectory(next(iter(configs.values())).save_name, data_dir)
    with run.lock():
        _make_room(configs, run)
        return _run_locked(configs, run, reporter, data_dir)


def _make_room(configs: dict[str, Config], run: RunDirectory) -> None:
    """Nothing a run wrote is replaced unasked: a training refuses a directory that holds one
    (unless ``resume`` continues it or ``overwrite`` replaces the whole run), a simulation one
    whose ``sim/<label>/`` is written (unless ``overwrite`` replaces that simulation). Raises
    InputError naming the folder before anything is written."""
    train, sim = configs.get("train"), configs.get("simulate")
    if train is not None and not train.resume and run.holds_training():
        if not train.overwrite:
            raise InputError(f"'{run.root}' holds a training run already; --resume continues it, --overwrite "
                             "replaces it, or choose another save_name (-s)")
        run.clear()
    if sim is not None and run.sim_dir(sim_label(sim)).is_dir():
        if not sim.overwrite:
            raise InputError(f"'{run.sim_dir(sim_label(sim))}' holds a simulation already; --overwrite replaces "
                             "it, or choose another save_name (-s)")
        run.clear(run.sim_dir(sim_label(sim)))


def _run_locked(configs: dict[str, Config], run: RunDirectory, reporter: Reporter | None, data_dir) -> dict[str, dict]:
    config_path = run.config_path
    earlier = _recorded_phases(config_path)

    def record_config(event) -> None:
        # each phase announces RunStarted once its inputs are checked: bad input writes nothing
        if isinstance(event, RunStarted):
            merged = {**earlier, **configs}
            write_text(config_path, to_toml({ph: merged[ph] for ph in PHASES if ph in merged}))

    sinks = [record_config, ProgressLog(run.progress_path), *(reporter.sinks if reporter else [])]
    reporter = Reporter(sinks, reporter.cancel if reporter else None)
    results: dict[str, dict] = {}
    if "train" in configs:
        results["train"] = run_training(configs["train"], reporter, data_dir)
    if "simulate" in configs:
        cfg = configs["simulate"]
        checkpoint = results.get("train", {}).get("checkpoint")
        if checkpoint and "model_path" not in cfg.given_keys:
            cfg.model_path = checkpoint
        results["simulate"] = run_simulation(cfg, reporter, data_dir)
    return results


def _recorded_phases(config_path: Path) -> dict[str, Config]:
    """The phases an earlier run left in ``config.toml``, so that simulating into a training
    run's directory adds ``[simulate]`` rather than erasing the training settings. A file that
    no longer loads (an older version's) is simply replaced."""
    if not config_path.is_file():
        return {}
    try:
        return load_configs("both", config_path, run_defaults=False)
    except InputError:
        return {}
