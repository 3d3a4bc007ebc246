"""Memory a run will need, estimated from its config before anything is allocated.

A config whose largest allocation would not fit in this machine's memory is refused with the
figure and the key that drives it, instead of failing minutes later with an allocation error
(or swapping the machine to a halt). The estimates are upper bounds of the dominant terms, good
to a factor of two or so: they exist to catch settings that are off by orders of magnitude.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .feature_widths import input_width, row_width

REPLAY_CAPACITY = 10_000  # accepted states a training run keeps for replay (here: configs are checked without torch)

FRACTION = 0.8  # of the machine's memory a single run may plan to use
PAIR_TEMPORARIES = 6  # (B, N, N, .) tensors alive at once in a force evaluation
GB = 1e9
PROCESS_BYTES = 0.4e9  # the interpreter with torch, numpy and the engine loaded, before a run allocates
EVAL_CLUSTER = 12  # bodies of evaluate's largest problem, the cold cluster


@dataclass(frozen=True)
class Need:
    """``bytes`` of memory for ``what``, driven by ``key`` (whose value the message quotes)."""

    key: str
    bytes: float
    what: str
    fix: str


def available_memory() -> int:
    """Bytes of memory this process may use: physical memory, or the cgroup's limit if lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = Path("/sys/fs/cgroup/memory.max")
    try:
        text = limit.read_text().strip()
    except OSError:
        return total
    return min(total, int(text)) if text.isdigit() else total


def _network_parameters(cfg) -> int:
    widths = [input_width(cfg.feature_type, cfg.history_len) + 2 * cfg.fourier_dim, *cfg.hidden_dims, 1]
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def training_needs(cfg) -> list[Need]:
    """The dominant allocations of training: the network with its gradients and Adam moments
    (float32), the autograd graph of one attempt's ``n_steps`` leapfrog steps over every pair
    of the largest batch, the replay buffer with each state's history rows, and the training
    trajectory kept in memory. A checkpoint is serialized in memory before it is written (a
    copy of the network, its optimizer state and the replay buffer), and adding states to the
    buffer copies it: a large network or a long history needs that much again at those moments."""
    item = 8 if cfg.dtype == "float64" else 4
    batch = max(cfg.num_orbits, cfg.replay_batch_size)
    N, D = cfg.num_particles, cfg.dim
    graph = batch * N * N * (2 * D + 4) * item * PAIR_TEMPORARIES * cfg.n_steps
    replay = REPLAY_CAPACITY * (N * (2 * D + 1) + cfg.history_len * row_width(cfg.feature_type)) * item
    # every accepted step's state of every orbit (float64 on the CPU), and a copy when it is written; a run
    # that 'duration' ends is not held to its epochs (a long 'epochs' with a short 'duration' is the idiom)
    rows = cfg.epochs * cfg.steps_per_epoch if cfg.duration is None else 0
    trajectory = 2 * rows * (cfg.num_orbits * (N * D + 2 + (1 if D == 2 else 3)) + 2) * 8
    return [
        # float32 weights, gradients and two Adam moments, and a checkpoint's copy of all but the gradients
        Need("hidden_dims", (4 + 3) * 4 * _network_parameters(cfg) + 3 * 4 * batch * sum(cfg.hidden_dims),
             "the dt network, its gradients and optimizer state", "use narrower or fewer layers"),
        Need("num_particles", graph, f"the autograd graph of {cfg.n_steps} leapfrog steps of {batch} systems",
             "lower num_particles, num_orbits, replay_batch_size or n_steps"),
        # the buffer is copied when states are added and when a checkpoint is written, and once it is full the
        # allocator keeps about half a buffer more of the per-step history tensors (bench/memory.py --estimates)
        Need("history_len", 2.5 * replay, f"a replay buffer of {REPLAY_CAPACITY} states and their history rows "
             "(and its copies)", "lower history_len"),
        Need("epochs", trajectory, f"the training trajectory ({rows} rows), kept for train_trajectory.npz",
             "lower epochs or steps_per_epoch"),
    ]


def simulation_needs(cfg, ic_systems: int = 0) -> list[Need]:
    """The dominant allocations of a simulation: one force evaluation over every pair, and the
    recorded trajectory when the run has a step limit (``steps``). ``ic_systems``: how many
    systems its IC file holds (0: none; the sampled orbits of ``multi_orbit_sim`` come on top)."""
    item = 8 if cfg.dtype == "float64" else 4
    systems = ic_systems + (cfg.num_orbits if cfg.multi_orbit_sim else 0) or 1
    N, D = cfg.num_particles, cfg.dim
    needs = [_forces(systems, N, D, item)]
    if cfg.steps > 0:
        rows = cfg.steps // cfg.record_every + 2
        needs.append(Need("steps", rows * systems * (2 * N * D + 2 * D + 6) * item,
                          f"the recorded trajectory ({rows} rows)", "lower steps or raise record_every"))
    return needs


def evaluation_needs(cfg, ic_systems: int = 0) -> list[Need]:
    """The dominant allocation of ``evaluate``: one force evaluation over every pair of every
    system of a problem, copied once per ``eval_eps`` value (the policies' knobs run as one
    batch). The suite's largest problem is the cluster (EVAL_CLUSTER bodies) unless ``ic_path``
    gives the systems."""
    item = 8 if cfg.dtype == "float64" else 4
    systems = (ic_systems or max(len(cfg.eval_e), 1)) * len(cfg.eval_eps)
    N = cfg.num_particles if ic_systems else max(cfg.num_particles, EVAL_CLUSTER)
    return [_forces(systems, N, cfg.dim, item)]


def _forces(systems: int, N: int, D: int, item: int) -> Need:
    return Need("num_particles", systems * N * N * (2 * D + 4) * item * PAIR_TEMPORARIES,
                f"the forces between every pair of bodies of {systems} system(s)", "lower num_particles")


def needs_of(cfg, phase: str, ic_systems: int = 0) -> list[Need]:
    """The dominant allocations of ``phase`` ('train', 'simulate' or 'evaluate') for ``cfg``;
    ``ic_systems`` is how many systems its IC file holds (0: none)."""
    if phase == "train":
        return training_needs(cfg)
    return evaluation_needs(cfg, ic_systems) if phase == "evaluate" else simulation_needs(cfg, ic_systems)


def estimated_bytes(cfg, phase: str, ic_systems: int = 0) -> float:
    """The peak resident memory the estimate expects of a run of ``phase``: the interpreter with
    torch loaded, plus :func:`needs_of` (bench/memory.py compares it with measured peaks)."""
    return PROCESS_BYTES + sum(n.bytes for n in needs_of(cfg, phase, ic_systems))


def check_memory(cfg, phase: str, ic_systems: int = 0, available: int | None = None) -> None:
    """Refuse ``cfg`` for ``phase`` when what it will allocate cannot fit (see :func:`needs_of`)."""
    available = available_memory() if available is None else available
    needs = needs_of(cfg, phase, ic_systems)
    biggest = max(needs, key=lambda n: n.bytes)
    if estimated_bytes(cfg, phase, ic_systems) > FRACTION * available:
        raise InputError(f"'{biggest.key}' = {getattr(cfg, biggest.key)} needs about {biggest.bytes / GB:.3g} GB of "
                         f"memory for {biggest.what}, more than this machine's {available / GB:.3g} GB allow; "
                         f"{biggest.fix}")
