"""Structures: which masks IMP may produce. ``unstructured`` (any weights), ``neuron`` (whole units), ``n:m``.

A structured level is still scores → budget → exact top-k, only over units or over groups of ``m`` weights:

- ``neuron`` keeps or drops whole output units (rows of a Linear weight, output channels of a conv), the units
  coupled by a residual sum together, and with a unit also the columns that read it (``lottery.pruning.units``),
  so the ticket *is* a smaller dense network (``lottery.export_physical`` writes it). Units are ranked by the L2
  norm of their weights (``norm = "l1"``: L1) relative to their layer's mean (so units of layers with other
  fan-ins compare under ``scope = "global"``) and ``round(fraction * live units)`` go per scope group. With
  ``refill = true`` (Chen et al.'s IMP-Refill) the level first prunes unstructured by magnitude; each layer then
  keeps as many units as its surviving share of weights pays for, the units holding the largest surviving
  weights, re-grown whole. The output layer keeps all its units (one per class).
- ``n:m`` (e.g. ``2:4``): in every layer whose fan-in splits into groups of ``m`` consecutive weights (the rest
  stay dense), every group keeps the same ``k`` largest-magnitude weights; each level sets
  ``k = round(k_before * (1 - fraction))`` (at least one fewer); a level that would go below ``n`` from above it
  keeps ``n`` (the structure's limit; ``limit_note`` says so and IMP records it in the level's ``limited``), and
  one that starts at ``n`` raises :class:`StructureExhausted`, which ends IMP with status ``exhausted``. ``scope``
  does not apply (``k`` is per layer; ``layer_fractions`` still do).

Options equal to a structure's defaults are dropped (``structure_options``), so ``neuron`` and ``neuron`` with
``norm = "l2"`` are one run directory; a per-layer fraction that cannot act under a structure is refused
(``check_layer_fractions``) rather than ignored.

Every prune is checked: the returned mask satisfies its structure exactly (else ``StructureCheckError``). The
random-mask control of a structure (``random_structured_like``) is a random mask of the same structure with the
same number of kept units (or ``k``) in every layer, hence the same per-layer counts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from lottery.errors import ConfigError, StructureCheckError, StructureExhausted
from lottery.masks import Mask
from lottery.pruning.budgets import kept_counts, prune_to_counts
from lottery.pruning.magnitude import prune_magnitude
from lottery.pruning.random_masks import random_mask_like, random_scores
from lottery.pruning.units import UnitGroup, unit_groups, unit_view
from lottery.registry import Registry

STRUCTURES = Registry("structure")


@dataclass(frozen=True)
class Structure:
    """One entry: ``prune(model, mask, fraction, scope, layer_fractions, **options)``, ``random_like(model, mask,
    seed, **options)`` and ``check(model, mask, **options)``, and the options it takes (with defaults)."""

    prune: Callable[..., Mask]
    random_like: Callable[..., Mask]
    check: Callable[..., None]
    defaults: Mapping[str, object]


_NM = re.compile(r"^(\d+):(\d+)$")


def parse_structure(structure: object, options: Mapping | None = None) -> tuple[str, dict]:
    """``(registry name, options)`` for a ``structure`` setting (``"neuron"``, ``"2:4"``, ...); ConfigError if bad."""
    options = dict(options or {})
    if not isinstance(structure, str):
        raise ConfigError(f"structure must be unstructured, neuron or N:M (e.g. 2:4), got {structure!r}")
    m = _NM.match(structure)
    name = "n:m" if m else structure
    entry = STRUCTURES.get(name) if name != "n:m" or m else None
    if entry is None:
        raise ConfigError("structure n:m needs numbers: N:M with 1 <= N < M, e.g. 2:4")
    unknown = sorted(set(options) - set(entry.defaults))
    if unknown:
        takes = ", ".join(entry.defaults) or "none"
        raise ConfigError(f"structure {structure} has no option '{unknown[0]}'; its options: {takes}")
    opts = {**entry.defaults, **options}
    if m:
        n, mm = int(m.group(1)), int(m.group(2))
        if not 1 <= n < mm:
            raise ConfigError(f"structure {structure}: N:M needs 1 <= N < M, e.g. 2:4")
        opts.update(n=n, m=mm)
    if "norm" in opts and opts["norm"] not in ("l1", "l2"):
        raise ConfigError(f"structure option norm must be l1 or l2, got {opts['norm']!r}")
    if "refill" in opts and not isinstance(opts["refill"], bool):
        raise ConfigError(f"structure option refill must be true or false, got {opts['refill']!r}")
    return name, opts


def structure_options(structure: object, options: Mapping | None) -> dict:
    """``options`` checked, without those equal to the structure's defaults: every spelling of one setting hashes
    alike, and a run without options keeps the hash it always had."""
    name, _ = parse_structure(structure, options)
    defaults = STRUCTURES[name].defaults
    return {k: v for k, v in dict(options or {}).items() if v != defaults[k]}


def check_layer_fractions(model: nn.Module, structure: str, options: Mapping | None,
                          layer_fractions: Mapping[str, float]) -> None:
    """Refuse a per-layer fraction that cannot act under ``structure`` (it would change nothing, silently): under
    neuron one on a layer whose units are never dropped, or two different ones on layers dropped together; under
    n:m one on a layer whose fan-in does not split into groups of m."""
    name, opts = parse_structure(structure, options)
    if not layer_fractions or name == "unstructured":
        return
    ones = Mask.ones_like(model)
    if name == "n:m":
        dense = [k for k in layer_fractions if k in ones and k not in nm_layers(ones, opts["m"])]
        if dense:
            raise ConfigError(f"layer_fractions['{dense[0]}'] cannot act under structure {structure}: its fan-in does "
                              f"not split into groups of {opts['m']}, so it stays dense; remove it")
        return
    for g in unit_groups(model, list(ones)):
        given = {w: layer_fractions[w] for w in g.producers if w in layer_fractions}
        if given and g.frozen is not None:
            raise ConfigError(f"layer_fractions['{next(iter(given))}'] cannot act under structure neuron: the layer's "
                              f"units are never dropped ({g.frozen}); remove it")
        if len(set(given.values())) > 1:
            raise ConfigError(f"layer_fractions give {' and '.join(given)} different fractions, but structure neuron "
                              "drops their units together (a residual sum couples them); give them one fraction")


def check_structured_config(structure: object, options: Mapping | None, strategy: str = "magnitude",
                            min_kept_per_layer: int = 0) -> None:
    """A structured IMP setting: a known structure and options; neuron and n:m prune by magnitude only."""
    name, _ = parse_structure(structure, options)
    if name == "unstructured":
        return
    if strategy != "magnitude":
        raise ConfigError(f"structure {structure} prunes by magnitude; drop --strategy {strategy} or use "
                          "--structure unstructured")
    if min_kept_per_layer:
        raise ConfigError(f"structure {structure} keeps every layer alive already (at least one unit, or n of "
                          "every m); set min_kept_per_layer to 0")


def prune_structured(model: nn.Module, mask: Mask, fraction: float, structure: str = "unstructured",
                     scope: str = "global", layer_fractions: Mapping[str, float] | None = None,
                     options: Mapping | None = None) -> Mask:
    """One IMP level under ``structure`` by magnitude, checked to satisfy the structure exactly.

    >>> import torch, lottery as lt
    >>> model = lt.build_model("lenet_300_100", (1, 28, 28), 10)
    >>> mask = prune_structured(model, lt.Mask.ones_like(model), 0.2, "neuron", scope="layer")
    >>> [int(mask[k].any(1).sum()) for k in mask]  # units kept: 300 and 100 lose 20 %, the classes stay
    [240, 80, 10]
    """
    name, opts = parse_structure(structure, options)
    entry = STRUCTURES[name]
    new = entry.prune(model, mask, fraction, scope, dict(layer_fractions or {}), **opts)
    entry.check(model, new, **opts)
    return new


def random_structured_like(model: nn.Module, mask: Mask, seed: int = 0, structure: str = "unstructured",
                           options: Mapping | None = None) -> Mask:
    """The random-mask control: a random mask of ``structure`` with ``mask``'s per-layer counts."""
    name, opts = parse_structure(structure, options)
    entry = STRUCTURES[name]
    new = entry.random_like(model, mask, seed, **opts)
    entry.check(model, new, **opts)
    return new


