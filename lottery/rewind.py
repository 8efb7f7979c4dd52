"""Snapshots and rewinding: the step of IMP that other toolkits silently got wrong, so it checks itself."""
from __future__ import annotations

import torch
from torch import nn

from lottery.errors import RewindCheckError
from lottery.masks import Mask


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer (the rewind state)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def rewind(model: nn.Module, state: dict[str, torch.Tensor], mask: Mask | None = None) -> nn.Module:
    """Restore ``state`` into ``model`` and zero the pruned weights; then verify both bit for bit."""
    model.load_state_dict(state, strict=True)
    if mask is not None:
        mask.apply(model)
    verify_rewind(model, state, mask)
    return model


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


@torch.no_grad()
def verify_rewind(model: nn.Module, state: dict[str, torch.Tensor], mask: Mask | None = None) -> None:
    """Raise if a kept weight differs from ``state`` in any bit, or a pruned weight is not exactly +0.0."""
    current = model.state_dict()
    for name, ref in state.items():
        ref = ref.to(current[name].device)
        if mask is not None and name in mask:
            ref = torch.where(mask[name].to(ref.device), ref, torch.zeros((), dtype=ref.dtype, device=ref.device))
        if not torch.equal(_bits(current[name]), _bits(ref)):
            raise RewindCheckError(f"rewind check failed for '{name}': weights differ from the rewind state")
