"""Kept for compatibility: SNIP, GraSP and SynFlow live in ``lottery.pruning.saliency``.

Older code imports these names from ``lottery.pruners_init``; new code should import from ``lottery.pruning``.
"""
from lottery.pruning.saliency import (GRASP_TEMPERATURE, SCORE_BATCH, SYNFLOW_ROUNDS,  # noqa: F401
                                      grasp_scores, prune_synflow, snip_scores, synflow_scores)
from lottery.pruning.schedules import prune_iteratively  # noqa: F401
