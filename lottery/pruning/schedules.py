"""Pruning in several steps that land on exact counts: SynFlow's rounds, gradual pruning's every-Δt steps.

A multi-step pruner keeps an exact number of weights per group at every step, and its last step keeps exactly
what one-shot ``prune_by_scores`` keeps for the same fraction, so densities are comparable across strategies:
each step is ``kept_counts`` of the *starting* mask at the step's fraction, then ``prune_to_counts``.
"""
from __future__ import annotations

from typing import Callable, Mapping

from lottery.errors import ConfigError
from lottery.masks import Mask
from lottery.pruning.budgets import check_fraction, check_min_kept, kept_counts, prune_to_counts

Scores = dict  # param name -> score tensor shaped like the weight
EXPONENTIAL_ROUNDS = 100  # SynFlow's default


def exponential_fraction(fraction: float, r: int, rounds: int) -> float:
    """The fraction of the start removed after round ``r`` of ``rounds`` when the density falls exponentially
    (``d^(r/rounds)``, ``d = 1 - fraction``); the last round is ``fraction`` itself, with no rounding."""
    return fraction if r == rounds else 1 - (1 - fraction) ** (r / rounds)


def prune_iteratively(score: Callable[[Mask], Scores], mask: Mask, fraction: float, scope: str = "global",
                      layer_fractions: Mapping[str, float] | None = None, rounds: int = EXPONENTIAL_ROUNDS,
                      min_kept: int = 0) -> Mask:
    """Prune in ``rounds`` steps, re-scoring (``score(current_mask)``) before each; the density of round r is
    ``d^(r/rounds)`` of the start per group, and the last round keeps exactly what one-shot pruning keeps."""
    fraction = check_fraction(fraction, "prune fraction")
    check_min_kept(min_kept)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be an integer >= 1, got {rounds!r}")
    layer_fractions = dict(layer_fractions or {})
    current = mask
    for r in range(1, rounds + 1):
        counts = kept_counts(mask, exponential_fraction(fraction, r, rounds), scope,
                             {k: exponential_fraction(f, r, rounds) for k, f in layer_fractions.items()})
        current = prune_to_counts(score(current), current, counts, min_kept)
    return current


def cubic_sparsity(step: int, begin_step: int, end_step: int, initial_density: float, final_density: float) -> float:
    """Zhu & Gupta's cubic schedule: ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3``, ``t`` clamped to
    ``[t0, t1]`` (fast at first, while there is much redundancy, then slower)."""
    s_i, s_f = 1 - initial_density, 1 - final_density
    t = min(max(step, begin_step), end_step)
    return s_f + (s_i - s_f) * (1 - (t - begin_step) / (end_step - begin_step)) ** 3
