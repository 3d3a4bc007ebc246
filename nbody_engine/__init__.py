"""nbody_engine: batched N-body physics, leapfrog, dt policies, training and simulation (PyTorch).

The engine is layered; a package imports only from the packages above it in this list
(``tests/test_layers.py`` enforces it):

- :mod:`~nbody_engine.config`: errors, the one schema of every key, key types, TOML loading and
  export, the memory budget. No torch.
- :mod:`~nbody_engine.events`: the progress events, the reporter and its sinks, cancellation.
- :mod:`~nbody_engine.physics`: the batched state, gravity (forces, energies, momenta, the
  external field), initial conditions, the run's device, dtype, seed and force law.
- :mod:`~nbody_engine.integrators`: the leapfrog step, the two-body fast path, dt policies, the
  simulation loop.
- :mod:`~nbody_engine.learning`: features, the dt network, losses, attempts, replay, the rollout
  objective, the trainer.
- :mod:`~nbody_engine.runs`: the run directory, checkpoints, a checkpoint's learned policy, the
  progress log.
- :mod:`~nbody_engine.reporting`: report plots, movies, the drawing helper process.
- :mod:`~nbody_engine.jobs`: train, simulate, both: a resolved config to its run folder.
- :mod:`~nbody_engine.evaluate`, :mod:`~nbody_engine.sweep`: the problem suite and its
  verdicts; sweeps on Dask.
- :mod:`~nbody_engine.runner`: the command line.

No UI imports here: the engine reports progress through :mod:`nbody_engine.events`.
The public names below load their module on first use, so the command line answers bad input
without waiting for torch to import.
"""

import importlib

_EXPORTS = {
    "load_configs": "config.loading", "to_toml": "config.export", "Config": "config.schema",
    "InputError": "config.errors", "NonFiniteStateError": "config.errors", "RunCancelled": "config.errors",
    "TrainingStalled": "config.errors",
    "CancelToken": "events", "Reporter": "events",
    "kepler_family": "physics.initial_conditions", "kepler_orbit": "physics.initial_conditions",
    "load_ic_file": "physics.initial_conditions", "random_system": "physics.initial_conditions",
    "PointMassField": "physics.gravity", "Gravity": "physics.gravity", "State": "physics.gravity",
    "angular_momentum": "physics.gravity", "kinetic_energy": "physics.gravity", "momentum": "physics.gravity",
    "potential_energy": "physics.gravity", "total_energy": "physics.gravity",
    "leapfrog": "integrators.leapfrog", "leapfrog_step": "integrators.leapfrog",
    "StopRule": "integrators.loop", "Trajectory": "integrators.loop", "simulate": "integrators.loop",
    "AnalyticDt": "integrators.policies", "FixedDt": "integrators.policies", "DtPolicy": "integrators.dt_policy",
    "LearnedDt": "learning.network", "DtNetwork": "learning.network",
    "run_phases": "jobs.phases", "run_simulation": "jobs.simulate", "run_training": "jobs.train",
    "run_evaluation": "evaluate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nbody_engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
