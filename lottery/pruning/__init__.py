"""Pruning: strategies score the weights, budgets turn fractions into counts per group, top-k keeps them.

- ``registry``: ``PRUNERS`` and the signature of a strategy (adding one is one registered function).
- ``topk``: the exact selection kernel (every float dtype, ties broken by position).
- ``budgets``: scopes and groups, fractions → counts, ``prune_to_counts``, ``prune_by_scores``, ``min_kept``.
- ``schedules``: multi-step pruning on exact counts (SynFlow's rounds, gradual pruning's cubic schedule).
- ``structure``: ``STRUCTURES`` (unstructured, neuron, n:m): masks of whole units or n:m groups, their random
  controls and exact checks; ``units``: which layers' units are coupled (from the model's torch.fx graph).
- strategies: ``magnitude`` (magnitude, magnitude_init), ``random_masks`` (random, the random-mask control),
  ``saliency`` (snip, grasp, synflow). Importing this package registers all of them.
"""
from lottery.pruning.registry import PRUNERS
from lottery.pruning.budgets import (SCOPES, check_fraction, collapsed_layers, kept_counts, prune_by_scores,
                                     prune_to_counts, scope_groups)
from lottery.pruning.schedules import cubic_sparsity, prune_iteratively
from lottery.pruning.magnitude import prune_magnitude
from lottery.pruning.random_masks import prune_random, random_mask_like
from lottery.pruning.saliency import grasp_scores, prune_synflow, snip_scores, synflow_scores
from lottery.pruning.structure import (STRUCTURES, check_structure, check_structured_config, parse_structure,
                                       prune_structured, random_structured_like)

__all__ = ["PRUNERS", "SCOPES", "STRUCTURES", "check_fraction", "check_structure", "check_structured_config",
           "collapsed_layers", "cubic_sparsity", "grasp_scores", "kept_counts", "parse_structure", "prune_by_scores",
           "prune_iteratively", "prune_magnitude", "prune_random", "prune_structured", "prune_synflow",
           "prune_to_counts", "random_mask_like", "random_structured_like", "scope_groups", "snip_scores",
           "synflow_scores"]
