"""``nbody-runner train|simulate|both --config run.toml [flags]``: the headless runner.

Every flag comes from the schema (:mod:`nbody_engine.config.schema`); flags override the TOML file,
and flags given to ``both`` apply to both phases (except ``--train-ic-path``/``--sim-ic-path``).
Bad input ends the run with one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence


from .config.errors import InputError, NonFiniteStateError, RunCancelled, Terminated, TrainingStalled, os_error_line
from .config.keytypes import key_type
from .config.loading import check_value, load_configs, parse_text
from .config.schema import Config, KEYS, SECTIONS, flags_for, section_keys
from .events import CancelToken, ConsoleSink, Reporter, RunStarted, WandbSink
from .reporting import drawing

PROG = "nbody-runner"
MODES = {
    "train": "train a learned time-step policy",
    "simulate": "simulate with the analytic, ml or history policy",
    "both": "train, then simulate with the checkpoint training wrote",
    "evaluate": "compare a checkpoint's learned policy with strong baselines on a problem suite",
}
PHASE_FLAGS = {"train": "--train-ic-path", "simulate": "--sim-ic-path"}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _add_key(group, key: str) -> None:
    p = Config.param[key]
    options = {"dest": key, "default": argparse.SUPPRESS, "help": p.doc, **key_type(p).cli(key, p)}
    group.add_argument(*flags_for(key), **options)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Learned adaptive time steps for N-body integration, headless.")
    modes = parser.add_subparsers(dest="mode", required=True, parser_class=_Parser, metavar="MODE")
    for mode, help_text in MODES.items():
        sub = modes.add_parser(mode, help=help_text, description=help_text)
        sub.add_argument("--config", metavar="FILE", help="TOML file with top-level keys, [train] and [simulate]")
        for section in SECTIONS:
            group = sub.add_argument_group(section.title)
            for key in section_keys(section):
                if not (mode == "both" and key == "ic_path"):
                    _add_key(group, key)
            if section.__name__ == "InitialConditions" and mode == "both":
                for phase, flag in PHASE_FLAGS.items():
                    group.add_argument(flag, dest=f"{phase}_ic_path", default=argparse.SUPPRESS, metavar="PATH",
                                       help=f"IC file for the {phase} phase")
    from .sweep import add_sweep_parser  # nbody-runner sweep: a grid of runs on Dask (nbody_engine/sweep/)

    add_sweep_parser(modes)
    return parser


def _cli_values(args: argparse.Namespace) -> tuple[dict, dict]:
    """Checked values of the flags given: (for every phase, per phase)."""
    given = vars(args)
    shared = {key: check_value(key, parse_text(key, given[key]), f"command line {flags_for(key)[0]}")
              for key in KEYS if key in given}
    per_phase = {phase: {"ic_path": check_value("ic_path", given[f"{phase}_ic_path"], f"command line {flag}")}
                 for phase, flag in PHASE_FLAGS.items() if f"{phase}_ic_path" in given}
    return shared, per_phase


class Started:
    """A sink that remembers whether a phase has started: an error of the operating system
    before that is bad input (exit status 2), after it a run that failed (1)."""

    def __init__(self) -> None:
        self.started = False

    def __call__(self, event) -> None:
        self.started = self.started or isinstance(event, RunStarted)


def run(configs: dict[str, Config], started: Started | None = None) -> dict:
    """Run the phases in ``configs`` with a console progress sink (and Weights & Biases where a
    phase has ``wandb = true``); print the simulation summary."""
    from .jobs.phases import run_phases

    sinks = [ConsoleSink(), *([started] if started else [])]
    if any(cfg.wandb for cfg in configs.values()):
        sinks.append(WandbSink())  # InputError without the wandb package, before anything is written
    results = run_phases(configs, Reporter(sinks, TERMINATED))
    if "simulate" in results:
        print(json.dumps({k: v for k, v in results["simulate"].items() if k != "outputs"}, indent=2))
    return results


def evaluate(cfg: Config, started: Started | None = None) -> dict:
    """``evaluate`` uses the TOML's simulate phase; prints the table and where it was written."""
    from .evaluate import long_text, run_evaluation, table_text, verdict_text

    result = run_evaluation(cfg, Reporter([ConsoleSink(), *([started] if started else [])], TERMINATED))
    for problem, reference in result["references"].items():
        print(f"reference for {problem}: {reference}")
    print(table_text(result["rows"]))
    print(long_text(result["rows"]))
    print(verdict_text(result["verdicts"]))
    for note in result["notes"]:
        print(f"note: {note}")
    print("written: " + ", ".join(result["outputs"].values()))
    return result


TERMINATED = CancelToken()  # set by a SIGTERM that arrived inside an import; the run stops at its next check


def _terminate(_signum, frame):
    """SIGTERM: stop like Ctrl-C, at once; but an exception raised inside an import leaves that
    module half made (a later import of it fails with a traceback, and torch prints its caches
    at exit), so a SIGTERM there cancels the run instead, which stops at its next step."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            TERMINATED.cancel()
            return
        frame = frame.f_back
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if args.mode == "sweep":
        from .sweep import main_from_args

        return main_from_args(args, PROG)
    started = Started()
    try:
        shared, per_phase = _cli_values(args)
        configs = load_configs(args.mode, args.config, shared, per_phase)
        debug = any(c.debug for c in configs.values())
        logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s", stream=sys.stderr)
        if args.mode == "evaluate":
            evaluate(configs["simulate"], started)
        else:
            with drawing.helper():  # report figures drawn in a second process, off the run's critical path
                run(configs, started)
    except (InputError, NonFiniteStateError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except TrainingStalled as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the one boundary for the operating system's errors: permissions, disk full, ...
        print(f"{PROG}: error: {os_error_line(err)}", file=sys.stderr)
        return 1 if started.started else 2
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 143
    except (RunCancelled, KeyboardInterrupt):
        if TERMINATED.cancelled:
            print(f"{PROG}: terminated", file=sys.stderr)
            return 143
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


def _exit_terminated(_signum, _frame):
    os._exit(143)


def entry() -> None:
    """The command (``nbody-runner``, ``python -m nbody_engine.runner``): :func:`main`'s exit
    status. A run stopped by Ctrl-C or SIGTERM has recorded everything by the time ``main``
    returns, so the process ends at once instead of spending seconds finalizing torch and Dask; a
    SIGTERM from then on ends it at once too (raised during the shutdown, it printed a traceback)."""
    code = main()
    signal.signal(signal.SIGTERM, _exit_terminated)
    if code in (130, 143):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
