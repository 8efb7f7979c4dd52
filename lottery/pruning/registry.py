"""``PRUNERS``: the one registry of pruning strategies, and the signature every strategy has.

A strategy is one function registered with ``@PRUNERS.register("name")``::

    def strategy(model, mask, fraction, *, scope="global", layer_fractions=None, seed=0, data=None,
                 min_kept=0) -> Mask

It returns a new mask without ``fraction`` of the weights ``mask`` keeps (per scope, exact counts; see
``lottery.pruning.budgets``), never mutating ``mask`` or ``model``. ``seed`` seeds any randomness, ``data`` is the
training set ``(x, y)`` for strategies that score on data, ``min_kept`` the per-layer collapse guard. The usual
body is scores → ``prune_by_scores``; IMP calls the strategy named by ``--strategy`` at every level.
"""
from lottery.registry import Registry

PRUNERS = Registry("pruning strategy")
