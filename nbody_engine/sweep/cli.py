"""``nbody-runner sweep``: run a sweep (exit 0 when every run is ok, 1 when some failed or the
sweep stopped early, 2 on bad input, 130 on Ctrl-C, 143 on SIGTERM), or ``--status NAME``:
the table and progress of a sweep from its folder, and ``--plot METRIC --against KEY`` a PNG."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..config.errors import InputError, RunCancelled, os_error_line
from ..events import CancelToken
from ..runs.directory import DATA_DIR
from .cluster import SLURM_HINT, SlurmOptions
from .execute import run_sweep
from .plan import MAX_POINTS, SWEEP_MODES, plan_sweep, sweep_root
from .report import plot_metric, progress_line, table_text
from .results import read_results
from .search_options import DIRECTIONS, PRUNERS, SAMPLERS

SLURM_FLAGS = ("queue", "account", "walltime", "cores", "memory", "gpus", "interface", "extra", "prologue",
               "resubmits")
SEARCH_FLAGS = ("search", "trials", "metric", "direction", "pruner", "prune_on")
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _int_at_least(minimum: int):
    """An argparse type: an integer no smaller than ``minimum``."""
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value
    return parse


def add_sweep_parser(subparsers) -> None:
    """Add ``sweep`` to the runner's subcommands."""
    help_text = "run a grid of configs (local cores, a Dask cluster or SLURM); see docs/SWEEPS.md"
    sub = subparsers.add_parser("sweep", help=help_text, description=help_text)
    sub.add_argument("--config", metavar="FILE", help="base TOML (top-level keys, [train], [simulate])")
    sub.add_argument("--grid", metavar="FILE",
                     help="TOML listing values per key, e.g. steps = [100, 200], [train] history_len = [0, 5]")
    sub.add_argument("--mode", dest="sweep_mode", choices=SWEEP_MODES, default="both",
                     help="what each run does (default: both)")
    sub.add_argument("--name", metavar="SWEEP_NAME", help="folder under data/ (default: the grid file's name)")
    sub.add_argument("--samples", metavar="K", type=_int_at_least(1),
                     help="run K random points of the grid instead of all of it")
    sub.add_argument("--max-points", metavar="M", type=_int_at_least(1), default=MAX_POINTS,
                     help=f"refuse a sweep of more runs than this (default {MAX_POINTS:,}); --samples draws fewer")
    sub.add_argument("--seed", metavar="S", type=_int_at_least(0), default=0,
                     help="seed of the --samples draws and every run's 'seed' where the base sets none (default 0)")
    sub.add_argument("--workers", metavar="N", type=_int_at_least(1),
                     help="local worker processes (default: one per core) or, with --slurm, SLURM jobs (default 1)")
    sub.add_argument("--no-worker-limit", metavar="SECONDS", type=_int_at_least(1), default=300,
                     help="stop the sweep when no worker has been alive for this long (default 300)")
    where = sub.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster, e.g. tcp://host:8786")
    where.add_argument("--slurm", action="store_true", help=f"run in SLURM jobs via dask-jobqueue ({SLURM_HINT})")
    where.add_argument("--status", metavar="SWEEP_NAME",
                       help="print the table and progress of the sweep in data/SWEEP_NAME, run nothing")
    _add_slurm_flags(sub.add_argument_group("SLURM jobs (with --slurm)"))
    sub.add_argument("--run-time-limit", metavar="SECONDS", type=_positive_number, dest="run_time_limit",
                     help="stop (and record failed) any run that takes longer than this")
    _add_search_flags(sub.add_argument_group("search (Optuna; see docs/SWEEPS.md)"))
    shown = sub.add_argument_group("with --status")
    shown.add_argument("--plot", metavar="METRIC",
                       help="write PNGs of METRIC against every swept key and in parallel coordinates")
    shown.add_argument("--against", metavar="KEY", help="draw --plot against this swept key only")
    shown.add_argument("--out", metavar="FILE.png",
                       help="where --plot writes (default: data/NAME/METRIC_vs_KEY.png or METRIC_vs_keys.png)")


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _add_search_flags(group) -> None:
    group.add_argument("--search", choices=SAMPLERS, help="search with this Optuna sampler instead of running "
                       "the grid: ranges ({ low, high, log }) and lists of the grid file are its space")
    group.add_argument("--trials", metavar="N", type=_int_at_least(1), help="trials of the search in all (default 20)")
    group.add_argument("--metric", metavar="COLUMN", help="the result the search optimises "
                       "(default max_rel_energy_error; loss for --mode train)")
    group.add_argument("--direction", choices=DIRECTIONS, help="minimize (default) or maximize --metric")
    group.add_argument("--pruner", choices=PRUNERS, help="stop trials whose per-epoch metric lags: median "
                       "(default), halving (successive halving) or none")
    group.add_argument("--prune-on", metavar="COLUMN", dest="prune_on",
                       help="the metrics.jsonl column the pruner compares (default: --metric if it is one, else loss)")


