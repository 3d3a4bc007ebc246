"""The one declaration of every configuration key.

Each section of ``spec/runner_config.md`` is a :class:`param.Parameterized` class whose
parameters are that section's keys: type, default, bounds and ``doc`` live here and nowhere
else. :class:`Config` inherits every section, so a resolved configuration is one flat object
(``cfg.epochs``, ``cfg.E_lower``) while each key still knows its section (``param.owner``).

The CLI flags, TOML loading and export, validation, the explorer's widgets and the README's
reference table are all derived from these classes (see :mod:`nbody_engine.config.loading`).

Flag spellings follow the spec: ``--`` plus the key with ``_`` turned into ``-``, except where a
section's ``flags`` mapping lists the spec's own spelling (``--E_lower``, ``-n``, ...).
"""

from __future__ import annotations

import param
from param.parameterized import Undefined

UNBOUNDED = None


class NumberList(param.List):
    """A list of numbers, each within ``item_bounds`` (inclusive; None on a side: no limit).
    Param checks the items on every assignment, as it checks a Number's bounds."""

    __slots__ = ["item_bounds"]
    _slot_defaults = dict(param.List._slot_defaults, item_bounds=None)

    def __init__(self, default=Undefined, *, item_bounds=Undefined, **params) -> None:
        object.__setattr__(self, "item_bounds", item_bounds)
        super().__init__(default, **params)

    def _validate(self, val) -> None:
        super()._validate(val)
        if val is None or self.item_bounds is None:
            return
        low, high = self.item_bounds
        for item in val:
            if (low is not None and item < low) or (high is not None and item > high):
                span = f"between {low} and {high}" if None not in (low, high) else \
                    f"at least {low}" if high is None else f"at most {high}"
                raise ValueError(f"List parameter {self.name!r} items must be {span}, not {item}")


class FilePath(param.String):
    """A file or directory on the machine that runs: relative paths are taken from the working
    directory. (param.Path would check that it exists when set; a run checks when it starts.)"""


class FilePathList(param.List):
    """A list of :class:`FilePath` values."""

    def __init__(self, default=Undefined, **params) -> None:
        super().__init__(default, item_type=str, **params)


class Section(param.Parameterized):
    """Base of the config sections. ``title`` names the section in docs and the explorer;
    ``flags`` maps a key to its CLI option strings where they differ from the default rule."""

    title = "Section"
    flags: dict[str, tuple[str, ...]] = {}


class Training(Section):
    title = "Training / optimization"
    flags = {"epochs": ("--epochs", "-n")}

    optimizer = param.Selector(default="adam", objects=["adam", "adamw", "sgd"], doc="Optimizer type")
    epochs = param.Integer(1000, bounds=(1, 10**7), softbounds=(1, 2000), doc="Training epochs")
    lr = param.Number(1e-4, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(1e-6, 1e-2),
                      doc="Learning rate")
    weight_decay = param.Number(1e-2, bounds=(0, UNBOUNDED), softbounds=(0, 0.1), doc="Weight decay")
    momentum = param.Number(0.9, bounds=(0, 1), inclusive_bounds=(True, False), doc="SGD momentum")
    n_steps = param.Integer(10, bounds=(1, 10**5), softbounds=(1, 100),
                            doc="Integration steps per loss eval: leapfrog sub-steps taken with one predicted dt")
    dt_bound = param.Number(1e-8, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(1e-12, 1e-2),
                            doc="dt bound (loss heuristics): the smallest dt a learned policy may return")
    rel_loss_bound = param.Number(1e-5, bounds=(0, UNBOUNDED), softbounds=(0, 1e-2),
                                  doc="Relative loss bound: replay stops once every sampled state's loss is at or "
                                      "below it")
    energy_threshold = param.Number(2e-4, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True),
                                    softbounds=(1e-8, 1e-2),
                                    doc="Accept/reject energy threshold on |dE/E| of an attempt")
    steps_per_epoch = param.Integer(1, bounds=(1, 10**6), softbounds=(1, 100), doc="Accepted steps per epoch")
    max_retrain_steps = param.Integer(1000, bounds=(0, 10**9), softbounds=(0, 10000),
                                      doc="Max retrain iterations per step (0 = unlimited)")
    replay_steps = param.Integer(1000, bounds=(0, 10**9), softbounds=(0, 5000), doc="Max replay optimization steps")
    replay_batch_size = param.Integer(512, bounds=(1, 10**6), softbounds=(1, 4096), doc="Replay batch size")
    min_replay_size = param.Integer(2, bounds=(1, 10_000), softbounds=(1, 1000),
                                    doc="Min replay size before training (the buffer holds 10000 states)")
    resume = param.Boolean(False, doc="Continue training from the latest checkpoint of save_name")


