"""The one scheduler of fused passes: which training runs may share a pass, and the passes they train in.

A fused pass trains K networks of one architecture together (lottery/fused.py: the same results up to float
rounding). Every caller that trains several runs goes through here: the IMP levels of ``lottery run`` and the
lockstep trunks of compare-inits (``train_ahead``, lottery/drivers/imp.py), ``Session.train_many`` (pruning at
init, transfer) and the stability study's two copies. ``pass_key`` is the one rule for sharing a pass; ``passes``
splits runs into passes of at most ``pack``; ``train_passes`` trains them through the runs' sessions.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from lottery.fused import even_passes, refusal
from lottery.masks import Mask


@dataclass
class Run:
    """One training run to schedule. ``session``: its model, data and config (a Session). ``prepare()`` gives its
    start state and mask when its pass begins (a fresh init is drawn then, not held for the rest); ``desc`` labels
    it, ``point`` is the crash point of its steps when it trains alone, ``seed`` its data order (None: the config's),
    ``steps`` a shorter budget (None: the config's). ``alone``: the run cannot share a pass whatever the others are
    (IMP: a late start, a snapshot or a step hook mid-run). ``tag`` is the caller's; ``mask`` is set by ``prepare``."""

    session: Any
    prepare: Callable[[], tuple[dict, Mask]]
    desc: str
    point: str | None = None
    seed: int | None = None
    steps: int | None = None
    alone: bool = False
    tag: Any = None
    mask: Mask | None = None


def pass_key(run: Run) -> Hashable | None:
    """Runs with equal keys may share a fused pass: the same loaded data, the same data, model and training sections
    (``Config.fuse_key``) and the same budget; the init, mask and seed are each run's own. None: the run trains
    alone — marked so, several processes (torchrun splits batches instead), ``--steps auto`` (each run's budget is
    its trunk's own), or a model or data set a fused pass cannot take (``lottery.fused.refusal``)."""
    s = run.session
    if run.alone or s.dist.active or s.cfg.steps == "auto" or refusal(s.model, s.data, s.cfg) is not None:
        return None
    return id(s.data), s.cfg.fuse_key(), run.steps


def passes(runs: Sequence[Run], pack: int, log: Callable[[str], None] | None = None) -> list[list[Run]]:
    """``runs`` in the passes they train in: grouped by ``pass_key`` (in order of first appearance), each group split
    into the fewest passes of at most ``pack``, as even as possible (7 by 3: 2, 2, 3); a run that trains alone is a
    pass of one. A model that cannot be fused is said once, in one ``log`` line (default: stderr)."""
    groups: dict[Hashable, list[Run]] = {}
    refused: dict[int, str] = {}
    for i, run in enumerate(runs):
        key = pass_key(run) if pack > 1 else None
        if key is None and pack > 1 and len(runs) > 1 and not run.alone:
            why = refusal(run.session.model, run.session.data, run.session.cfg)
            if why is not None:
                refused.setdefault(id(run.session), f"fused training: {type(run.session.model).__name__} cannot be "
                                                    f"fused ({why}); training its runs one after another")
        groups.setdefault(("alone", i) if key is None else key, []).append(run)
    for line in refused.values():
        (log or (lambda text: print(text, file=sys.stderr)))(line)
    return [chunk for group in groups.values() for chunk in even_passes(group, max(pack, 1))]


def train_passes(runs: Sequence[Run], pack: int, on_done: Callable[[Run, Any, Any], None], *,
                 label: Callable[[list[Run]], tuple[str, str]], progress: bool | None = None,
                 check_zeros: bool = True, alone: bool = True) -> None:
    """Train ``runs`` pass by pass (``passes``); ``on_done(run, model, result)`` records each as soon as its pass
    ends, so a kill loses one pass. A pass of several trains through the first run's ``Session.train_pass``
    (``label(chunk)`` gives its progress label and crash point); a pass of one through its own session's
    ``train_from`` — faster than one fused network — or, with ``alone=False``, not at all (the IMP level loop
    trains it as usual). ``check_zeros=False`` leaves the pruned-weights check to the caller (the IMP engine)."""
    for chunk in passes(runs, pack):
        if len(chunk) == 1 and not alone:
            continue
        starts = []
        for run in chunk:  # prepared when the pass begins, in order
            start, run.mask = run.prepare()
            starts.append(start)
        if len(chunk) == 1:
            run, s = chunk[0], chunk[0].session
            result = s.train_from(starts[0], run.mask, run.desc, point=run.point, seed=run.seed, steps=run.steps,
                                  check_zeros=check_zeros)
            on_done(run, s.model, result)
            continue
        desc, point = label(chunk)
        trained = chunk[0].session.train_pass(
            [(start, run.mask, run.desc) for start, run in zip(starts, chunk)],
            [run.session.cfg.seed if run.seed is None else run.seed for run in chunk], desc, point, progress,
            steps=chunk[0].steps, check_zeros=check_zeros)
        for run, (model, result) in zip(chunk, trained):
            on_done(run, model, result)
