"""Experiment drivers: each builds on ``lottery.session.Session`` and owns one results file in a run directory.

- ``imp``: iterative magnitude pruning with rewinding and controls (``run_imp``, ``lottery run``);
- ``gradual``: gradual magnitude pruning during training (``gradual.json``);
- ``prune_at_init``: SNIP, GraSP, SynFlow, ... with the shuffle and reinit ablations (``prune_at_init.json``);
- ``stability``: linear mode connectivity of a level (``stability.json``);
- ``supermask``: accuracy of masked untrained networks (``supermask.json``);
- ``transfer``: a level's mask trained on other inits, raw, sign-aligned or unit-permuted (``transfer.json``);
- ``compare_inits``: IMP per init scheme and seed, one summary (its executors live in ``lottery.executors``);
- ``find_tickets``: IMP around your own model and training loop.
"""
