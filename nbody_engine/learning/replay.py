"""A bounded replay buffer of accepted training states (first in, first out)."""

from __future__ import annotations

import torch

from ..physics.gravity import State


class ReplayBuffer:
    """Holds up to ``capacity`` single-system states with their history rows (B, H, K)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.tensors: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.tensors["mass"].shape[0] if self.tensors else 0

    def add(self, state: State, rows: torch.Tensor) -> None:
        new = {"mass": state.mass, "position": state.position, "velocity": state.velocity, "rows": rows}
        new = {k: v.detach() for k, v in new.items()}
        if self.tensors:
            new = {k: torch.cat([self.tensors[k], v])[-self.capacity:] for k, v in new.items()}
        self.tensors = new

    def sample(self, size: int, generator: torch.Generator) -> tuple[State, torch.Tensor]:
        """``size`` distinct states drawn uniformly (all of them if fewer are held)."""
        n = len(self)
        index = torch.randperm(n, generator=generator)[: min(size, n)].to(self.tensors["mass"].device)
        t = {k: v[index] for k, v in self.tensors.items()}
        time = torch.zeros_like(t["mass"][:, 0])
        return State(t["mass"], t["position"], t["velocity"], time), t["rows"]

    def state_dict(self) -> dict:
        return dict(self.tensors)

    def load_state_dict(self, tensors: dict) -> None:
        self.tensors = dict(tensors)
