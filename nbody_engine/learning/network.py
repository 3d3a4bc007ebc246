"""The dt network and the learned policy built on it.

Parametrization (physics-informed): the network does not predict dt itself but a bounded
multiplicative correction to the analytic step,

    dt = max(dt_bound, eps * tau(state) * c),    c = 10 ** softsign(s) for s >= 0,
                                                 c = 100 ** softsign(s) for s < 0,

with ``s = f(features)`` and ``tau`` the pairwise time scale of
:func:`policies.pairwise_timescale`. The last layer starts at zero, so an untrained network
*is* the analytic policy with ``eps``. Training can lengthen a step at most tenfold (keeping
every policy the network can express a sane integrator) and shorten it a hundredfold (so a
state the criterion steps too coarsely, such as a hard binary in a random system, can always
be resolved); ``dt_bound`` is a hard floor. The bound is a softsign ``s / (1 + |s|)`` rather
than tanh: its gradient decays like ``1/s^2`` instead of exponentially, so a network pushed
against a bound still gets the gradient that pulls it back.

The network computes in float32 whatever the run's ``dtype``: a step size needs no more
digits (any dt is a valid leapfrog step; only the physics, ``tau`` and the final product run in
``dtype``), and float32 halves the cost of a large network's forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..config.errors import InputError
from ..config.feature_widths import input_width
from ..integrators.dt_policy import PackagedRule
from ..integrators.pair_step import Frame
from ..integrators.policies import pairwise_timescale, two_body_times
from . import features as features_module
from ..physics.gravity import Gravity, State
from .features import PairFeatures, binary_state_features, empty_rows, history_row, push_row, state_features

LONGEST, SHORTEST = 10.0, 0.01  # the range of the correction c
ACTIVATIONS = {"tanh": (nn.Tanh, torch.tanh), "relu": (nn.ReLU, torch.relu), "gelu": (nn.GELU, F.gelu),
               "silu": (nn.SiLU, F.silu), "elu": (nn.ELU, F.elu)}  # the module, and the function it applies


class DtNetwork(nn.Module):
    """MLP from features (B, F) and analytic time scale tau (B,) to dt (B,)."""

    def __init__(self, in_features: int, hidden_dims: list[int], activation: str = "tanh", dropout: float = 0.0,
                 fourier_dim: int = 0, fourier_scale: float = 1.0, eps: float = 0.1, dt_bound: float = 1e-8,
                 conditioned: bool = False) -> None:
        super().__init__()
        self.eps, self.dt_bound = eps, dt_bound
        self.conditioned = conditioned  # the last input is log eta, the accuracy asked for (rollout objective)
        self.activation, self.activation_name = ACTIVATIONS[activation][1], activation
        self.register_buffer("input_shift", torch.zeros(in_features))
        self.register_buffer("input_scale", torch.ones(in_features))
        self.register_buffer("fourier_matrix", torch.randn(fourier_dim, in_features) * fourier_scale)
        width = in_features + 2 * fourier_dim
        layers: list[nn.Module] = []
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation][0]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        last = nn.Linear(width, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last)

    def set_normalization(self, shift: torch.Tensor, scale: torch.Tensor) -> None:
        self.input_shift.copy_(shift)
        self.input_scale.copy_(scale)

    def forward(self, features: torch.Tensor, tau: torch.Tensor, eps: float | torch.Tensor | None = None
                ) -> torch.Tensor:
        """dt (B,) from features (B, F) and tau (B,); ``eps`` (a number or (B,)) replaces the
        network's own."""
        z = (features.to(self.input_shift.dtype) - self.input_shift) / self.input_scale  # (B, F)
        if self.fourier_matrix.shape[0]:
            proj = 2 * math.pi * z @ self.fourier_matrix.T  # (B, fourier_dim)
            z = torch.cat([z, proj.sin(), proj.cos()], -1)
        s = self._mlp(z).squeeze(-1)
        return _bounded_step(s, (self.eps if eps is None else eps) * tau, self.dt_bound, s.new_tensor(_K))

    def frozen(self, input_map: tuple[torch.Tensor, torch.Tensor] | None = None):
        """:meth:`forward` with the weights the network has now, in eval mode, as a function
        ``step(inputs, scaled_tau (B, 1)) -> dt (B, 1)`` of plain tensors, where ``scaled_tau`` is
        ``eps * tau``: for a simulation's steps (under no gradient), where looking up a Module's
        attributes costs more than a small layer's product. ``inputs`` are the features (B, F),
        or, with ``input_map = (offset (B, F), mix (K, F))``, (B, K) values whose features are
        ``offset + inputs @ mix``.

        The same numbers to float32 rounding, in fewer operations: the input normalization and
        the input map are folded into the first layer (without Fourier features) and the
        weights are transposed once."""
        linear, input_map, (shift, scale, fourier) = self.folded(input_map)
        (last_bias, last_weight), hidden = linear[-1], linear[:-1]
        activation, dtype, bound, k = self.activation, shift.dtype, self.dt_bound, shift.new_tensor(_K)

        def step(inputs: torch.Tensor, scaled_tau: torch.Tensor) -> torch.Tensor:
            z = (inputs if input_map is None else torch.addmm(input_map[0], inputs, input_map[1])).to(dtype)
            if fourier.shape[0]:
                z = (z - shift) / scale
                proj = 2 * math.pi * z @ fourier.T
                z = torch.cat([z, proj.sin(), proj.cos()], -1)
            for bias, weight in hidden:
                z = activation(torch.addmm(bias, z, weight))
            return _bounded_step(torch.addmm(last_bias, z, last_weight), scaled_tau, bound, k)  # (B, 1)
        return step

    def folded(self, input_map: tuple[torch.Tensor, torch.Tensor] | None = None):
        """:meth:`frozen`'s layers ``[(bias, weight (in, out)), ...]`` (the first one's bias (B, out)
        with an ``input_map`` folded in), the input map left unfolded (None once folded, as it
        is without Fourier features), and the input normalization and Fourier matrix."""
        with torch.no_grad():
            shift, scale, fourier = (t.detach().clone() for t in (self.input_shift, self.input_scale,
                                                                  self.fourier_matrix))
            linear = [(layer.bias.detach().clone(), layer.weight.detach().t().contiguous())
                      for layer in self.mlp if isinstance(layer, nn.Linear)]
            if not fourier.shape[0]:  # w (z - shift) / scale + b = (w / scale) z + (b - (w / scale) shift)
                bias, weight = linear[0]
                weight = weight / scale.unsqueeze(-1)
                bias = bias - shift @ weight
                if input_map is not None:  # folded in the map's dtype: w (offset + x mix) + b
                    offset, mix = input_map
                    wide = weight.to(offset.dtype)
                    bias, weight = (offset @ wide + bias).to(weight.dtype), (mix @ wide).to(weight.dtype)
                    input_map = None
                linear[0] = (bias, weight)
        return linear, input_map, (shift, scale, fourier)

    def _mlp(self, z: torch.Tensor) -> torch.Tensor:
        """``self.mlp(z)`` by the functions its layers apply: calling a Module costs more than a
        small layer's product, and one step of one orbit calls every layer."""
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                z = F.linear(z, layer.weight, layer.bias)
            elif isinstance(layer, nn.Dropout):
                z = F.dropout(z, layer.p, self.training)
            else:
                z = self.activation(z)
        return z


