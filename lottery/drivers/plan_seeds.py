"""Adaptive steps judged over the seeds in the run: ``lottery run --seeds 0,1,2 --prune-schedule adaptive`` and
``lottery budget --seeds 3``.

Each seed stays an ordinary run directory. When the adaptive schedule runs on two or more seeds, their configs carry
``plan_seeds`` (the seeds, hashed: such a run never shares a directory with a one-seed one, whose levels were
judged by another rule), and each seed's engine reads the others' ``results.json`` before it plans a level
(``siblings_reader``). Level L is planned only once every seed has finished level L - 1; its plan — keep going
bigger or back off — then follows ``lottery.stats``' verdict over all the seeds' results at each level (paired by
seed, 95 % t interval, tolerance; lottery/pruning/level_plan.py ``judge_level``), the same for every seed, so every
seed trains the same plan. A seed that has to wait returns (status ``running``, ``waiting`` says for which seed) and
``run_together`` runs the seeds again, round after round — in turn, in lockstep or in worker processes, whichever
the caller uses — until none is waiting. What a seed records depends only on its own config and the other seeds'
finished levels, so a killed run resumes to the same plan and the same results, bit for bit.

A seed whose run ended before level L - 1 (diverged, or exhausted) no longer holds the others back: the levels
after it are judged over the seeds that trained them. ``find_tickets`` has no adaptive schedule, so
``find_tickets_over_seeds`` is not concerned.
"""
from __future__ import annotations

from typing import Callable

from lottery.config import Config
from lottery.errors import ConfigError
from lottery.pruning.level_plan import Waiting
from lottery.storage.atomic import load_json
from lottery.storage.rundir import RunDir

ENDED = ("complete", "diverged", "exhausted")


def together(cfg: Config, seeds) -> Config:
    """``cfg`` as each of ``seeds`` runs it: with ``plan_seeds`` under the adaptive schedule and two or more seeds,
    unchanged otherwise (a run alone keeps the one-seed rule). ``plan_seeds`` comes from the seeds run; a
    different one set by hand is a one-line error."""
    seeds = sorted(set(seeds))
    joint = cfg.prune_schedule == "adaptive" and len(seeds) > 1
    if cfg.plan_seeds and (not joint or list(cfg.plan_seeds) != seeds):
        raise ConfigError(f"plan_seeds is set from the seeds run together (--seeds {','.join(map(str, seeds))}); "
                          "drop it")
    return cfg.replace(plan_seeds=tuple(seeds)) if joint else cfg


def siblings_reader(cfg: Config) -> Callable[[int], dict | Waiting] | None:
    """For a run of ``cfg`` with ``plan_seeds``: ``siblings(level)``, the other seeds' entries before ``level``
    (seed -> entries) read from their run directories, or a Waiting while one of them, still running, has not
    finished level - 1. None without ``plan_seeds``."""
    if not cfg.plan_seeds:
        return None
    paths = {s: RunDir.path_for(cfg.replace(seed=s)) / "results.json" for s in cfg.plan_seeds if s != cfg.seed}

    def siblings(level: int) -> dict | Waiting:
        out = {}
        for seed, path in paths.items():
            results = load_json(path) if path.is_file() else {}
            entries = [e for e in results.get("levels", []) if e["level"] < level]
            if not any(e["level"] == level - 1 for e in entries) and results.get("status") not in ENDED:
                return Waiting(f"level {level} waits for seed {seed} to finish level {level - 1}")
            out[seed] = entries
        return out

    return siblings


def run_together(run_round: Callable[[], dict], results_of: Callable[[dict], dict] = lambda r: r,
                 log: Callable[[str], None] | None = None) -> dict:
    """``run_round()`` (every seed's run, each going as far as it can: key -> value, ``results_of(value)`` its
    results) again and again until no run is waiting; returns the last round's answer. A round in which no seed
    finished a level is an error (it would repeat forever)."""
    before = None
    while True:
        out = run_round()
        state = {k: (results_of(v).get("status"), len(results_of(v).get("levels", []))) for k, v in out.items()}
        waiting = {k: results_of(v).get("waiting") for k, v in out.items() if state[k][0] not in ENDED}
        if not waiting:
            return out
        if state == before:
            raise RuntimeError(f"the seeds judged together stopped advancing: {waiting}")
        if log:
            log("seeds judged together: " + "; ".join(f"{k}: {w}" for k, w in waiting.items()))
        before = state
