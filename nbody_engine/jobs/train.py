"""The training job: a resolved config to a run folder (checkpoints every ``CHECKPOINT_EVERY``
epochs and at the last, metrics.jsonl, config.toml, train_trajectory.npz, the report), resuming
from the latest checkpoint when asked."""

from __future__ import annotations

import logging
import time as wallclock

from ..config.errors import InputError, RunCancelled, Terminated, TrainingStalled
from ..config.loading import Config, config_values
from ..events import (CheckpointWritten, EpochFinished, MetricsFileSink, Reporter, RunCancelledEvent, RunFailed,
                      RunFinished, RunStarted, json_line)
from ..learning.trainer import Trainer
from ..learning.ttl_trainer import TTLTrainer
from ..physics.runtime import gravity_of, resolve_seed, torch_setup
from ..reporting.drawing import draw
from ..reporting.movie import check_encoder, write_run_movie
from ..runs.checkpoints import RESUME_KEYS, load_checkpoint, save_checkpoint
from ..runs.directory import RunDirectory, write_npz, write_text

log = logging.getLogger("nbody_engine.jobs.train")

CHECKPOINT_EVERY = 10


def _resume_point(cfg: Config, run: RunDirectory):
    """The checkpoint to resume from, or None when starting fresh."""
    if not cfg.resume:
        return None
    found = run.checkpoints()
    if not found:
        raise InputError(f"'resume' is set but '{run.model_dir}' holds no checkpoint; train without resume first")
    ckpt = load_checkpoint(found[-1])
    for key in RESUME_KEYS:
        if key == "seed" and "seed" not in getattr(cfg, "given_keys", ()):
            continue  # no seed asked for: the run goes on with the checkpoint's
        if ckpt.config[key] != getattr(cfg, key):
            raise InputError(f"cannot resume from '{found[-1]}': it was trained with {key} = {ckpt.config[key]!r},"
                             f" the config says {getattr(cfg, key)!r}")
    return ckpt


def run_training(cfg: Config, reporter: Reporter | None = None, data_dir=None) -> dict:
    """Train ``cfg``; write checkpoints, metrics.jsonl, config.toml and train_trajectory.npz.

    Returns ``{"checkpoint": path of the last checkpoint, "epochs": epochs completed, ...}``.
    """
    run = RunDirectory(cfg.save_name, data_dir)
    with run.lock():
        return _train_into(run, cfg, reporter)


def _train_into(run: RunDirectory, cfg: Config, reporter: Reporter | None) -> dict:
    reporter = Reporter([*(reporter.sinks if reporter else []), MetricsFileSink(run.metrics_path)],
                        reporter.cancel if reporter else None)
    resume_from = _resume_point(cfg, run)
    if resume_from is not None:
        cfg.seed = resume_from.config["seed"]
    device, dtype = torch_setup(cfg)
    if cfg.movie:
        check_encoder()
    resolve_seed(cfg)
    trainer = (TTLTrainer if cfg.integrator_mode == "ml_ttl" else Trainer)(cfg, reporter, device, dtype,
                                                                           gravity_of(cfg))
    if resume_from is not None:
        trainer.restore(resume_from)
        _rewrite_metrics(run, trainer.metrics)
    elif run.metrics_path.exists():
        run.metrics_path.unlink()
    return _train_loop(trainer, run, reporter)


def _rewrite_metrics(run: RunDirectory, metrics: list[dict]) -> None:
    write_text(run.metrics_path, "".join(json_line({"epoch": i, **m}) for i, m in enumerate(metrics)))


def _train_loop(trainer: Trainer, run: RunDirectory, reporter: Reporter) -> dict:
    cfg = trainer.cfg
    start = wallclock.perf_counter()
    last_saved = None
    snapshot = trainer.snapshot() if trainer.epoch >= 0 else None
    try:  # from the start line on, a stop (SIGTERM included) ends with the cancel line
        reporter.emit(RunStarted("train", cfg.save_name, cfg.epochs, config_values(cfg)))
        while trainer.epoch + 1 < cfg.epochs:
            metrics = trainer.run_epoch()
            snapshot = trainer.snapshot()
            reporter.emit(EpochFinished(trainer.epoch, metrics))
            out_of_time = cfg.duration is not None and wallclock.perf_counter() - start >= cfg.duration
            last = trainer.epoch + 1 == cfg.epochs or out_of_time
            if (trainer.epoch + 1) % CHECKPOINT_EVERY == 0 or last:
                last_saved = _save(run, trainer.checkpoint(snapshot, run.model_dir), reporter)
            if out_of_time:
                log.info("duration budget of %gs used up after epoch %d", cfg.duration, trainer.epoch)
                break
    except (RunCancelled, KeyboardInterrupt, TrainingStalled) as stop:
        if snapshot is not None:
            last_saved = _save(run, trainer.checkpoint(snapshot, run.model_dir), reporter)
        # said before the report is drawn (seconds): the run has stopped, its checkpoint is safe
        reporter.emit(RunFailed("train", str(stop)) if isinstance(stop, TrainingStalled)
                      else RunCancelledEvent("train", _stop_reason(stop)))
        _write_outputs(run, trainer)
        raise
    except Exception as err:
        reporter.emit(RunFailed("train", str(err)))
        raise
    _write_outputs(run, trainer)
    result = {"checkpoint": str(last_saved) if last_saved else None, "epochs": trainer.epoch + 1,
              "wall_time_s": wallclock.perf_counter() - start,
              "final_metrics": trainer.metrics[-1] if trainer.metrics else {}}
    reporter.emit(RunFinished("train", result))
    return result


def _stop_reason(stop: BaseException) -> str:
    if isinstance(stop, Terminated):
        return "terminated (SIGTERM)"
    return "interrupted (Ctrl-C)" if isinstance(stop, KeyboardInterrupt) else "stopped by request"


def _save(run: RunDirectory, payload: dict, reporter: Reporter):
    path = save_checkpoint(run.checkpoint_path(payload["epoch"]), payload)
    reporter.emit(CheckpointWritten(payload["epoch"], str(path)))
    return path


def _write_outputs(run: RunDirectory, trainer: Trainer) -> None:
    """The cumulative training trajectory (every accepted state of every orbit), the training
    report PNG and, with ``movie``, the training movie."""
    if not len(trainer.trajectory):
        return
    arrays = trainer.trajectory.arrays()
    cfg = trainer.cfg
    report = draw("training_report", trainer.metrics, arrays["position"][:, :1], run.root / "train_report.png",
                  f"training '{cfg.save_name}'")
    write_npz(run.root / "train_trajectory.npz", {**arrays, "mass": trainer.initial.mass.cpu().numpy()})
    report()
    if cfg.movie:
        write_run_movie(run.movie_path(cfg.movie_dir, "train"), arrays, f"training '{cfg.save_name}'", cfg)
