"""Kept for compatibility: the pruning code lives in ``lottery.pruning`` (strategies, budgets, top-k, schedules).

Older code imports these names from ``lottery.prune``; new code should import from ``lottery.pruning``.
"""
from lottery.pruning import (PRUNERS, SCOPES, check_fraction, collapsed_layers, prune_by_scores,  # noqa: F401
                             prune_magnitude, prune_random, random_mask_like)
