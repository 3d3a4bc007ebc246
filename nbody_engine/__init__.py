"""nbody_engine: batched N-body physics, leapfrog, dt policies, training and simulation (PyTorch).

No UI imports here: the engine reports progress through :mod:`nbody_engine.events`.
"""

from .config import load_configs, to_toml
from .errors import InputError, NonFiniteStateError, RunCancelled
from .events import CancelToken, Reporter
from .initial_conditions import kepler_family, kepler_orbit, load_ic_file, random_system
from .integrate import Gravity, StopRule, Trajectory, leapfrog, leapfrog_step, simulate
from .physics import ExternalField, State, angular_momentum, kinetic_energy, momentum, potential_energy, total_energy
from .policies import AnalyticDt, FixedDt
from .schema import Config

__all__ = [
    "AnalyticDt", "CancelToken", "Config", "ExternalField", "FixedDt", "Gravity", "InputError",
    "NonFiniteStateError", "Reporter", "RunCancelled", "State", "StopRule", "Trajectory", "angular_momentum",
    "kepler_family", "kepler_orbit", "kinetic_energy", "leapfrog", "leapfrog_step", "load_configs",
    "load_ic_file", "momentum", "potential_energy", "random_system", "simulate", "to_toml", "total_energy",
]
