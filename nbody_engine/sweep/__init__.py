"""Parameter sweeps: one base config, a grid of values, every run the ordinary headless runner.

``nbody-runner sweep --config base.toml --grid grid.toml`` (or ``run_sweep(plan_sweep(...))``)
expands the grid's cartesian product (or ``samples`` seeded random draws from it) and runs each
point as ``python -m nbody_engine.runner <mode> --config run.toml`` in a subprocess inside a
Dask task, on an embedded ``LocalCluster`` (default), an existing cluster (``scheduler``) or
SLURM jobs (``slurm``, the ``slurm`` extra). The modules: ``grid`` (the swept keys and their
values), ``plan`` (every run, checked, nothing written), ``task`` (one run on a worker),
``execute`` (``run_sweep``), ``cluster`` (where the tasks run and watching the workers),
``local_cluster`` (the embedded cluster's start, which a Ctrl-C cuts short),
``results`` (status.json and the results table), ``search`` and ``search_options`` (Optuna's
ask-and-tell), ``warm`` and ``zygote`` (warm workers: runs forked from a parent that imported
torch once), ``signals`` (stop requests and the sweep's heartbeat through Dask), ``provenance``,
``events``, ``report``, ``figures`` and ``cli``.

Layout, under ``data/<sweep_name>/``::

    results.csv, results.json   one row per run, rewritten atomically as each run ends
    provenance.json              one record per invocation: inputs, code, packages, command, backend
    study.journal                a search's Optuna study (journal file storage)
    runs/<id>/                   the run's working directory (the runner's cwd):
        run.toml                 the base config merged with the run's grid values, save_name = <id>
        stdout.log, stderr.log   what the runner printed
        status.json              the run's record (status, error, wall time, metrics, host, worker,
                                 SLURM job, GPU, device, code and packages): the resume record
        run_env.json             what the run's process saw: pid, CUDA_VISIBLE_DEVICES, device
        data/<id>/               the runner's ordinary run directory
    slurm-logs/                  the SLURM worker jobs' output (with --slurm)

Every worker must see the sweep's folder at the same path (a shared filesystem on a cluster).
"""

from .cli import add_sweep_parser, main_from_args
from .cluster import SlurmOptions, slurm_cluster_kwargs
from .events import ClusterReady, RunEnded, SweepEnded, SweepStarted, WorkersNotice
from .execute import run_sweep
from .grid import SWEEPABLE, Axis, Range, example_values, parse_values, read_grid
from .plan import SWEEP_MODES, plan_sweep, run_id
from .report import plot_metric, progress_line, table_text
from .results import (STATUS_CANCELLED, STATUS_FAILED, STATUS_OK, STATUS_PENDING, STATUS_PRUNED, STATUS_RUNNING,
                      metric_columns, plot_metrics, read_results, read_status, runs_to_do, write_results)
from .search_options import SearchOptions
from .sweep_plan import Run, SweepPlan
from .task import collect_metrics, execute_run

__all__ = ["SWEEPABLE", "SWEEP_MODES", "STATUS_CANCELLED", "STATUS_FAILED", "STATUS_OK", "STATUS_PENDING",
           "STATUS_PRUNED", "STATUS_RUNNING", "Axis", "ClusterReady", "Range", "Run", "RunEnded", "SearchOptions",
           "SlurmOptions", "SweepEnded", "SweepPlan", "SweepStarted", "WorkersNotice", "add_sweep_parser",
           "collect_metrics", "example_values", "execute_run", "main_from_args", "metric_columns", "parse_values",
           "plan_sweep", "plot_metric", "plot_metrics", "progress_line", "read_grid", "read_results", "read_status",
           "run_id", "run_sweep", "runs_to_do", "slurm_cluster_kwargs", "table_text", "write_results"]
