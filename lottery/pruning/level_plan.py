"""Which level IMP trains next: the level it prunes from, how much it removes, and whether it is a mask search.

The fixed schedule (the default) prunes ``prune_fraction`` of level L-1's mask at every level L up to ``levels``:
nothing here changes a run that sets none of the options below. The options make IMP cheaper:

- **adaptive** steps: while levels match dense, each level removes two levels' worth (a keep fraction of
  (1 - f)² instead of 1 - f); once one falls short, the next starts again from the deepest matching level and goes
  halfway (in log density) to the shallowest level that fell short, halving the step each time it misses; IMP
  ends at the target density or when the step has shrunk below half of ``prune_fraction`` (the frontier is then
  between the deepest matching level and the shallowest one that fell short). Whether a level matches is decided
  with ``lottery.stats``' verdict (paired by seed, 95 % t interval, tolerance) over every seed that trained it:
  a run alone (one run directory, one seed) uses the one-seed rule, ticket − dense ≥ −tolerance; runs started
  together (``plan_seeds``: ``lottery run --seeds 0,1,2``, ``lottery budget``; lottery/drivers/plan_seeds.py)
  advance level by level and hand ``plan_level`` each other's entries (``siblings``), so every level is judged by
  the verdict over all the seeds and every seed trains the same plan. Each judgement is recorded with the rule
  and the seeds (``previous_level`` in the next level's entry; ``last_level`` in results when pruning ends).
- **early-bird** levels (lottery/pruning/early_bird.py): every level after the dense one stops once its mask has
  stabilised — a mask search with no reported accuracy. Its match is judged on what it has: validation accuracy
  at the stop step against dense's at that same step. When pruning ends, one more level trains the deepest
  (matching) searched mask fully from the rewind state (``prune_fraction`` 0): that is the reported ticket.
- a **target density** is an upper bound on the density of the levels it ends at: the last step is the smallest
  that reaches it, found on the exact per-group counts the pruner keeps (``density_after``), so per-layer
  fractions (an output layer pruned at its own, smaller rate) cannot leave the ticket above it; where the counts
  are not known in advance (a structure, ``min_kept``) the step is the one over all weights, within 2 %.
- a **budget** in dense trainings (costs from ``lottery.stats.run_costs``, counted with the steps actually
  trained; with several seeds, the most any seed spent) and a **barrier** threshold (with several seeds, their
  mean barrier) end pruning early.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from lottery import stats
from lottery.errors import ConfigError
from lottery.pruning.budgets import check_fraction
from lottery.pruning.early_bird import check_early_bird

PRUNE_SCHEDULES = ("fixed", "adaptive")
METRIC = "early_stop"  # what the adaptive schedule compares: test accuracy at the early-stop step
SHRINK_FLOOR = 0.5  # adaptive: a step smaller than this share of prune_fraction means the frontier is found
SEARCH_GUESS = 0.25  # budget: cost of an early-bird search before one has been measured, in dense trainings


class Waiting(str):
    """Why a level cannot be planned yet: a seed judged together with this run has not finished the level before
    it (lottery/drivers/plan_seeds.py). The level loop then returns, its run still ``running``."""


class PlanEnd(str):
    """Why pruning ends (a string, as ``results["plan_end"]``), with the last level's judgement (``judged``)."""

    judged: dict | None = None


def end_record(ends: str) -> dict:
    """What results.json keeps of the plan's end: ``plan_end`` and, under adaptive steps, ``last_level`` (how the
    last level trained was judged: matched, the rule, the seeds)."""
    judged = getattr(ends, "judged", None)
    return {"plan_end": str(ends), **({"last_level": judged} if judged else {})}


@dataclass(frozen=True)
class LevelPlan:
    """Level L's plan: prune ``fraction`` of level ``parent``'s mask, scored on its trained weights (0: the parent's
    mask trained again); ``search``: an early-bird mask search. ``judged`` says how the previous level was judged
    (adaptive). ``stop`` (on the plan that ends IMP, instead of a level) says why it ends."""

    parent: int | None
    fraction: float
    search: bool = False
    judged: dict | None = None

    def record(self) -> dict:
        """What the level's results entry keeps of its plan."""
        out = {"parent": self.parent, "prune_fraction": self.fraction}
        if self.search:
            out["search"] = True
        if self.judged:
            out["previous_level"] = self.judged
        return out