class LossBounds(Section):
    title = "Loss bounds"
    flags = {"E_lower": ("--E_lower",), "E_upper": ("--E_upper",),
             "L_lower": ("--L_lower",), "L_upper": ("--L_upper",)}

    E_lower = param.Number(1e-6, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(1e-10, 1e-2),
                           doc="Lower energy bound of the |dE/E| band")
    E_upper = param.Number(1e-4, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(1e-10, 1e-2),
                           doc="Upper energy bound of the |dE/E| band")
    L_lower = param.Number(1e-4, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(1e-10, 1e-1),
                           doc="Lower angular momentum bound of the |dL/L| band")
    L_upper = param.Number(1e-2, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(1e-10, 1e-1),
                           doc="Upper angular momentum bound of the |dL/L| band")


class Rollout(Section):
    title = "Whole-trajectory training (objective = rollout)"

    objective = param.Selector(default="band", objects=["band", "rollout"],
                               doc="Training objective: band (the two-phase band-loss training) or rollout "
                                   "(backpropagation through whole batched leapfrog rollouts of the Kepler family; "
                                   "docs/SCIENCE.md)")
    rollout_periods = param.Integer(10, bounds=(1, 1000), softbounds=(1, 20),
                                    doc="Rollout: periods of each training orbit in one differentiable rollout")
    rollout_eta = NumberList([0.02, 0.2], item_type=(int, float), bounds=(2, 2), item_bounds=(1e-4, 1),
                             doc="Rollout: the accuracy eta of each rollout is drawn log-uniformly from [min, max]; "
                                 "the network sees log eta and its run takes the analytic policy's steps at eta")
    rollout_lambda = param.Number(100.0, bounds=(0, UNBOUNDED), softbounds=(0, 1000),
                                  doc="Rollout: weight of the cost term (log h - log eta)^2 beside log max |dE/E|; "
                                      "as |dE/E| ~ h^2, more steps pay until log(eta / h) = 1 / rollout_lambda")
    rollout_clip = param.Number(1.0, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(0.01, 10),
                                doc="Rollout: gradient norm clipping")
    train_family = param.Selector(default="kepler", objects=["kepler", "binaries", "triples", "clusters"],
                                  doc="Rollout of integrator_mode ml_ttl: the systems trained on: kepler (e_min/e_max, "
                                      "a_min/a_max), binaries (the same with unequal masses down to "
                                      "family_mass_ratio), hierarchical triples (inner e from e_min/e_max, a third "
                                      "body 8-14 inner semi-major axes out), or small bound clusters of "
                                      "family_cluster_size bodies (docs/SCIENCE.md)")
    family_mass_ratio = param.Number(0.1, bounds=(1e-4, 1), softbounds=(0.001, 1),
                                     doc="Training family: the smallest mass ratio of a binary, triple or cluster "
                                         "(ratios drawn log-uniformly from [family_mass_ratio, 1])")
    family_cluster_size = param.Integer(5, bounds=(3, 64), softbounds=(3, 16),
                                        doc="Training family: bodies per cluster (train_family = clusters)")