def check_structure(model: nn.Module, mask: Mask, structure: str = "unstructured",
                    options: Mapping | None = None) -> None:
    """Raise StructureCheckError unless ``mask`` satisfies ``structure`` exactly."""
    name, opts = parse_structure(structure, options)
    STRUCTURES[name].check(model, mask, **opts)


# -- unstructured -------------------------------------------------------------------------------------------------
STRUCTURES.register("unstructured")(Structure(
    prune=lambda model, mask, fraction, scope, layer_fractions: prune_magnitude(model, mask, fraction, scope,
                                                                              layer_fractions),
    random_like=lambda model, mask, seed: random_mask_like(mask, seed),
    check=lambda model, mask: None,
    defaults={},
))


# -- neuron -------------------------------------------------------------------------------------------------------
def _groups(model: nn.Module, mask: Mask) -> list[UnitGroup]:
    """The groups whose units may be dropped."""
    return [g for g in unit_groups(model, list(mask)) if g.frozen is None]


def live_units(groups: list[UnitGroup], mask: Mask) -> dict[str, torch.Tensor]:
    """``{group key: bool per unit}``: a unit lives while any producer row of it keeps a weight."""
    out = {}
    for g in groups:
        alive = torch.zeros(g.size, dtype=torch.bool)
        for w in g.producers:
            alive |= mask[w].reshape(g.size, -1).any(1).cpu()
        out[g.key] = alive
    return out