def check_level_plan(cfg) -> None:
    """The options' bad values, each one line naming the fix."""
    if cfg.prune_schedule not in PRUNE_SCHEDULES:
        raise ConfigError(f"prune_schedule must be one of {', '.join(PRUNE_SCHEDULES)}, got '{cfg.prune_schedule}'")
    check_early_bird(cfg.early_bird_epsilon, cfg.early_bird_window)
    if not cfg.early_bird and (cfg.early_bird_epsilon, cfg.early_bird_window) != (0.1, 5):
        raise ConfigError("early_bird_epsilon and early_bird_window are early-bird settings; add --early-bird "
                          "(early_bird = true) or drop them")
    if cfg.target_density is not None:
        check_fraction(cfg.target_density, "target_density")
    seeds = list(cfg.plan_seeds)
    if seeds and cfg.prune_schedule != "adaptive":
        raise ConfigError("plan_seeds judges adaptive steps over several seeds; add --prune-schedule adaptive or "
                          "drop it")
    if seeds and (len(seeds) < 2 or seeds != sorted(set(seeds)) or cfg.seed not in seeds
                  or any(isinstance(x, bool) or not isinstance(x, int) for x in seeds)):
        raise ConfigError(f"plan_seeds must be two or more distinct seeds in increasing order, this run's seed "
                          f"({cfg.seed}) among them, got {seeds}")
    if cfg.budget is not None and (isinstance(cfg.budget, bool) or not isinstance(cfg.budget, (int, float))
                                   or not 1 < cfg.budget < math.inf):
        raise ConfigError(f"budget must be a number of dense trainings > 1 (the dense run alone costs 1), got "
                          f"{cfg.budget!r}")
    points = cfg.barrier_points
    if isinstance(points, bool) or not isinstance(points, int) or points == 1 or points < 0:
        raise ConfigError(f"barrier_points must be 0 (off) or an integer >= 2 (both ends included), got {points!r}")
    if cfg.barrier_stop is not None:
        if isinstance(cfg.barrier_stop, bool) or not isinstance(cfg.barrier_stop, (int, float)) \
                or not 0 < cfg.barrier_stop < 1:
            raise ConfigError(f"barrier_stop must be an error in (0, 1), got {cfg.barrier_stop!r}")
        if not points:
            raise ConfigError("barrier_stop needs the barrier measured: add --barrier-points 5")


def refuse_early_bird(cfg, command: str) -> None:
    """A driver that trains no IMP levels cannot stop one early: --early-bird there is a one-line error."""
    if cfg.early_bird:
        raise ConfigError(f"{command} trains no IMP levels, so nothing can stop early: --early-bird applies to "
                          "lottery run, compare-inits and budget; drop it")


def matches(ticket: dict, dense: dict, tolerance: float = stats.TOLERANCE) -> tuple[bool, str]:
    """Whether a level matches dense, from its values by seed (``{seed: value}``), and the rule used: the verdict
    of lottery/stats.py with two or more seeds, else the one-seed rule ticket − dense ≥ −tolerance."""
    diff = stats.paired_interval(ticket, dense)
    verdict = stats.verdict(diff, tolerance)
    if verdict == "one seed":
        return diff["mean"] >= -tolerance, f"one seed: ticket − dense >= −{100 * tolerance:g} points"
    return verdict in ("beats", "matches"), f"verdict over {diff['n']} seeds: {verdict}"