class Features(Section):
    title = "Feature / history"

    history_len = param.Integer(0, bounds=(0, 1000), softbounds=(0, 20),
                                doc="History length: past states the history model sees (0 = none)")
    feature_type = param.Selector(default="delta_mag", objects=["basic", "rich", "delta_mag", "radial"],
                                  doc="Feature type (basic, rich, delta_mag; radial: the tightest pair's v_r/|v| "
                                      "alone, for the rollout objective)")
    normalize_inputs = param.Boolean(True, doc="Scale network inputs before the first layer")
    norm_mode = param.Selector(default="auto", objects=["auto", "manual"],
                               doc="Input scales: auto (from the training initial conditions) or manual (norm_scale)")
    norm_scale = param.Number(1.0, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True),
                              doc="Divisor applied to every input when norm_mode = manual")


class Model(Section):
    title = "Model"

    hidden_dims = NumberList([64, 64], item_type=int, bounds=(1, 16), item_bounds=(1, 16384),
                             doc="Hidden layer widths of the dt network")
    activation = param.Selector(default="tanh", objects=["tanh", "relu", "gelu", "silu", "elu"],
                                doc="Activation between hidden layers")
    dropout = param.Number(0.0, bounds=(0, 1), inclusive_bounds=(True, False), doc="Dropout probability")
    fourier_scale = param.Number(1.0, bounds=(0, UNBOUNDED), softbounds=(0, 10),
                                 doc="Std of the Gaussian Fourier feature frequencies")
    fourier_dim = param.Integer(0, bounds=(0, 4096), softbounds=(0, 256),
                                doc="Number of Gaussian Fourier features (0 = off)")


class Simulation(Section):
    title = "Simulation / integrator"

    integrator_mode = param.Selector(default="analytic", objects=["analytic", "ml", "history", "ttl", "ml_ttl"],
                                     doc="analytic, ml, history, ttl: the time-transformed (log-H) leapfrog, "
                                         "time-reversible at a constant fictitious step h = eps U(q0) tau(q0), "
                                         "its first step about eps tau(q0) long (docs/SCIENCE.md), or ml_ttl: the "
                                         "same with a checkpoint's learned time transformation U exp(g(q))")
    dt = param.Number(-1.0, softbounds=(-1, 0.1), doc="Fixed dt (analytic); dt <= 0 means adaptive with eps")
    steps = param.Integer(-1, bounds=(-1, 10**10), softbounds=(-1, 100000), doc="Steps to simulate (-1 = unset)")
    duration = param.Number(None, allow_None=True, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True),
                            doc="Stop when time >= duration (training: wall-clock budget in seconds)")
    Nperiod = param.Number(10.0, bounds=(0, 10**7), softbounds=(0, 100),
                           doc="Period count: stop after this many orbital periods (two-body bound orbits; 0 = unset)")
    eps = param.Number(0.1, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(1e-3, 1),
                       doc="dt update constant of the adaptive criterion (ttl: of the fictitious step h)")
    model_path = FilePath(None, allow_None=True, doc="Path to checkpoint")
    num_particles = param.Integer(2, bounds=(2, 4096), softbounds=(2, 64),
                                  doc="Particle count (direct summation over every pair)")
    dim = param.Integer(2, bounds=(2, 3), doc="Spatial dimension")
    mass = param.Number(1.0, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(0.01, 10),
                        doc="Particle mass (random ICs)")
    pos_scale = param.Number(0.1, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(0.01, 10),
                             doc="Random IC position scale")
    vel_scale = param.Number(1.0, bounds=(0, UNBOUNDED), softbounds=(0, 10), doc="Random IC velocity scale")
    softening = param.Number(0.0, bounds=(0, UNBOUNDED), softbounds=(0, 0.1),
                             doc="Plummer softening length (0 = exact Newtonian gravity)")


class ExternalField(Section):
    title = "External field (optional)"
    flags = {"external_field_position": ("--external-field-position",)}

    external_field_mass = param.Number(None, allow_None=True, bounds=(0, UNBOUNDED), doc="External field mass")
    external_field_position = NumberList(None, allow_None=True, item_type=(int, float), bounds=(3, 3),
                                         doc="External field position (x y z)")


