"""nbody_engine: batched N-body physics, leapfrog, dt policies, training and simulation (PyTorch).

No UI imports here: the engine reports progress through :mod:`nbody_engine.events`.
The public names below load their module on first use, so the command line answers bad input
without waiting for torch to import.
"""

import importlib

_EXPORTS = {
    "load_configs": "config", "to_toml": "config",
    "InputError": "errors", "NonFiniteStateError": "errors", "RunCancelled": "errors", "TrainingStalled": "errors",
    "CancelToken": "events", "Reporter": "events",
    "kepler_family": "initial_conditions", "kepler_orbit": "initial_conditions", "load_ic_file": "initial_conditions",
    "random_system": "initial_conditions",
    "Gravity": "integrate", "StopRule": "integrate", "Trajectory": "integrate", "leapfrog": "integrate",
    "leapfrog_step": "integrate", "simulate": "integrate",
    "ExternalField": "physics", "State": "physics", "angular_momentum": "physics", "kinetic_energy": "physics",
    "momentum": "physics", "potential_energy": "physics", "total_energy": "physics",
    "AnalyticDt": "policies", "FixedDt": "policies",
    "LearnedDt": "model", "DtNetwork": "model",
    "run_phases": "phases", "run_simulation": "simulation", "run_training": "train", "evaluate": "evaluate",
    "Config": "schema",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nbody_engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
