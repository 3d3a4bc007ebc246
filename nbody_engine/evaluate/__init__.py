"""Is the learned stepper worth it? ``nbody-runner evaluate``: a checkpoint's learned policy
against strong baselines on a problem suite, with a reference trajectory for every problem.

- :mod:`.problems`: the suite (``eval_suite``): held-out Kepler orbits, hierarchical triples,
  a binary-single scattering, Burrau's Pythagorean problem, a small cold cluster;
- :mod:`.reference`: REBOUND's IAS15 (or our converged run) for where each system truly ends;
- :mod:`.baselines`: fixed, classic, analytic, time-symmetric and drift-corrected analytic steps,
  each over a sweep of its knob (``eval_eps``);
- :mod:`.metrics`: energy, angular momentum and position errors, force evaluations, steps, time;
- :mod:`.verdicts`: the learned policy against each baseline at equal force evaluations and
  equal wall time;
- :mod:`.report`: ``data/<save_name>/eval/`` gets ``table.csv``, ``table.json`` and ``pareto.png``.

Every knob value of a baseline and every system of a problem run as one batched simulation (a
policy's knob is a tensor, one value per system), so the sweep costs about as many steps as its
finest setting alone.
"""

from __future__ import annotations

import time as wallclock

import torch

from ..config.errors import InputError, NonFiniteStateError
from ..config.loading import Config
from ..events import PolicyMeasured, Reporter, RunFinished, RunStarted
from ..integrators.loop import StopRule, simulate
from ..learning.network import LearnedDt
from ..physics.gravity import Gravity, State
from ..physics.runtime import torch_setup
from ..runs.directory import RunDirectory
from ..runs.trained_policy import learned_policy_from_checkpoint
from .baselines import BASELINES
from .metrics import reference_rows, rows_of
from .problems import Problem, SUITE, problems_of
from .reference import reference_for
from .report import table_text, write_evaluation
from .verdicts import all_verdicts, learned_versus, verdict_text

__all__ = ["SUITE", "evaluate", "learned_versus", "table_text", "verdict_text"]

COST_STEPS = 64  # steps of one system that measure a policy's time per step


def run_evaluation(cfg: Config, reporter: Reporter | None = None, data_dir=None) -> dict:
    """Run the comparison described in the module docstring; returns the rows, the verdicts,
    the reference used per problem and the paths written."""
    run = RunDirectory(cfg.save_name, data_dir)
    with run.lock():
        return _evaluate_into(run, cfg, reporter or Reporter())


def _evaluate_into(run: RunDirectory, cfg: Config, reporter: Reporter) -> dict:
    if not cfg.model_path:
        raise InputError("evaluate needs 'model_path' (--model-path), the checkpoint whose policy is evaluated, "
                         "or the 'save_name' of the training that wrote it")
    device, dtype = torch_setup(cfg)
    learned, _ = learned_policy_from_checkpoint(cfg, device, as_trained=True)
    problems = problems_of(cfg, dtype, device)
    reporter.emit(RunStarted("evaluate", cfg.save_name, len(problems) * (len(BASELINES) + 2)))
    rows, references = [], {}
    for problem in problems:
        reference = reference_for(problem, cfg.eval_reference, cfg.eps)
        references[problem.name] = reference.name
        rows += reference_rows(problem, reference) + _problem_rows(problem, learned, cfg.eval_eps, reference, reporter)
    verdicts = all_verdicts(rows, [b.name for b in BASELINES])
    outputs = write_evaluation(rows, verdicts, references, run.root / "eval", cfg.model_path)
    result = {"rows": rows, "verdicts": verdicts, "references": references, "outputs": outputs}
    reporter.emit(RunFinished("evaluate", result))
    return result


def _problem_rows(problem: Problem, learned: LearnedDt, eps: list[float], reference, reporter: Reporter
                  ) -> list[dict]:
    """The learned policy's rows (one point, or a curve over ``eps`` for a network that takes the
    accuracy asked for), then every baseline's over ``eps``, on one problem."""
    gravity = Gravity(problem.softening)
    knob = torch.tensor(eps, dtype=problem.state.position.dtype, device=problem.state.position.device)

    def mine(eta, _unit):
        return LearnedDt(learned.network, learned.feature_type, learned.history_len, gravity, eta)
    if learned.network.conditioned:  # trained for any accuracy (rollout objective): a curve over eps as well
        rows = _measured(problem, "learned", list(eps), mine, 1, reference, reporter, knob)
    else:
        rows = _measured(problem, "learned", [None], mine, 1, reference, reporter)
    for baseline in BASELINES:
        make = lambda values, unit, b=baseline: b.make(values, unit, gravity)  # noqa: E731
        rows += _measured(problem, baseline.name, list(eps), make, baseline.force_evals_per_step, reference,
                          reporter, knob)
    return rows


def _tiled(state: State, copies: int) -> State:
    """``copies`` copies of the batch one after another: system b of copy k is system k * B + b."""
    return State(*(t.repeat(copies, *[1] * (t.dim() - 1)) for t in (state.mass, state.position, state.velocity,
                                                                      state.time)))


def _measured(problem: Problem, name: str, eps: list, make, evals_per_step: int, reference, reporter: Reporter,
              knob: torch.Tensor | None = None) -> list[dict]:
    """Rows of policy ``name`` over every knob value and system of ``problem``, in one batch.
    ``make(knob, unit)`` gives the policy of systems with one knob value and time unit each."""
    reporter.cancel.raise_if_cancelled()
    reporter.emit(PolicyMeasured(problem.name, name))
    systems = problem.state.batch_size
    copies = len(eps)
    per_column = None if knob is None else knob.repeat_interleave(systems)
    state = _tiled(problem.state, copies)
    gravity = Gravity(problem.softening)
    policy = make(per_column, problem.time_unit.repeat(copies))
    try:
        traj = simulate(state, policy, gravity, StopRule(t_end=problem.t_end.repeat(copies)), reporter,
                        phase="evaluate")
    except NonFiniteStateError as err:
        raise NonFiniteStateError(f"evaluate, problem '{problem.name}', policy '{name}': {err}") from None
    first = problem.state.select(slice(0, 1))
    alone = make(None if knob is None else knob[:1], problem.time_unit[:1])
    return rows_of(problem, name, eps, traj, reference, evals_per_step, _seconds_per_step(first, alone, gravity))


def _seconds_per_step(state: State, policy, gravity: Gravity) -> float:
    """A policy's wall time per step on one system."""
    start = wallclock.perf_counter()
    simulate(state, policy, gravity, StopRule(max_steps=COST_STEPS))
    return (wallclock.perf_counter() - start) / COST_STEPS