class MultiOrbit(Section):
    title = "Multi-orbit sampling (training and simulation)"

    num_orbits = param.Integer(8, bounds=(1, 10**7), softbounds=(1, 1024), doc="Orbit batch count")
    stop_at_period = param.Boolean(False, doc="Stop collection when period is reached")
    e_min = param.Number(0.6, bounds=(0, 1), inclusive_bounds=(True, False), doc="Min eccentricity")
    e_max = param.Number(0.95, bounds=(0, 1), inclusive_bounds=(True, False), doc="Max eccentricity")
    a_min = param.Number(0.8, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(0.1, 10),
                         doc="Min semi-major axis")
    a_max = param.Number(1.2, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(0.1, 10),
                         doc="Max semi-major axis")


class Device(Section):
    title = "Device / dtype"

    device = param.Selector(default="auto", objects=["auto", "cpu", "cuda"], doc="auto, cpu, cuda")
    dtype = param.Selector(default="float64", objects=["float32", "float64"], doc="float32 or float64")
    tf32 = param.Boolean(False, doc="Enable TF32")
    compile = param.Boolean(False, doc="Use torch.compile")
    detect_anomaly = param.Boolean(False, doc="Autograd anomaly detection")


class Logging(Section):
    title = "Logging / misc"
    flags = {"save_name": ("--save-name", "-s")}

    save_name = param.String(None, allow_None=True, doc="Output name under data/")
    overwrite = param.Boolean(False, doc="Replace the run that data/<save_name> already holds (refused otherwise)")
    seed = param.Integer(None, allow_None=True, bounds=(0, 2**32 - 1), doc="RNG seed")
    debug = param.Boolean(False, doc="Enable debug logs")
    debug_every = param.Integer(1, bounds=(1, 10**9), doc="Debug print interval")
    debug_replay_every = param.Integer(10, bounds=(1, 10**9), doc="Debug replay interval")
    retrain_log_every = param.Integer(100, bounds=(1, 10**9), doc="Debug line every this many retrain iterations")
    wandb = param.Boolean(False, doc="Log metrics to Weights & Biases (needs the wandb extra)")


class Movie(Section):
    title = "Movie generation (simulate + train)"

    movie = param.Boolean(False, doc="Save MP4 movie (training uses cumulative trajectory, including warmup steps)")
    movie_dir = FilePath(None, allow_None=True, doc="Output directory (defaults to data/movie)")
    movie_max_frames = param.Integer(1000, bounds=(UNBOUNDED, 10**6), softbounds=(0, 5000),
                                     doc="Max frames (downsample; <= 0 = all)")
    movie_fps = param.Integer(30, bounds=(1, 240), softbounds=(1, 120), doc="Frames per second")
    movie_dpi = param.Integer(120, bounds=(10, 1200), softbounds=(50, 300), doc="Render DPI")


class InitialConditions(Section):
    title = "Initial conditions"
    flags = {"ic_path": ("--ic-path",)}

    ic_path = FilePath(None, allow_None=True,
                           doc="Path to .npy or .txt ICs: one row per body, mass, x.., v..")
    use_train_ic = param.Boolean(False, doc="Use training ICs stored in the model checkpoint")


class SimulationExtras(Section):
    title = "Simulation extras"

    multi_orbit_sim = param.Boolean(False, doc="Run num_orbits independent 2-body orbits sampled from e/a ranges")
    record_every = param.Integer(1, bounds=(1, 10**9), softbounds=(1, 1000),
                                 doc="Record the trajectory and its diagnostics every this many steps and the last "
                                     "(maxima in summaries are over recorded steps)")
    time_symmetric = param.Boolean(False, doc="Analytic mode: each adaptive step is the mean of the criterion at its "
                                              "start and at the end of a trial step, which keeps the energy error "
                                              "bounded instead of drifting (one more force evaluation per step)")


