"""Snapshots and rewinding: the step of IMP that other toolkits silently got wrong, so it checks itself."""
from __future__ import annotations

import torch
from torch import nn

from lottery.errors import CorruptFileError, RewindCheckError
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


def rewind_state(rundir, init_state: dict[str, torch.Tensor], mode: str, level: int) -> dict[str, torch.Tensor]:
    """The weights level ``level`` of IMP starts from, for ``mode`` ``init``, ``lr`` or ``step:K``, read from the run
    directory ``rundir`` (``init.pt`` is ``init_state``; ``rewind.pt`` holds level 0's step-K weights)."""
    if mode == "init" or level == 0:
        return init_state
    path = f"level_{level - 1:02d}/final.pt" if mode == "lr" else "rewind.pt"  # lr: keep the last level's weights
    state = rundir.load_state(path, like=init_state)
    if state is None:
        raise CorruptFileError(f"{rundir.path / path} (the rewind state of level {level}) is missing; delete "
                               "level_00 to retrain it")
    device = next(iter(init_state.values())).device if init_state else None
    return {k: v.to(device) for k, v in state.items()}


class Held:
    """Everything ``model`` is made of when held — its submodules, its parameter and buffer objects, their values,
    dtypes and devices, train/eval modes — to put back exactly by ``restore()``, whatever happened in between (a
    loop that raised half-way, added a module, replaced a parameter, or called ``model.double()``)."""

    def __init__(self, model: nn.Module):
        self.parts = [(m, dict(m._modules), dict(m._parameters), dict(m._buffers), set(m._non_persistent_buffers_set),
                       m.training) for m in model.modules()]
        self.values = {id(t): t.detach().clone() for _, _, ps, bs, _, _ in self.parts
                       for t in (*ps.values(), *bs.values()) if t is not None}

    @torch.no_grad()
    def restore(self) -> None:
        for module, modules, params, buffers, non_persistent, training in self.parts:
            for now, then in ((module._modules, modules), (module._parameters, params), (module._buffers, buffers)):
                now.clear()
                now.update(then)
            module._non_persistent_buffers_set = set(non_persistent)
            module.training = training
            for t in (*params.values(), *buffers.values()):
                if t is None:
                    continue
                value = self.values[id(t)]
                if t.dtype != value.dtype or t.device != value.device or t.shape != value.shape:
                    t.data = value.clone()  # what .double() / .to() changed: the old dtype, device and shape
                    if getattr(t, "grad", None) is not None:
                        t.grad = None
                else:
                    t.copy_(value)
