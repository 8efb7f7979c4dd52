"""Small models of every prunable layer kind, shared by the mask and pruning tests.

Each case knows which parameters the default rule must pick (weights of Linear and Conv1d/2d/3d) and how to make
an input for a forward pass. The models are tiny so a parametrized test over all of them stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class EmbedBN(nn.Module):
    """Embedding → Linear → BatchNorm → LayerNorm → Linear: only the two Linear weights are prunable."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 8)
        self.fc1 = nn.Linear(8, 16)
        self.bn = nn.BatchNorm1d(16)
        self.ln = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, idx):
        x = self.emb(idx).mean(1)
        return self.fc2(self.ln(torch.relu(self.bn(self.fc1(x)))))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))


def conv1d() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(3, 6, 3), nn.ReLU(), nn.Conv1d(6, 4, 3, bias=False), nn.Flatten(), nn.Linear(4 * 8, 5)
    )


def conv2d() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )


def conv3d() -> nn.Module:
    return nn.Sequential(nn.Conv3d(2, 3, 2), nn.GroupNorm(1, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 27, 2))


@dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]
    make_input: Callable[[torch.Generator], torch.Tensor]
    prunable: list[str]  # in named_parameters order

    def model(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.build()

    def input(self, seed: int = 0) -> torch.Tensor:
        return self.make_input(torch.Generator().manual_seed(seed))


CASES = [
    Case("mlp", mlp, lambda g: torch.randn(6, 20, generator=g), ["0.weight", "2.weight", "4.weight"]),
    Case("conv1d", conv1d, lambda g: torch.randn(6, 3, 12, generator=g), ["0.weight", "2.weight", "4.weight"]),
    Case("conv2d", conv2d, lambda g: torch.randn(6, 3, 8, 8, generator=g), ["0.weight", "3.weight", "6.weight"]),
    Case("conv3d", conv3d, lambda g: torch.randn(6, 2, 4, 4, 4, generator=g), ["0.weight", "4.weight"]),
    Case("embed_bn", EmbedBN, lambda g: torch.randint(0, 12, (6, 5), generator=g), ["fc1.weight", "fc2.weight"]),
]
CASE_IDS = [c.name for c in CASES]


def kept_values(model: nn.Module, mask) -> torch.Tensor:
    """|w| of every kept weight, flattened."""
    params = dict(model.named_parameters())
    return torch.cat([params[k].detach().abs().reshape(-1)[mask[k].reshape(-1)] for k in mask])


def flat(mask) -> torch.Tensor:
    """All of a mask's flags in position order (layer order, then flat index)."""
    return torch.cat([mask[k].reshape(-1) for k in mask])


def flat_abs(model: nn.Module, names) -> torch.Tensor:
    params = dict(model.named_parameters())
    return torch.cat([params[k].detach().abs().reshape(-1) for k in names])