_K = 1 / math.log(LONGEST)
_BELOW = math.log(1 / SHORTEST) / math.log(LONGEST) - 1  # the extra weight of a negative s


def _bounded_step(s: torch.Tensor, scaled_tau: torch.Tensor, bound: float, k: torch.Tensor) -> torch.Tensor:
    """``max(bound, scaled_tau * c)`` with the correction ``c = 10 ** softsign(s)``,
    ``100 ** softsign(s)`` below zero: ``exp(b + min(b, 0))`` with ``b = ln(10) softsign(s) =
    s / (k + k |s|)``, where ``k`` is ``1 / ln 10`` as a tensor like ``s`` (one fused operation
    where a number would take two). ``s`` in the network's float32; the product promotes it to
    ``scaled_tau``'s dtype."""
    b = s / torch.addcmul(k, k, s.abs())
    return (scaled_tau * torch.add(b, b.clamp_max(0), alpha=_BELOW).exp()).clamp_min(bound)


def build_network(values: dict) -> DtNetwork:
    """A DtNetwork from config values (a Config's or a checkpoint's ``config`` dict); the rollout
    objective's network also takes log eta."""
    conditioned = values.get("objective") == "rollout"
    return DtNetwork(input_width(values["feature_type"], values["history_len"]) + conditioned,
                     list(values["hidden_dims"]), values["activation"], values["dropout"], values["fourier_dim"],
                     values["fourier_scale"], values["eps"], values["dt_bound"], conditioned)