def _add_slurm_flags(group) -> None:
    group.add_argument("--slurm-queue", metavar="Q", help="partition (#SBATCH -p)")
    group.add_argument("--slurm-account", metavar="A", help="account (#SBATCH -A)")
    group.add_argument("--slurm-walltime", metavar="HH:MM:SS", help="time limit of each job")
    group.add_argument("--slurm-cores", metavar="C", type=_int_at_least(1),
                       help="cores per job = runs at a time per job")
    group.add_argument("--slurm-memory", metavar="MEM", help="memory per job, e.g. 4GB")
    group.add_argument("--slurm-gpus", metavar="G", type=_int_at_least(0), default=0,
                       help="GPUs per job (--gres=gpu:G)")
    group.add_argument("--slurm-interface", metavar="IFACE",
                       help="network interface the workers and the scheduler talk over (ib0; lo on one machine)")
    group.add_argument("--slurm-extra", metavar="OPTION", action="append", default=[],
                       help="an extra #SBATCH option, e.g. --slurm-extra=--qos=low (repeatable)")
    group.add_argument("--slurm-prologue", metavar="COMMAND", action="append", default=[],
                       help="a shell line run before each worker starts, e.g. 'module load cuda' (repeatable)")
    group.add_argument("--slurm-resubmits", metavar="R", type=_int_at_least(0), default=3,
                       help="how many ended worker jobs the sweep replaces in all (default 3)")


def _slurm_options(args) -> SlurmOptions | None:
    defaults = SlurmOptions()
    given = [f for f in SLURM_FLAGS if getattr(args, f"slurm_{f}") not in (None, [], getattr(defaults, f))]
    if given and not args.slurm:
        raise InputError(f"--slurm-{given[0]} needs --slurm")
    return SlurmOptions(**{f: getattr(args, f"slurm_{f}") for f in SLURM_FLAGS}) if args.slurm else None


def show_status(args) -> int:
    """``--status NAME``: print the table and progress; write the plot when asked."""
    root = sweep_root(args.status, Path.cwd() / DATA_DIR)
    doc = read_results(root, live=True)
    if doc is None:
        raise InputError(f"no sweep in '{root}' (no results.json); check --status and the working directory")
    print(table_text(doc))
    print(progress_line(doc))
    if args.plot:
        keys = [args.against] if args.against else None
        default = f"{args.plot}_vs_{args.against.replace('.', '_')}.png" if args.against else f"{args.plot}_vs_keys.png"
        for path in plot_metric(doc, args.plot, keys, Path(args.out) if args.out else root / default):
            print(f"written: {path}")
    return 0


def _check_args(args) -> None:
    if args.status is not None and (args.config or args.grid):
        raise InputError("--status NAME looks at a sweep and runs nothing; leave out --config and --grid")
    if args.status is None:
        for flag in ("plot", "against", "out"):
            if getattr(args, flag):
                raise InputError(f"--{flag} needs --status NAME")
        if args.search is None:
            for flag in SEARCH_FLAGS[1:]:
                if getattr(args, flag) is not None:
                    raise InputError(f"--{flag.replace('_', '-')} needs --search tpe|random")
        for flag in ("config", "grid"):
            if getattr(args, flag) is None:
                raise InputError(f"a sweep needs --{flag} FILE (or --status NAME to look at one)")


def _search_options(args) -> dict | None:
    if args.search is None:
        return None
    given = {flag: getattr(args, flag) for flag in SEARCH_FLAGS if getattr(args, flag) is not None}
    return {"sampler": given.pop("search"), **given}


def _run(args, cancel: CancelToken) -> dict:
    print(f"planning the sweep of '{args.grid}' (Ctrl-C stops)", flush=True)
    plan = plan_sweep(args.config, args.grid, mode=args.sweep_mode, samples=args.samples, seed=args.seed,
                      name=args.name, max_points=args.max_points, cancel=cancel,
                      search=_search_options(args))
    return run_sweep(plan, scheduler=args.scheduler, slurm=_slurm_options(args), workers=args.workers,
                     cancel=cancel, sink=lambda event: print(event.text, flush=True),
                     no_worker_limit=args.no_worker_limit, time_limit=args.run_time_limit,
                     argv=["nbody-runner", *sys.argv[1:]])


def main_from_args(args, prog: str = "nbody-runner") -> int:
    """``nbody-runner sweep``; Ctrl-C and SIGTERM stop the sweep the same way on every backend."""
    cancel, caught = CancelToken(), []

    def stop(signum, _frame) -> None:
        if caught:  # a second signal: stop waiting for the runs to record themselves
            raise KeyboardInterrupt
        caught.append(signum)
        print(f"{prog}: {signal.Signals(signum).name}: stopping the sweep (cancelling its runs)", file=sys.stderr,
              flush=True)
        cancel.cancel()

    previous = {s: signal.signal(s, stop) for s in SIGNAL_EXIT}
    try:
        _check_args(args)
        if args.status is not None:
            return show_status(args)
        doc = _run(args, cancel)
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the operating system's errors (permissions, disk full, a file in the way): one line
        print(f"{prog}: error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, RunCancelled):  # RunCancelled: Ctrl-C while the sweep was being planned
        doc = None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        print(f"{prog}: interrupted; finished runs are kept and a rerun resumes", file=sys.stderr)
        return SIGNAL_EXIT[caught[0]]
    return 0 if doc and not doc.get("stopped") and doc["failed"] == doc["cancelled"] == doc["pending"] == 0 else 1