def judge_level(runs: dict, level: int) -> dict:
    """How level ``level`` compares with dense over the seeds that trained it (``runs``: seed -> {level: entry}):
    ``{"level", "matched", "rule", "difference", "seeds"}``, ``difference`` the mean over the seeds. The rule is
    ``matches``': the verdict of lottery/stats.py with two or more seeds, else the one-seed rule. A search level has
    no test accuracy: its validation accuracy at the stop step is compared with dense's at that step, seed by seed."""
    have = {seed: r for seed, r in sorted(runs.items()) if level in r and 0 in r}
    out = {"level": level, "seeds": sorted(have)}
    if not have or any(r[level].get("status") != "ok" for r in have.values()):
        return {**out, "matched": False, "rule": "diverged", "difference": None}
    ticket, base = {}, {}
    for seed, r in have.items():
        entry, dense = r[level], r[0]
        if entry.get("search"):
            step, ticket[seed] = entry["curve"][-1][0], entry["curve"][-1][2]
            at = max((c for c in dense.get("curve", []) if c[0] <= step), key=lambda c: c[0], default=None)
            base[seed] = at[2] if at else None
            what = "validation accuracy at the search's stop step vs dense's at that step"
        else:
            ticket[seed] = stats.arm_value(entry, "ticket", METRIC)
            base[seed] = stats.arm_value(dense, "ticket", METRIC)
            what = stats.METRIC_NAMES[METRIC]
    if None in ticket.values() or None in base.values():
        return {**out, "matched": False, "rule": f"no value to compare ({what})", "difference": None}
    ok, rule = matches(ticket, base)
    return {**out, "matched": ok, "rule": f"{rule}; {what}",
            "difference": sum(ticket[k] - base[k] for k in ticket) / len(ticket)}


def judge(entry: dict, dense: dict, seed: int = 0) -> dict:
    """One run's level judged alone (the one-seed rule): ``judge_level`` of that seed."""
    return judge_level({seed: {0: dense, entry["level"]: entry}}, entry["level"])


def grow(fraction: float) -> float:
    """Two levels' worth of ``fraction`` in one: keep (1 - f)² of the weights."""
    return 1 - (1 - fraction) ** 2


def plan_level(s, entries: list[dict], level: int, siblings: dict | None = None,
               density_after=None) -> LevelPlan | str:
    """Level ``level``'s plan from the finished entries of the levels before it (``s``: the engine's ImpSettings),
    or the reason IMP ends there (a :class:`PlanEnd`). ``siblings``: the entries of the other seeds judged
    together with this run (seed -> entries; lottery/drivers/plan_seeds.py), each level then judged by the verdict
    over all of them; ``density_after(parent, fraction)``: the density pruning level ``parent`` by ``fraction``
    reaches (None where unknown). Deterministic in its inputs, so a resumed run plans the same levels."""
    if level == 0:
        return LevelPlan(None, 0.0)
    by_level = {e["level"]: e for e in entries}
    runs = {**{seed: {e["level"]: e for e in es if e["level"] < level} for seed, es in (siblings or {}).items()},
            s.seed: by_level}
    last, dense = by_level[level - 1], by_level[0]
    if last.get("prune_fraction") == 0:  # the final retraining of a searched mask: nothing follows
        return PlanEnd("the deepest searched mask is trained fully")
    adaptive = s.prune_schedule == "adaptive"
    judged = judge_level(runs, level - 1) if adaptive and level > 1 else None
    parent, fraction = level - 1, s.prune_fraction
    if judged is not None:
        parent, fraction = _adaptive_step(entries, runs, judged, last)
    exact = s.target_density is not None and density_after is not None \
        and density_after(parent, s.prune_fraction) is not None
    stop = _stop(s, entries, runs, level, by_level[parent], fraction, exact)
    if stop is None and s.target_density is not None:  # do not overshoot the target: it is an upper bound
        fraction = min(fraction, _to_target(s.target_density, by_level[parent], density_after if exact else None))
    if stop is None:
        return LevelPlan(parent, fraction, s.early_bird, judged)
    if s.early_bird:  # the reported ticket: the deepest matching searched mask, trained fully
        searched = [e for e in entries if e.get("search") and e["status"] == "ok"]
        if adaptive:
            searched = [e for e in searched if judge_level(runs, e["level"])["matched"]] or searched
        if searched:
            deepest = min(searched, key=lambda e: (e["density"], -e["level"]))
            return LevelPlan(deepest["level"], 0.0, False, judged)
    end = PlanEnd(stop)
    end.judged = judged
    return end