def load_weights(network: DtNetwork, state: dict, path) -> None:
    """Load ``state`` into ``network``; weights that do not fit it, or are not finite, are an
    InputError naming the checkpoint ``path``."""
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        reason = str(err).strip().splitlines()[-1].strip() if str(err).strip() else type(err).__name__
        raise InputError(f"checkpoint '{path}': its weights do not fit the network its config describes "
                         f"({reason}); the file was altered or written by another program") from None
    bad = [name for name, t in network.state_dict().items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise InputError(f"checkpoint '{path}' holds non-finite weights ({', '.join(bad[:3])}); it comes from a "
                         "training that diverged: use an earlier checkpoint")


@dataclass(frozen=True)
class LearnedCarry:
    """What a history policy keeps per orbit: rows (B, H, K) and the last state with its
    accelerations and potential, from which the next row is made."""

    rows: torch.Tensor
    state: State
    acc: torch.Tensor
    potential: torch.Tensor


class LearnedDt:
    """The dt policy of a trained network; with ``history_len > 0`` it keeps a history per orbit.
    A network trained by the rollout objective also takes the accuracy ``eta`` (a number or one
    per system, (B,)): its steps are ``eta * tau * c(features, log eta)``."""

    def __init__(self, network: DtNetwork, feature_type: str, history_len: int, gravity: Gravity,
                 eta: float | torch.Tensor | None = None) -> None:
        self.network = network
        self.feature_type = feature_type
        self.history_len = history_len
        self.gravity = gravity
        self.eta = eta

    def inputs(self, state: State, rows: torch.Tensor | None, acc=None, potential=None) -> torch.Tensor:
        """Network inputs (B, F): the state's features, then the history rows flattened."""
        if acc is None:
            acc, potential = self.gravity(state)
        elif potential is None:
            potential = self._potential_if_needed(state)
        feats = state_features(self.feature_type, state, acc, potential, self.gravity.softening)
        if self.history_len:
            feats = torch.cat([feats, rows.flatten(1)], -1)
        column = self._log_eta(feats)
        return feats if column is None else torch.cat([feats, column], -1)

    def _log_eta(self, like: torch.Tensor) -> torch.Tensor | None:
        """A conditioned network's last input, log eta (B, 1) for ``like``'s B systems; None for
        another network."""
        if not self.network.conditioned:
            return None
        log_eta = torch.log(torch.as_tensor(self.eta, dtype=like.dtype, device=like.device))
        return log_eta.expand(like.shape[0]).unsqueeze(-1)

    def dt_from(self, state: State, rows: torch.Tensor | None, acc=None, potential=None, tau=None) -> torch.Tensor:
        """dt (B,) for ``state`` with history ``rows``; pass its accelerations, potential and
        :func:`~nbody_engine.integrators.policies.pairwise_timescale` (B,) if already known."""
        if tau is None:
            tau = pairwise_timescale(state, self.gravity.softening)
        eta = self.eta if self.network.conditioned else None
        return self.network(self.inputs(state, rows, acc, potential), tau, eta)

    def relative_rule(self, binaries):
        """:meth:`dt` for :mod:`~nbody_engine.integrators.two_body`'s path (see
        :class:`~nbody_engine.integrators.dt_policy.DtPolicy`), or None with a history, the ``rich``
        features, or a softening of the policy's own."""
        if self.history_len or self.network.training or self.gravity.softening != binaries.softening_length:
            return None
        found = binary_state_features(self.feature_type, binaries)
        if found is None:
            return None
        inputs_of, (offset, mix) = found
        total = binaries.total
        log_eta = self._log_eta(total)
        if log_eta is not None:  # one more feature, in the offset alone
            offset, mix = torch.cat([offset, log_eta], -1), torch.cat([mix, mix.new_zeros(mix.shape[0], 1)], -1)
        step, inverse_total_mass = self.network.frozen((offset, mix)), total.reciprocal()
        eps = self.eta if self.network.conditioned else self.network.eps
        eps = torch.as_tensor(eps, dtype=total.dtype, device=total.device).reshape(-1, 1)

        def rule(separation, distance, relative_velocity, drift):
            speed = torch.linalg.vector_norm(relative_velocity, dim=-1, keepdim=True)
            shortest, guard = two_body_times(distance, speed, inverse_total_mass)
            inputs = inputs_of(separation, distance, speed, shortest, relative_velocity, drift)
            return step(inputs, shortest.mul(guard).mul(eps))  # two_body_timescale's product
        return rule

    def pair_rule(self, frame):
        """:meth:`dt` for :mod:`~nbody_engine.integrators.pair_step`'s path, or None for features
        other than ``basic`` and ``delta_mag`` (``basic`` with a history), or a softening of the
        policy's own. With a history the rule keeps it (:class:`_PairHistoryRule`)."""
        if (self.network.training or self.feature_type not in ("basic", "delta_mag")
                or (self.history_len and self.feature_type != "delta_mag")
                or self.gravity.softening**2 != frame.softening2):
            return None
        features = PairFeatures(frame, self.history_len)
        offset, mix = features.offset, features.mix
        log_eta = self._log_eta(offset)
        if log_eta is not None:  # one more feature, in the offset alone
            offset, mix = torch.cat([offset, log_eta], -1), torch.cat([mix, mix.new_zeros(mix.shape[0], 1)], -1)
        step = self.network.frozen((offset, mix))
        eps = self.eta if self.network.conditioned else self.network.eps
        eps = torch.as_tensor(eps, dtype=offset.dtype, device=offset.device).reshape(-1, 1)

        def rule(pairs):
            scaled_tau = pairs.timescale().unsqueeze(-1).mul_(eps)
            return step(features.measure(pairs), scaled_tau).squeeze(-1)
        return _PairHistoryRule(rule, features) if self.history_len else rule

    def packaged_rule(self, mass: torch.Tensor, softening: float) -> PackagedRule | None:
        """:meth:`dt` for :mod:`~nbody_engine.integrators.aot_step`'s compiled pair step: the
        network's layers, folded as for :meth:`pair_rule`, are the package's inputs, its
        activation, widths and floor its kind; None where :meth:`pair_rule` gives none, with a
        history, or with Fourier features."""
        network = self.network
        if (self.history_len or network.fourier_matrix.shape[0] or network.training
                or self.feature_type not in ("basic", "delta_mag") or self.gravity.softening**2 != softening**2):
            return None
        features = PairFeatures(Frame(mass, softening))
        offset, mix = features.offset, features.mix
        log_eta = self._log_eta(offset)
        if log_eta is not None:  # one more feature, in the offset alone
            offset, mix = torch.cat([offset, log_eta], -1), torch.cat([mix, mix.new_zeros(mix.shape[0], 1)], -1)
        layers, _, _ = network.folded((offset, mix))
        eps = self.eta if network.conditioned else network.eps
        eps = torch.as_tensor(eps, dtype=mass.dtype, device=mass.device).expand(mass.shape[0]).contiguous()
        activation, bound = network.activation, network.dt_bound

        def dt_of(quantities, eps: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
            z = features.packaged_inputs(quantities).to(weights[0].dtype)
            *hidden, (last_bias, last_weight) = zip(weights[0::2], weights[1::2])
            for bias, weight in hidden:
                z = activation(torch.addmm(bias, z, weight))
            s = torch.addmm(last_bias, z, last_weight)
            return _bounded_step(s, (eps * quantities.timescale).unsqueeze(-1), bound, s.new_tensor(_K)).squeeze(-1)
        kind = f"learned {network.activation_name} {[weight.shape[1] for _, weight in layers]} {bound!r}"
        weights = tuple(t.contiguous() for layer in layers for t in layer)
        return PackagedRule(kind, (eps, *weights), dt_of, (__file__, features_module.__file__))

    def _potential_if_needed(self, state: State) -> torch.Tensor | None:
        """The potential energy, which only the ``rich`` features use."""
        return self.gravity.potential(state) if self.feature_type == "rich" else None

    def init(self, state: State) -> LearnedCarry | None:
        if not self.history_len:
            return None
        acc, pot = self.gravity(state)
        rows = empty_rows(state.batch_size, self.history_len, self.feature_type, state.position)
        return LearnedCarry(rows, state, acc, pot)

    def dt(self, state: State, carry: LearnedCarry | None = None, acc=None) -> torch.Tensor:
        if carry is None:
            return self.dt_from(state, None, acc)
        return self.dt_from(state, carry.rows, carry.acc, carry.potential)

    def update(self, carry: LearnedCarry | None, state: State, dt: torch.Tensor, acc=None) -> LearnedCarry | None:
        if carry is None:
            return None
        if acc is None:
            acc, pot = self.gravity(state)
        else:
            pot = self._potential_if_needed(state)
        row = history_row(self.feature_type, carry.state, carry.acc, carry.potential, state, acc, dt,
                          self.gravity.softening)
        return LearnedCarry(push_row(carry.rows, row), state, acc, pot)


class _PairHistoryRule:
    """A learned step's rule on :mod:`~nbody_engine.integrators.pair_step`'s path with its
    history: the rule, and the history kept in ``features`` (:class:`PairFeatures`) between the
    steps, taken from the policy's :class:`LearnedCarry` at the start of a block of steps and
    given back as one at its end."""

    def __init__(self, rule, features: PairFeatures) -> None:
        self.rule, self.features = rule, features

    def __call__(self, pairs) -> torch.Tensor:
        return self.rule(pairs)

    def resume(self, carry: LearnedCarry) -> None:
        self.features.resume(carry.rows)

    def stepped(self, pairs, dt: torch.Tensor) -> None:
        self.features.push_change(pairs, dt)

    def carry(self, state: State, acc: torch.Tensor) -> LearnedCarry:
        return LearnedCarry(self.features.rows(), state, acc, None)