def apply_units(groups: list[UnitGroup], units: Mapping[str, torch.Tensor], mask: Mask) -> Mask:
    """``mask`` without the dropped units' rows and without the consumer columns that read them."""
    out = {k: t.clone() for k, t in mask.items()}
    for g in groups:
        dropped = ~units[g.key]
        if not dropped.any():
            continue
        for w in g.producers:
            out[w].reshape(g.size, -1)[dropped.to(out[w].device)] = False
        for c in g.consumers:
            unit_view(out[c], g.size)[:, dropped.to(out[c].device)] = False
    return Mask(out)


def _unit_scores(g: UnitGroup, params, mask: Mask, norm: str, relative: bool) -> torch.Tensor:
    """The group's units' L2 (or L1) norms over the kept weights; ``relative``: divided by the mean over its live
    units, so units of layers with other fan-ins and init scales compare under ``scope = "global"``."""
    total = torch.zeros(g.size, dtype=torch.float64)
    for w in g.producers:
        rows = (params[w].detach() * mask[w]).reshape(g.size, -1).double().cpu()
        total += rows.square().sum(1) if norm == "l2" else rows.abs().sum(1)
    total = total.sqrt() if norm == "l2" else total
    live = live_units([g], mask)[g.key]
    if relative and live.any():
        total = total / total[live].mean().clamp(min=torch.finfo(torch.float64).tiny)
    return total


def _group_fractions(groups: list[UnitGroup], layer_fractions: Mapping[str, float]) -> dict[str, float]:
    """``layer_fractions`` keyed by group (an entry for any producer of a group sets it; others do not apply)."""
    out = {}
    for g in groups:
        given = [layer_fractions[w] for w in g.producers if w in layer_fractions]
        if given:
            out[g.key] = given[0]
    return out


def _prune_neuron(model, mask, fraction, scope, layer_fractions, *, norm="l2", refill=False) -> Mask:
    params = mask.check_fits(model)
    groups = _groups(model, mask)
    if not groups:
        raise ConfigError(f"structure neuron finds no units it may drop in {type(model).__name__} (every layer feeds "
                          "the output or a path units cannot follow); use unstructured or n:m")
    alive = Mask(live_units(groups, mask))
    if refill:  # unstructured first: each group keeps as many whole units as its surviving weights pay for
        survivors = prune_magnitude(model, mask, fraction, scope, layer_fractions)
        counts, scores = {}, {}
        for g in groups:
            before = sum(int(mask[w].sum()) for w in g.producers)
            after = sum(int(survivors[w].sum()) for w in g.producers)
            counts[(g.key,)] = max(1, round(int(alive[g.key].sum()) * after / max(1, before)))
            scores[g.key] = _unit_scores(g, params, survivors, norm, relative=False)
    else:
        counts = kept_counts(alive, fraction, scope, _group_fractions(groups, layer_fractions))
        scores = {g.key: _unit_scores(g, params, mask, norm, relative=True) for g in groups}
    with torch.no_grad():
        kept = prune_to_counts(scores, alive, counts, min_kept=1)
    return apply_units(groups, kept, mask)


def _random_neuron(model, mask, seed, *, norm="l2", refill=False) -> Mask:
    groups = _groups(model, mask)
    alive = live_units(groups, mask)
    every = Mask({k: torch.ones_like(t) for k, t in alive.items()})
    kept = prune_to_counts(random_scores(every, seed), every, {(k,): int(t.sum()) for k, t in alive.items()})
    return apply_units(groups, kept, Mask({k: torch.ones_like(t) for k, t in mask.items()}))


def _check_neuron(model, mask, *, norm="l2", refill=False) -> None:
    groups = unit_groups(model, list(mask))
    prunable = [g for g in groups if g.frozen is None]
    expected = apply_units(prunable, live_units(prunable, mask), Mask({k: torch.ones_like(t) for k, t in mask.items()}))
    for k in mask:
        if not torch.equal(mask[k], expected[k]):
            raise StructureCheckError(f"mask of {k} is not whole units: {int((mask[k] != expected[k]).sum())} "
                                      "weights differ from the units it keeps")
    for g in groups:
        if g.frozen is not None and not bool(live_units([g], mask)[g.key].all()):
            raise StructureCheckError(f"{g.key} dropped units although they cannot be dropped ({g.frozen})")


