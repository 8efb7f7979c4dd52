"""The run contract every trainer is held to, written once: ``init.pt`` is drawn once and then only read, and a
training run under a mask leaves every pruned weight at exactly zero.

The IMP engine (lottery/imp_engine.py) applies both around whichever trainer it drives — the built-in loop or the
user's ``train_fn`` — and the drivers that train through a Session without the engine (gradual pruning, pruning at
init, the stability study) call the same functions.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lottery.errors import ConfigError, CorruptFileError, RewindCheckError
from lottery.masks import Mask


def _same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    def bits(t: torch.Tensor) -> torch.Tensor:
        return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)

    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
                                        and torch.equal(bits(a[k]), bits(b[k])) for k in a)


def load_init(rundir, draw: Callable[[], dict[str, torch.Tensor]], like: dict[str, torch.Tensor],
              given: bool = False) -> dict[str, torch.Tensor]:
    """The weights every level rewinds to: ``init.pt`` of ``rundir``, written from ``draw()`` when the run has none.

    Every finished level was trained from init.pt, so a damaged or lost one is never redrawn silently (a redraw can
    differ: a changed checkpoint file, another torch version) — the levels would mix two inits. ``like``: the
    model's state (names, shapes, dtypes a stored init.pt must have). ``given``: ``draw()`` is the init itself
    (find_tickets' model), so a stored init.pt must equal it bit for bit. Returns the state, on ``like``'s devices.
    """
    path = rundir.path / "init.pt"
    try:
        stored = rundir.load_state("init.pt", like=like)
    except CorruptFileError as e:
        raise CorruptFileError(f"{path} (the init every level rewinds to) is damaged or not this model's: "
                               f"{str(e).split(';')[0]}; restore init.pt from a copy, or delete the run directory to "
                               "start over") from None
    if stored is None:
        if (rundir.path / "results.json").exists():
            raise CorruptFileError(f"{path} (the init every level rewinds to) is missing but levels are finished; "
                                   "restore init.pt from a copy, or delete the run directory to start over")
        state = draw()
        rundir.save_state("init.pt", state)
        return state
    if given:
        state = draw()
        if not _same_bits(stored, state):
            raise CorruptFileError(f"{path} holds other weights than this model's init; restore it, or delete the run "
                                   "directory")
        return state
    return {k: v.to(like[k].device) if k in like else v for k, v in stored.items()}


def check_pruned_zero(model: nn.Module, mask: Mask, where: str, *, culprit: str | None = None, fix: str = "",
                      error: type[Exception] = RewindCheckError) -> None:
    """After a training run under ``mask``: every pruned weight of ``model`` is exactly zero, else ``error``.

    Parameters are looked up again by name (a loop may have replaced one, or a submodule), against the caller's own
    mask. ``where`` names the run; ``culprit`` the loop to blame when it is not the built-in one (``train_fn``),
    with ``fix`` appended to its message."""
    params = dict(model.named_parameters())
    for k, m in mask.items():
        if k not in params:
            raise error(f"{where}: {culprit or 'training'} changed the model ('{k}' is no longer a parameter)")
        p = params[k].detach()
        n = int(torch.count_nonzero(p[~m.to(p.device)]))
        if n:
            if culprit is None:
                raise error(f"{where}: a pruned weight became non-zero during training ({n} of '{k}')")
            raise error(f"{where}: {culprit} left {n} pruned weights of '{k}' non-zero{fix}")


def check_fraction_names(prunable: list[str], layer_fractions) -> None:
    """``layer_fractions`` names only prunable weights (checked before anything trains)."""
    unknown = [k for k in layer_fractions if k not in prunable]
    if unknown:
        raise ConfigError(f"layer_fractions names {unknown} are not prunable weights; known: {', '.join(prunable)}")
