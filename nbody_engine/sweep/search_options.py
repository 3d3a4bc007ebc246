"""The options of a search (``nbody-runner sweep --search``), checked without importing Optuna."""

from __future__ import annotations

from dataclasses import dataclass

from ..config.errors import InputError
from .results import TRAIN_METRICS, metric_columns

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "halving", "none")
DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class SearchOptions:
    """How a search chooses its points: ``sampler`` (``tpe`` or ``random``) draws ``trials``
    points in all, optimising ``metric`` (a result column, default by mode) in ``direction``;
    ``pruner`` (``median``, ``halving`` or ``none``) stops runs whose per-epoch ``prune_on``
    (a metrics.jsonl column, default ``metric`` when it is one, else ``loss``) lags behind."""

    sampler: str = "tpe"
    trials: int = 20
    metric: str | None = None
    direction: str = "minimize"
    pruner: str | None = None  # default: median where runs train (per-epoch metrics), else none
    prune_on: str | None = None

    def resolved(self, mode: str) -> SearchOptions:
        """The options with their defaults for ``mode`` filled in, checked (raises InputError)."""
        per_epoch = [m for m in TRAIN_METRICS if mode != "simulate"]
        pruner = self.pruner or ("median" if per_epoch else "none")
        for name, value, allowed in (("sampler", self.sampler, SAMPLERS), ("pruner", pruner, PRUNERS),
                                     ("direction", self.direction, DIRECTIONS)):
            if value not in allowed:
                raise InputError(f"--{name} must be one of {', '.join(allowed)}, not {value!r}")
        if not isinstance(self.trials, int) or isinstance(self.trials, bool) or self.trials < 1:
            raise InputError(f"--trials must be a positive integer, not {self.trials!r}")
        metrics = (*metric_columns(mode), "wall_time_s")
        metric = self.metric or ("loss" if mode == "train" else "max_rel_energy_error")
        if metric not in metrics:
            raise InputError(f"--metric {metric!r} is not a result of a '{mode}' run; "
                             f"choose one of {', '.join(metrics)}")
        prune_on = self.prune_on or (metric if metric in per_epoch else "loss")
        if pruner != "none" and prune_on not in per_epoch:
            raise InputError(f"--prune-on {prune_on!r}: pruning reads the training's per-epoch metrics "
                             + (f"({', '.join(per_epoch)})" if per_epoch else "and --mode simulate has none; "
                                "use --pruner none"))
        return SearchOptions(self.sampler, self.trials, metric, self.direction, pruner, prune_on)