def _to_target(target: float, parent: dict, density_after=None) -> float:
    """The smallest step from ``parent`` whose density is at most ``target``: bisected on the exact counts when
    ``density_after`` knows them, else the step over all weights (per-layer fractions may then overshoot a bit)."""
    plain = 1 - target / parent["density"]
    if density_after is None:
        return plain
    lo, hi = 0.0, 1 - 1e-12  # density_after(lo) > target >= density_after(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if density_after(parent["level"], mid) <= target else (mid, hi)
    return hi


def _adaptive_step(entries: list[dict], runs: dict, judged: dict, last: dict) -> tuple[int, float]:
    """(parent, fraction): prune from the deepest matching level (dense when none matched); two levels' worth
    while nothing below it has fallen short, else halfway (in log density) to the shallowest level that did."""
    dense = entries[0]
    verdicts = {e["level"]: (judged if e is last else judge_level(runs, e["level"]))["matched"] for e in entries[1:]}
    matched = [e for e in entries[1:] if verdicts[e["level"]]]
    parent = min(matched, key=lambda e: (e["density"], -e["level"])) if matched else dense
    short = [e["density"] for e in entries[1:] if not verdicts[e["level"]] and e["density"] < parent["density"]]
    if short:
        return parent["level"], 1 - math.sqrt(max(short) / parent["density"])
    return parent["level"], grow(last["prune_fraction"])


def _stop(s, entries: list[dict], runs: dict, level: int, parent: dict, fraction: float,
          exact: bool = False) -> str | None:
    """Why pruning ends before ``level``, or None. ``runs``: seed -> {level: entry}, this run's among them."""
    if level > s.levels:
        return f"{s.levels} levels trained"
    slack = 1 + 1e-9 if exact else 1.02  # without exact counts, per-layer rounding
    if s.target_density is not None and parent["density"] <= s.target_density * slack:
        return f"target density {s.target_density:g} reached"
    if s.prune_schedule == "adaptive" and fraction < SHRINK_FLOOR * s.prune_fraction:
        return (f"the frontier: between level {parent['level']} (matches) and the next step down, {fraction:.3g} "
                f"of its weights (< {SHRINK_FLOOR:g} x prune_fraction)")
    barriers = [b for b in ((r.get(level - 1, {}).get("barrier") or {}).get("barrier") for r in runs.values())
                if b is not None]
    barrier = sum(barriers) / len(barriers) if barriers else None
    if s.barrier_stop is not None and barrier is not None and barrier > s.barrier_stop:
        mean = f" (mean of {len(barriers)} seeds)" if len(barriers) > 1 else ""
        return f"level {entries[-1]['level']}'s barrier {barrier:.4f}{mean} exceeds {s.barrier_stop:g}"
    if s.budget is not None:
        spent = max(stats.run_costs({"levels": list(r.values())}).get(level - 1, {}).get("ticket", 0.0)
                    for r in runs.values())
        searches = [e["steps"] / (r[0].get("steps") or 1) for r in runs.values() for e in r.values()
                    if e.get("search") and e.get("steps")]
        next_cost = (sum(searches) / len(searches) if searches else SEARCH_GUESS) if s.early_bird else 1.0
        final = 1.0 if s.early_bird else 0.0  # the searched mask's full training still has to fit
        if spent + next_cost + final > s.budget:
            most = " (the most of any seed)" if len(runs) > 1 else ""
            return (f"budget: {spent:.2f} of {s.budget:g} dense trainings spent{most}, the next level would "
                    "exceed it")
    return None


def scaled_layer_fractions(layer_fractions: dict, base: float, fraction: float) -> dict:
    """Per-layer overrides scaled to a level's ``fraction``: the same number of ``base`` levels' worth in each layer
    (keep (1 - f_layer)^(log(1 - fraction) / log(1 - base)))."""
    if fraction == base or not layer_fractions:
        return dict(layer_fractions)
    power = math.log1p(-fraction) / math.log1p(-base)
    return {k: 1 - (1 - f) ** power for k, f in layer_fractions.items()}