class Evaluation(Section):
    title = "Evaluation (nbody-runner evaluate)"

    eval_model_paths = FilePathList([], doc="More checkpoints evaluated beside model_path (say, its config trained "
                                            "with other seeds): each ratio's median and range then spans every "
                                            "checkpoint, and each checkpoint's median is reported")
    eval_systems = param.Integer(16, bounds=(0, 1024), softbounds=(0, 64),
                                 doc="Systems per problem, drawn from its seeded family (seed; docs/SCIENCE.md states "
                                     "each family's distribution): every ratio is reported as a median and range "
                                     "over them; 0: the hand-picked systems instead (eval_e's orbits, four triples "
                                     "and impact parameters, two clusters). Burrau's problem is one system always")
    eval_e = NumberList([0.5, 0.7, 0.9, 0.98], item_type=(int, float), bounds=(1, None), item_bounds=(0, 0.99),
                        doc="Eccentricities of the hand-picked Kepler orbits (with eval_systems = 0); each row says "
                            "whether it lies in the checkpoint's training range (family in) or not (out)")
    eval_a = param.Number(1.0, bounds=(0, UNBOUNDED), inclusive_bounds=(False, True), softbounds=(0.1, 10),
                          doc="Semi-major axis of the evaluated Kepler orbits")
    eval_eps = NumberList([0.0125, 0.025, 0.05, 0.1, 0.2], item_type=(int, float), bounds=(1, None),
                          item_bounds=(1e-6, 10),
                          doc="Accuracy knob values of the baselines (eps of the analytic, classic, time-symmetric "
                              "and midpoint steps; the fixed step is eps * P / (2 pi), P the problem's period) "
                              "the learned policy is compared with")
    eval_suite = param.Selector(default="all", objects=["all", "kepler", "triples", "scattering", "burrau", "cluster",
                                                        "unequal", "planetary", "plummer"],
                                doc="Problems evaluated: all (the first five), or one of Kepler orbits (eval_e), "
                                    "hierarchical triples, binary-single scattering, Burrau's Pythagorean problem, a "
                                    "small cold cluster; or, opt-in (outside all, for cost), unequal-mass binaries "
                                    "(mass ratios 0.1, 0.01), planetary systems, 64-body Plummer spheres "
                                    "(docs/SCIENCE.md)")
    eval_reference = param.Selector(default="auto", objects=["auto", "ias15", "leapfrog"],
                                    doc="Reference trajectory: REBOUND's IAS15 (ias15; auto when rebound is "
                                        "installed), else our time-symmetric leapfrog at eps / 16 (leapfrog)")
    eval_long_periods = param.Number(1000.0, bounds=(0, 10**6), softbounds=(0, 2000),
                                     doc="Long run of each Kepler orbit for this many periods (triples: a tenth as "
                                         "many inner periods) by the learned policy and the analytic, midpoint, "
                                         "time-symmetric and ttl steps at equal force evaluations per period (the "
                                         "learned policy's; its own knob at the eval_eps nearest eps): max |dE/E| "
                                         "over its first and last tenth and the error's growth exponent (0 = off)")


SECTIONS: tuple[type[Section], ...] = (
    Training, LossBounds, Features, Model, Rollout, Simulation, ExternalField, MultiOrbit, Device, Logging, Movie,
    InitialConditions, SimulationExtras, Evaluation,
)


class Config(*SECTIONS):
    """A fully resolved configuration: every key of every section, flat.

    ``given_keys`` names the keys that were set (TOML or flags) rather than left at default."""

    given_keys: frozenset = frozenset()


def section_keys(section: type[Section]) -> list[str]:
    """Keys declared by ``section`` itself, in declaration order."""
    return [k for k in section.param if k != "name" and section.param[k].owner is section]


KEYS: dict[str, type[Section]] = {key: sec for sec in SECTIONS for key in section_keys(sec)}


# Names other tools give keys of this schema: an unknown key suggests these before close spellings.
ALIASES = {"learning_rate": "lr", "num_epochs": "epochs", "n_epochs": "epochs", "batch_size": "replay_batch_size",
           "num_bodies": "num_particles", "n_bodies": "num_particles", "hidden_sizes": "hidden_dims",
           "hidden_layers": "hidden_dims", "run_name": "save_name", "name": "save_name"}
PATH_KEYS: tuple[str, ...] = tuple(key for key in KEYS if isinstance(Config.param[key], (FilePath, FilePathList)))


def flags_for(key: str) -> tuple[str, ...]:
    """The CLI option strings of ``key``."""
    section = KEYS[key]
    return section.flags.get(key, ("--" + key.replace("_", "-"),))
