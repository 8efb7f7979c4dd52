"""What one IMP level does before anything trains: the settings the level loop reads (``ImpSettings``, built from
the config's pruning section), the mask a level prunes to (``level_mask``) and its random-mask control
(``random_control``). Pure functions of the settings, the previous mask and the weights: a lost mask is recomputed
bit for bit, and ``lottery transfer`` draws the very control the engine trained.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from lottery.config import CONTROLS, Config, parse_rewind
from lottery.masks import Mask
from lottery.pruning import PRUNERS, prune_structured, random_mask_like, random_structured_like
from lottery.pruning.budgets import kept_counts
from lottery.pruning.level_plan import scaled_layer_fractions
from lottery.train import derived_seed


@dataclass(frozen=True)
class ImpSettings:
    """What the level loop reads: how many levels, how each prunes, where runs rewind to, which controls."""

    levels: int
    prune_fraction: float
    scope: str = "global"
    layer_fractions: Mapping[str, float] = field(default_factory=dict)
    rewind: str = "init"  # init, lr or step:K
    controls: tuple = CONTROLS
    seed: int = 0
    strategy: str = "magnitude"
    min_kept: int = 0
    structure: str = "unstructured"  # or neuron, N:M (lottery/pruning/structure.py)
    structure_options: Mapping[str, Any] = field(default_factory=dict)
    # cheaper tickets (lottery/pruning/level_plan.py): early-bird searches, adaptive steps, where pruning ends
    early_bird: bool = False
    early_bird_epsilon: float = 0.1
    early_bird_window: int = 5
    prune_schedule: str = "fixed"
    target_density: float | None = None
    budget: float | None = None
    plan_seeds: tuple = ()  # adaptive steps judged over these seeds' runs together (lottery/drivers/plan_seeds.py)
    barrier_points: int = 0
    barrier_stop: float | None = None
    control_init: str = "dense"  # or sparse: the controls' weights scaled to their surviving fan-in

    @property
    def planned(self) -> bool:
        """Whether levels follow a plan other than the fixed one (their entries then record it)."""
        return self.early_bird or self.prune_schedule != "fixed" or self.target_density is not None \
            or self.budget is not None or self.barrier_points > 0

    @property
    def rewind_step(self) -> int | None:
        """K of ``rewind="step:K"``, else None."""
        return parse_rewind(self.rewind)

    @classmethod
    def from_config(cls, cfg: Config) -> "ImpSettings":
        """The settings of the config's pruning section and seed, validated there (``lottery run`` and
        ``find_tickets`` both build theirs here)."""
        return cls(levels=cfg.levels, prune_fraction=cfg.prune_fraction, scope=cfg.scope,
                   layer_fractions=cfg.layer_fractions, rewind=cfg.rewind, controls=tuple(cfg.controls), seed=cfg.seed,
                   strategy=cfg.strategy, min_kept=cfg.min_kept_per_layer, structure=cfg.structure,
                   structure_options=cfg.structure_options, control_init=cfg.control_init, early_bird=cfg.early_bird,
                   early_bird_epsilon=cfg.early_bird_epsilon, early_bird_window=cfg.early_bird_window,
                   prune_schedule=cfg.prune_schedule, target_density=cfg.target_density, budget=cfg.budget,
                   plan_seeds=tuple(cfg.plan_seeds), barrier_points=cfg.barrier_points, barrier_stop=cfg.barrier_stop)


def level_mask(settings: ImpSettings, model: nn.Module, previous: Mask, level: int, data=None,
               fraction: float | None = None) -> Mask:
    """Level ``level``'s mask: the strategy removes ``prune_fraction`` of what ``previous`` keeps, scored on the
    weights ``model`` holds (level ``level - 1``'s trained ones). Deterministic, so a lost mask is recomputed.
    Under a structure (neuron, N:M) whole units or groups go, checked exact (lottery/pruning/structure.py).
    ``fraction`` (a planned level's) replaces ``prune_fraction``; 0 keeps ``previous`` as it is."""
    fraction = settings.prune_fraction if fraction is None else fraction
    if fraction == 0:
        return previous.clone()
    layer_fractions = scaled_layer_fractions(dict(settings.layer_fractions), settings.prune_fraction, fraction)
    if settings.structure != "unstructured":
        return prune_structured(model, previous, fraction, settings.structure, settings.scope,
                                layer_fractions, dict(settings.structure_options))
    return PRUNERS.get(settings.strategy)(
        model, previous, fraction, scope=settings.scope, layer_fractions=layer_fractions,
        seed=derived_seed(settings.seed, "prune", level), data=data,
        **({"min_kept": settings.min_kept} if settings.min_kept else {}),
    )


def step_density(settings: ImpSettings, mask_of: Callable[[int], Mask]) -> Callable[[int, float], float | None]:
    """``density(parent, fraction)``: the density ``level_mask`` reaches pruning level ``parent``'s mask
    (``mask_of(parent)``, read once) by ``fraction``, from the exact counts every unstructured pruner keeps
    (lottery/pruning/budgets.py); None under a structure or ``min_kept``, whose counts are not known in advance.
    The level plan uses it to make a target density an upper bound."""
    masks: dict[int, Mask] = {}

    def density(parent: int, fraction: float) -> float | None:
        if settings.structure != "unstructured" or settings.min_kept:
            return None
        if parent not in masks:
            masks[parent] = mask_of(parent)
        mask = masks[parent]
        fractions = scaled_layer_fractions(dict(settings.layer_fractions), settings.prune_fraction, fraction)
        return sum(kept_counts(mask, fraction, settings.scope, fractions).values()) / mask.num_total

    return density


def random_control(model: nn.Module, mask: Mask, seed: int, level: int, structure: str = "unstructured",
                   options: Mapping[str, Any] | None = None, draw: int = 0) -> Mask:
    """Level ``level``'s random-mask control of ``mask`` in a run of ``seed``: a random mask of the same structure
    and per-layer counts, from the seed IMP derives for it. ``draw`` > 0: further independent draws (draw 0 is the
    one IMP trains), for a caller that wants several (``lottery transfer --control-draws``)."""
    seed = derived_seed(seed, "random_mask" if draw == 0 else f"random_mask/{draw}", level)
    if structure == "unstructured":
        return random_mask_like(mask, seed)
    return random_structured_like(model, mask, seed, structure, dict(options or {}))
