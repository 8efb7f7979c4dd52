"""A ticket as the smaller dense network it is: the dropped units cut out, not stored as zeros.

A unit can go when nothing reads it: every layer that takes its output has that input column (or channel) pruned,
and it does not reach the model's output. Removing it then changes no output: its row (or channel) goes from the
layer that makes it, its channel from every batch norm on the way, and its columns from every layer that reads it
(``lottery.pruning.units`` finds them, residual sums included). A ``neuron`` ticket's dropped units all qualify; an
unstructured ticket rarely has any. The result is an ordinary dense module: fewer multiply-adds, real speed on any
hardware, no sparse kernels needed.

``physical_tensors(model, mask)`` gives the smaller state dict and the units kept per group; ``shrink_to(model,
units)`` resizes a freshly built full model to those shapes so the state loads (``lottery.export.load_exported``
does this for ``--format physical`` files); ``check_physical`` runs both networks on a batch before anything is
written, so a model whose units cannot be cut (a sum this module does not see through) is refused, never shipped.
``to_semi_structured`` is the GPU path for 2:4 tickets.

>>> import torch, lottery as lt
>>> from lottery.pruning import prune_structured
>>> model = lt.build_model("lenet_300_100", (1, 28, 28), 10)
>>> mask = prune_structured(model, lt.Mask.ones_like(model), 0.5, "neuron", scope="layer")
>>> _ = mask.apply(model)
>>> state, units = physical_tensors(model, mask)
>>> tuple(state["fc1.weight"].shape), tuple(state["fc2.weight"].shape), tuple(state["fc3.weight"].shape)
((150, 784), (50, 150), (10, 50))
>>> small = shrink_to(lt.build_model("lenet_300_100", (1, 28, 28), 10), units)
>>> _ = small.load_state_dict(state)
>>> x = torch.randn(3, 1, 28, 28)
>>> bool((small.eval()(x) - model.eval()(x)).abs().max() <= 1e-5)
True
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import nn

from lottery.errors import ConfigError, CorruptFileError
from lottery.masks import Mask, default_prunable
from lottery.models.common import example_batch
from lottery.pruning.units import UnitGroup, unit_groups, unit_view


def removable(groups: list[UnitGroup], mask: Mask) -> dict[str, torch.Tensor]:
    """``{group key: bool per unit, True = kept}``: a unit goes when every layer reading it has it pruned."""
    out = {}
    for g in groups:
        keep = torch.ones(g.size, dtype=torch.bool)
        if g.frozen is None and g.consumers:
            read = torch.zeros(g.size, dtype=torch.bool)
            for c in g.consumers:
                read |= unit_view(mask[c], g.size).any(0).any(-1).cpu()
            keep = read
            if not keep.any():  # a layer needs one unit to pass anything on; keep the first
                keep[0] = True
        out[g.key] = keep
    return out


def _resize(model: nn.Module, groups: list[UnitGroup], kept: Mapping[str, torch.Tensor]) -> nn.Module:
    """Cut ``model`` (in place) down to the ``kept`` unit indices of each group; returns it."""
    with torch.no_grad():
        for g in groups:
            idx = kept.get(g.key)
            if idx is None or len(idx) == g.size:
                continue
            for w in g.producers:
                module = model.get_submodule(w.rpartition(".")[0])
                module.weight = nn.Parameter(module.weight[idx].clone())
                if module.bias is not None:
                    module.bias = nn.Parameter(module.bias[idx].clone())
                _set_width(module, "out", len(idx))
            for name in g.norms:
                bn = model.get_submodule(name)
                for attr in ("weight", "bias"):
                    if getattr(bn, attr) is not None:
                        setattr(bn, attr, nn.Parameter(getattr(bn, attr)[idx].clone()))
                for attr in ("running_mean", "running_var"):
                    if getattr(bn, attr) is not None:
                        setattr(bn, attr, getattr(bn, attr)[idx].clone())
                bn.num_features = len(idx)
            for c in g.consumers:
                module = model.get_submodule(c.rpartition(".")[0])
                w = module.weight
                cut = unit_view(w, g.size)[:, idx]
                shape = (w.shape[0], cut.shape[1] * cut.shape[2]) if isinstance(module, nn.Linear) else \
                    (w.shape[0], len(idx), *w.shape[2:])
                module.weight = nn.Parameter(cut.reshape(shape).clone())
                _set_width(module, "in", shape[1])
    return model


def _set_width(module: nn.Module, side: str, n: int) -> None:
    if isinstance(module, nn.Linear):
        setattr(module, f"{side}_features", n)
    else:
        setattr(module, f"{side}_channels", n)


def physical_tensors(model: nn.Module, mask: Mask) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """The state dict of the smaller network (masked weights, dropped units cut out) and ``{group key: kept unit
    indices}`` for the header; ``model`` is left as it is."""
    mask.check_fits(model)
    small = copy.deepcopy(model).cpu()
    mask = mask.to("cpu")
    mask.apply(small)
    groups = unit_groups(small, list(mask))
    kept = {k: keep.nonzero().squeeze(1) for k, keep in removable(groups, mask).items()}
    _resize(small, groups, kept)
    state = {k: v.detach().contiguous() for k, v in small.state_dict().items()}
    return state, {k: idx.tolist() for k, idx in kept.items() if len(idx) < _size(groups, k)}


def check_physical(model: nn.Module, mask: Mask, state: dict[str, torch.Tensor], units: Mapping[str, list[int]],
                   input_shape, batch: int = 4) -> None:
    """The smaller network, rebuilt as ``load_exported`` rebuilds it, gives the masked ticket's outputs on a seeded
    batch (eval mode, up to float rounding); otherwise a ConfigError: this ticket cannot be written physically."""
    ticket = copy.deepcopy(model).cpu().eval()
    mask.to("cpu").apply(ticket)
    x = example_batch(model, input_shape, batch, torch.Generator().manual_seed(0))
    try:
        small = shrink_to(copy.deepcopy(model).cpu(), units)
        small.load_state_dict(state)
        with torch.no_grad():
            want, got = ticket(x), small.eval()(x)
        gap = float((got - want).abs().max())
        why = None if gap <= 1e-4 * (1 + float(want.abs().max())) else f"outputs differ by up to {gap:.3g}"
    except (RuntimeError, ValueError) as e:  # a shape that no longer fits: the cut units are still read somewhere
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if why is not None:
        raise ConfigError(f"the smaller network does not compute this ticket's outputs ({why}): its units are used "
                          "in a way the cut does not follow; export it with --format csr or bitmask")


def _size(groups: list[UnitGroup], key: str) -> int:
    return next(g.size for g in groups if g.key == key)


def shrink_to(model: nn.Module, units: Mapping[str, list[int]]) -> nn.Module:
    """A freshly built full ``model`` (in place) resized to the shapes of an export's ``units`` (weights are
    placeholders until the export's state is loaded)."""
    groups = unit_groups(model, default_prunable(model))
    known = {g.key: g for g in groups}
    bad = [k for k in units if k not in known or not all(isinstance(i, int) and 0 <= i < known[k].size
                                                         for i in units[k]) or not units[k]]
    if bad:
        raise CorruptFileError(f"the export's units for '{bad[0]}' do not fit model {type(model).__name__}; "
                               "export the ticket again")
    return _resize(model, groups, {k: torch.tensor(v, dtype=torch.long) for k, v in units.items()})


def to_semi_structured(model: nn.Module) -> nn.Module:
    """Every 2:4-sparse Linear weight of a CUDA half/bfloat16 ``model`` (in place) as a semi-structured sparse
    tensor, which sparse tensor cores multiply. Not run by the tests here (no GPU): a CPU has no such kernels,
    and an n:m ticket runs dense on it."""
    from torch.sparse import to_sparse_semi_structured

    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and w is not None and w.is_cuda and _is_2_4(w):
            module.weight = nn.Parameter(to_sparse_semi_structured(w.detach()), requires_grad=False)
    return model


def _is_2_4(w: torch.Tensor) -> bool:
    return w.shape[1] % 4 == 0 and bool(((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all())