STRUCTURES.register("neuron")(Structure(_prune_neuron, _random_neuron, _check_neuron, {"norm": "l2", "refill": False}))


# -- n:m ----------------------------------------------------------------------------------------------------------
def nm_layers(mask: Mask, m: int) -> list[str]:
    """Layers whose fan-in splits into groups of ``m`` (the others stay dense under ``n:m``)."""
    return [k for k, t in mask.items() if t.dim() > 1 and t[0].numel() % m == 0]


def _per_group(t: torch.Tensor, m: int) -> torch.Tensor:
    return t.reshape(t.shape[0], -1, m)


def group_count(name: str, t: torch.Tensor, m: int) -> int:
    """The one number of kept weights of every group of ``m`` in a layer (StructureCheckError if they differ)."""
    counts = _per_group(t, m).sum(-1)
    k = int(counts.reshape(-1)[0])
    if not bool((counts == k).all()):
        raise StructureCheckError(f"{name} keeps {int(counts.min())} to {int(counts.max())} of its groups of {m}; "
                                  f"an n:m mask keeps the same number in every group")
    return k


def _keep_top(scores: torch.Tensor, m: int, k: int) -> torch.Tensor:
    """Flags of the ``k`` highest scores of every group of ``m`` (ties: the earlier position)."""
    v = _per_group(scores, m)
    order = torch.sort(v, dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(v, dtype=torch.bool).scatter_(-1, order, True).reshape(scores.shape)


def _nm_names(mask: Mask, m: int) -> list[str]:
    names = nm_layers(mask, m)
    if not names:
        raise ConfigError(f"no prunable layer has a fan-in divisible by {m}; pick another n:m or structure")
    return names


def _nm_after(before: int, fraction: float) -> int:
    """Weights of every group a level keeps before the structure's limit: ``round(before * (1 - fraction))``, at
    least one fewer."""
    after = round(before * (1 - fraction))
    return before - 1 if fraction > 0 and after >= before else after


def limit_note(previous: Mask, fraction: float, structure: str, options: Mapping | None = None,
               layer_fractions: Mapping[str, float] | None = None) -> str | None:
    """Why a level pruned less than ``fraction`` of ``previous``: the layers an n:m level stopped at the structure's
    limit (n of every m), or None."""
    name, opts = parse_structure(structure, options)
    if name != "n:m":
        return None
    n, m, lf = opts["n"], opts["m"], dict(layer_fractions or {})
    short = {k: _nm_after(before, lf.get(k, fraction)) for k in _nm_names(previous, m)
             if _nm_after(before := group_count(k, previous[k], m), lf.get(k, fraction)) < n < before}
    if not short:
        return None
    k, wanted = next(iter(short.items()))
    return (f"{', '.join(short)} kept {n} of every {m} weights, the limit of {n}:{m} (prune fraction "
            f"{lf.get(k, fraction)} would keep {wanted} of {m} in {k})")


def _prune_nm(model, mask, fraction, scope, layer_fractions, *, n, m) -> Mask:
    params = mask.check_fits(model)
    out = {k: t.clone() for k, t in mask.items()}
    for k in _nm_names(mask, m):
        before = group_count(k, mask[k], m)
        after = _nm_after(before, layer_fractions.get(k, fraction))
        if after < n <= before - 1:  # from above the limit: stop at it (limit_note says so)
            after = n
        if after < n:
            raise StructureExhausted(f"{k} would keep {after} of every {m} weights, below {n}:{m} "
                                     f"(it keeps {before}:{m} now)")
        scores = torch.where(mask[k], params[k].detach().abs(), -1.0)
        out[k] = _keep_top(scores, m, after)
    return Mask(out)


def _random_nm(model, mask, seed, *, n, m) -> Mask:
    scores = random_scores(mask, seed)
    out = {k: torch.ones_like(t) for k, t in mask.items()}
    for k in _nm_names(mask, m):
        out[k] = _keep_top(scores[k], m, group_count(k, mask[k], m))
    return Mask(out)


def _check_nm(model, mask, *, n, m) -> None:
    names = set(_nm_names(mask, m))
    for k, t in mask.items():
        if k not in names:
            if not bool(t.all()):
                raise StructureCheckError(f"{k} cannot hold {n}:{m} groups but is pruned")
            continue
        count = group_count(k, t, m)
        if count < n:
            raise StructureCheckError(f"{k} keeps {count} of every {m} weights, below {n}:{m}")


STRUCTURES.register("n:m")(Structure(_prune_nm, _random_nm, _check_nm, {}))
