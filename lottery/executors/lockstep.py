"""A grid's IMP trunks in lockstep, their training runs in fused passes.

``Experiment.levels()`` (the engine's level loop) pauses at every level that has runs to train (a ``Pending``: the
ticket, then its controls). ``train_ahead`` (lottery/drivers/imp.py) trains those of any number of Pendings that
can share passes in the fused passes of at most ``pack`` networks the one scheduler makes (lottery/passes.py);
resumed, each experiment records them (and trains alone what was not fused) exactly as it would have alone. ``run_lockstep`` advances many experiments — the (init variant, seed) trunks of
``compare-inits`` — level by level, fusing across them: with 2 controls, a level of 8 trunks is 24 networks, where
one trunk alone fills at most 3.

Each trunk stays an ordinary run directory, locked while open and written after every fused pass, so a kill
loses that pass only and the next start resumes every trunk where it stopped. A trunk that diverges or is
exhausted simply stops yielding; the others go on. Results equal the unpacked runs up to float rounding
(lottery/fused.py; tests/test_lockstep.py).
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Callable, Hashable

from lottery.config import Config
from lottery.drivers.imp import open_experiment, train_ahead
from lottery.storage.rundir import RunLockedError
from lottery.session import data_key, load_data


def run_lockstep(configs: dict[Hashable, Config], pack: int, *, datasets: dict | None = None, progress: bool = False,
                 log: Callable[[str], None] | None = None,
                 on_round: Callable[[int], None] | None = None) -> dict[Hashable, dict]:
    """Run (or resume) the IMP experiment of every config (key -> Config) in lockstep: each round, every trunk's
    pending runs of its next level are trained together (``train_ahead``), then each trunk records and prunes.
    One data set is loaded per ``data_key`` and shared (``datasets``: data_key -> data set the caller loaded
    already). Returns key -> results.json's content, without the runs another process held when they were opened.
    ``on_round(n)`` is called after each round with the number of trunks that finished a level in it."""
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
