"""Kept for compatibility: budgets (``kept_counts``, ``prune_to_counts``) live in ``lottery.pruning.budgets``.

Older code imports these names from ``lottery.prune_schedule``; new code should import from ``lottery.pruning``.
"""
from lottery.pruning.budgets import Group, kept_counts, prune_to_counts  # noqa: F401
