"""Fused passes over the pending training runs of one or many IMP experiments; a grid's trunks in lockstep.

``Experiment.levels()`` pauses at every level that has runs to train (a ``Pending``: the ticket, then its
controls). ``train_ahead`` trains the fusable ones of any number of Pendings in fused passes of at most ``pack``
networks (lottery/fused.py), grouping runs that share their data and every setting training reads; resumed, each
experiment records them (and trains alone what was not fused) exactly as it would have alone. So one experiment
with ``--pack`` trains a level's ticket and controls together, and ``run_lockstep`` advances many experiments —
the (init variant, seed) trunks of ``compare-inits`` — level by level, fusing across them: with 2 controls, a
level of 8 trunks is 24 networks, where one trunk alone fills at most 3.

Each trunk stays an ordinary run directory, locked while open and written after every fused pass, so a kill
loses that pass only and the next start resumes every trunk where it stopped. A trunk that diverges or is
exhausted simply stops yielding; the others go on. Results equal the unpacked runs up to float rounding
(lottery/fused.py; tests/test_lockstep.py).
"""
from __future__ import annotations

import copy
from contextlib import ExitStack, nullcontext
from typing import Callable, Hashable, Sequence

from lottery.config import Config
from lottery.testing import crash_progress
from lottery.reporting.progress import progress_bar
from lottery.rewind import rewind
from lottery.storage.rundir import RunLockedError
from lottery.session import check_pruned_zero, data_key, load_data

def train_ahead(pendings: Sequence, pack: int, progress: bool = False) -> None:
    """Train the fusable runs of ``pendings`` in fused passes of at most ``pack`` networks, as evenly split as
    possible; each result goes to its Pending's ``trained``. A run left alone in its group is not fused (the
    level loop trains it as usual: one fused network is slower than a plain run)."""
    groups: dict[tuple, list] = {}
    for p in pendings:
        exp = p.experiment
        for name in p.names:
            if exp.fusable(p.level, name):
                groups.setdefault((id(exp.data), exp.cfg.fuse_key()), []).append((p, name))
    from lottery.fused import even_passes

    for jobs in groups.values():
        for chunk in even_passes(jobs, pack):
            if len(chunk) > 1:
                _fused_pass(chunk, progress)


def _fused_pass(chunk: list, progress: bool) -> None:
    from lottery.fused import train_fused

    exps = [p.experiment for p, _ in chunk]
    arms = [p.experiment.arm(p.level, name) for p, name in chunk]
    models = [copy.deepcopy(e.model) for e in exps]
    for model, arm in zip(models, arms):
        rewind(model, arm.start, arm.mask)
    level = min(p.level for p, _ in chunk)
    trunks = len({id(e) for e in exps})
    desc = (f"level {level} {'+'.join(name for _, name in chunk)}" if trunks == 1
            else f"fused: {len(chunk)} runs of {trunks} trunks, level {level}")
    with progress_bar(exps[0].total_steps, desc) if progress else nullcontext() as bar:
        out = train_fused(models, exps[0].data, exps[0].cfg, [a.mask for a in arms], seeds=[e.cfg.seed for e in exps],
                          progress=crash_progress(bar, f"train:level{level}"))
    for (p, name), model, arm, result in zip(chunk, models, arms, out):
        if result.status == "ok":
            check_pruned_zero(model, arm.mask, f"level {p.level} {name}")
        p.trained[name] = (model, result, arm.mask)


def run_lockstep(configs: dict[Hashable, Config], pack: int, *, datasets: dict | None = None, progress: bool = False,
                 log: Callable[[str], None] | None = None,
                 on_round: Callable[[int], None] | None = None) -> dict[Hashable, dict]:
    """Run (or resume) the IMP experiment of every config (key -> Config) in lockstep: each round, every trunk's
    pending runs of its next level are trained together (``train_ahead``), then each trunk records and prunes.
    One data set is loaded per ``data_key`` and shared (``datasets``: data_key -> data set the caller loaded
    already). Returns key -> results.json's content, without the runs another process held when they were opened.
    ``on_round(n)`` is called after each round with the number of trunks that finished a level in it."""
    from lottery.drivers.imp import open_experiment

    datasets = dict(datasets or {})
    with ExitStack() as stack:
        experiments = {}
        for key, cfg in configs.items():
            data = datasets.get(data_key(cfg))
            if data is None:
                data = datasets[data_key(cfg)] = load_data(cfg)
            try:
                experiments[key] = stack.enter_context(open_experiment(cfg.replace(progress=False), data=data))
            except RunLockedError:  # another process trains it: left out here (compare-inits comes back to it)
                pass
        loops = {key: e.levels() for key, e in experiments.items()}
        pending = _advance(loops, loops)
        while pending:
            if log:
                levels = sorted({p.level for p in pending.values()})
                log(f"lockstep: {len(pending)} trunk(s) at level {'/'.join(map(str, levels))}, "
                    f"{sum(len(p.names) for p in pending.values())} training runs")
            train_ahead(list(pending.values()), pack, progress)
            advanced = len(pending)
            pending = _advance(loops, pending)
            if on_round:
                on_round(advanced)
        return {key: e.results for key, e in experiments.items()}


def _advance(loops: dict, keys) -> dict:
    """Each of ``keys``' level loops to its next Pending; a finished loop (done, diverged, exhausted) drops out."""
    out = {}
    for key in keys:
        p = next(loops[key], None)
        if p is not None:
            out[key] = p
    return out
