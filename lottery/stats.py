"""The statistics every table, plot, summary and DataFrame of lottery reports: intervals over seeds, the verdict
rule, and the cost of a run. Nothing else computes a verdict; everything reads it from here.

**Intervals.** With n seeds, a mean is shown with its 95 % Student-t interval, mean ± t(0.975, n − 1)·sd/√n.
A comparison of two arms (ticket − dense, ticket − best control) is *paired by seed*: d_s = a_s − b_s, and the
interval is the t interval of the d_s (the seeds share their data order and, for ticket vs dense, their init, so
pairing removes the between-seed spread).

**The verdict** of a level (ticket − dense, tolerance τ, default one point of accuracy):

- *beats*: the lower bound is above 0;
- *matches*: the lower bound is at least −τ;
- *below*: the upper bound is under −τ;
- *inconclusive*: otherwise (the interval straddles −τ; ``seeds_to_decide`` estimates how many seeds would
  likely settle it from the spread seen so far);
- *diverged*: a seed's ticket diverged at this level (it does not match);
- *one seed*: a single seed has no interval; the tables say so and how to get one (``--seeds 3``).

The *smallest matching density* is the density of the deepest level L such that every level 1..L beats or matches
dense. A dense network whose early-stop step falls in the last 10 % of its budget is still learning: every
comparison against it is flagged (``dense_still_learning``).

**Cost** is counted in dense trainings: a training run of ``steps`` updates costs steps / (the dense run's steps)
— the compute a dense-hardware implementation spends, whatever the mask — and, where the run recorded them, its
mask-aware FLOPs (lottery/cost.py) over those of one dense training.
"""
from __future__ import annotations

import functools
import math
from typing import Iterable, Mapping, Sequence

LEVEL = 0.95  # the confidence of every interval lottery prints
TOLERANCE = 0.01  # default: a ticket within one point of accuracy of dense matches it
STILL_LEARNING = 0.9  # dense early-stops in the last 10 % of its budget: it has not finished learning
METRICS = {"early_stop": "early_stop_test_accuracy", "final": "test_accuracy"}
METRIC_NAMES = {"early_stop": "test accuracy at the early-stop step (minimum validation loss)",
                "final": "test accuracy of the weights at the final step"}
VERDICTS = ("beats", "matches", "inconclusive", "below", "diverged", "one seed", "no data")
MAX_SEEDS = 100  # seeds_to_decide looks no further


def mean_std(values: Iterable[float | None]) -> dict:
    """``{"mean", "std", "n"}`` of the finite values (sample std, ddof=1; 0 for one value; None for none).

    >>> mean_std([1.0, 3.0, None])["mean"], mean_std([])["mean"]
    (2.0, None)
    """
    xs = _finite(values)
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(xs)}


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not isinstance(v, bool) and math.isfinite(v)]


@functools.lru_cache(maxsize=None)
def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom (12.71 for df = 1)."""
    from scipy.stats import t  # scipy loads in ~0.3 s: only when an interval is computed

    return float(t.ppf((1 + level) / 2, df))


def interval(values: Iterable[float | None], level: float = LEVEL) -> dict:
    """Mean of the finite values with its ``level`` t interval: ``{"mean", "std", "n", "lo", "hi"}`` (``lo`` and
    ``hi`` None below two values).

    >>> r = interval([0.80, 0.82, 0.84])
    >>> round(r["mean"], 3), round(r["lo"], 4), round(r["hi"], 4)
    (0.82, 0.7703, 0.8697)
    """
    s = mean_std(values)
    if s["n"] < 2:
        return {**s, "lo": None, "hi": None}
    half = t_quantile(s["n"] - 1, level) * s["std"] / math.sqrt(s["n"])
    return {**s, "lo": s["mean"] - half, "hi": s["mean"] + half}


def paired_interval(a: Mapping | Sequence, b: Mapping | Sequence, level: float = LEVEL) -> dict:
    """The t interval of the differences a_s − b_s over the seeds both have a finite value for (mappings seed →
    value, or equal-length sequences in seed order), with ``seeds`` the seeds used.

    >>> r = paired_interval({0: 0.90, 1: 0.85, 2: 0.88}, {0: 0.89, 1: 0.83, 2: 0.88})
    >>> round(r["mean"], 4), r["n"], r["seeds"]
    (0.01, 3, [0, 1, 2])
    """
    if not isinstance(a, Mapping):
        a, b = dict(enumerate(a)), dict(enumerate(b))
    seeds = [s for s in a if s in b and _finite([a[s]]) and _finite([b[s]])]
    return {**interval([a[s] - b[s] for s in seeds], level), "seeds": seeds}


def welch_interval(a: Iterable[float | None], b: Iterable[float | None], level: float = LEVEL) -> dict:
    """The ``level`` interval of mean(a) − mean(b) for two independent groups (Welch: unequal variances,
    Welch–Satterthwaite degrees of freedom): two init schemes' dense networks, which share no draw to pair.

    >>> r = welch_interval([0.85, 0.86, 0.84], [0.71, 0.85, 0.84])
    >>> round(r["mean"], 3), r["lo"] < 0 < r["hi"]
    (0.05, True)
    """
    x, y = mean_std(a), mean_std(b)
    if x["n"] < 2 or y["n"] < 2:
        return {"mean": None if x["mean"] is None or y["mean"] is None else x["mean"] - y["mean"], "lo": None,
                "hi": None, "df": None}
    vx, vy = x["std"] ** 2 / x["n"], y["std"] ** 2 / y["n"]
    se = math.sqrt(vx + vy)
    mean = x["mean"] - y["mean"]
    if se == 0:
        return {"mean": mean, "lo": mean, "hi": mean, "df": x["n"] + y["n"] - 2}
    df = (vx + vy) ** 2 / (vx ** 2 / (x["n"] - 1) + vy ** 2 / (y["n"] - 1))
    from scipy.stats import t  # as t_quantile; df is fractional here

    half = float(t.ppf((1 + level) / 2, df)) * se
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "df": df}


def verdict(diff: dict, tolerance: float = TOLERANCE, diverged: int = 0) -> str:
    """The verdict on a paired interval of ticket − dense (see the module docstring).

    >>> verdict({"n": 3, "lo": 0.002, "hi": 0.02}), verdict({"n": 3, "lo": -0.004, "hi": 0.01})
    ('beats', 'matches')
    >>> verdict({"n": 3, "lo": -0.05, "hi": -0.02}), verdict({"n": 3, "lo": -0.02, "hi": 0.01})
    ('below', 'inconclusive')
    """
    if diverged:
        return "diverged"
    if not diff.get("n"):
        return "no data"
    if diff["n"] < 2:
        return "one seed"
    if diff["lo"] > 0:
        return "beats"
    if diff["lo"] >= -tolerance:
        return "matches"
    if diff["hi"] < -tolerance:
        return "below"
    return "inconclusive"


def seeds_to_decide(diff: dict, tolerance: float = TOLERANCE, level: float = LEVEL) -> int | None:
    """How many seeds would likely turn an inconclusive interval into *matches* or *below*, if the mean and spread
    stay as measured: the least n whose half-width t(n − 1)·sd/√n is under the distance from the mean to −tolerance.
    None when more than 100 would be needed (the mean sits on the boundary) or there is no spread yet.

    >>> seeds_to_decide({"mean": -0.002, "std": 0.012, "n": 3})
    12
    """
    margin = abs(diff["mean"] + tolerance) if diff.get("mean") is not None else 0.0
    if not diff.get("std") or margin == 0:
        return None
    for n in range(max(2, diff["n"]), MAX_SEEDS + 1):
        if t_quantile(n - 1, level) * diff["std"] / math.sqrt(n) < margin:
            return n
    return None


def smallest_matching_density(rows: Sequence[dict]) -> float | None:
    """Density of the deepest level L such that every level 1..L beats or matches dense (rows in level order,
    each with ``level``, ``density`` and ``verdict``); None when level 1 already does not."""
    smallest = None
    for row in rows:
        if row["level"] == 0:
            continue
        if row["verdict"] not in ("beats", "matches"):
            break
        smallest = row["density"]
    return smallest


# -- runs of one experiment over seeds ------------------------------------------------------------------------
def arm_value(entry: dict | None, arm: str, metric: str) -> float | None:
    """The ``metric`` of one arm (ticket or a control) of a level's results entry; None when missing, diverged, or
    not recorded (an entry written before early-stop accuracy existed falls back to nothing, not to final)."""
    if entry is None:
        return None
    src = entry if arm == "ticket" else entry.get("controls", {}).get(arm)
    if not src or src.get("status") != "ok":
        return None
    value = src.get(METRICS[metric])
    return value if _finite([value]) else None


def _entry(results: dict, level: int) -> dict | None:
    return next((e for e in results.get("levels", []) if e.get("level") == level), None)


def dense_still_learning(runs: Sequence[dict]) -> dict | None:
    """``{"early_stop_step", "steps", "seeds_late"}`` when dense early-stops in the last 10 % of its budget in any
    seed (it was still learning when measured), else None. ``runs``: each seed's results."""
    late, stops, budget = 0, [], None
    for results in runs:
        dense = _entry(results, 0)
        if not dense or dense.get("status") != "ok" or not dense.get("steps"):
            continue
        budget = dense["steps"]
        stops.append(dense["early_stop_step"])
        late += dense["early_stop_step"] >= STILL_LEARNING * dense["steps"]
    if not late:
        return None
    return {"early_stop_step": mean_std(stops)["mean"], "steps": budget, "seeds_late": late, "seeds": len(stops)}


def still_learning_note(warning: dict | None) -> str | None:
    """The one-line warning every table and plot carries while dense is still learning."""
    if warning is None:
        return None
    return (f"WARNING: dense is still learning: it early-stops at step {warning['early_stop_step']:.0f} of "
            f"{warning['steps']} ({warning['seeds_late']} of {warning['seeds']} seeds in the last 10 % of the "
            "budget), so tickets are compared with an unfinished dense network — train longer: --steps N (or "
            "--steps auto)")


def run_costs(results: dict) -> dict[int, dict]:
    """Per level, the cumulative cost of its ticket in dense trainings — the ticket runs of levels 0..L (what IMP
    must train to reach that ticket) — and of everything trained up to it (controls included): ``{level:
    {"ticket": x, "all": y, "ticket_flops": z or None}}``. ``ticket_flops`` uses the recorded mask-aware FLOPs."""
    dense = _entry(results, 0)
    if not dense or not dense.get("steps"):
        return {}
    if results.get("mode") == "gradual":  # each level is one run from init: its own cost, nothing accumulated
        return {e["level"]: {"ticket": single_run_cost(e, dense["steps"]), "all": single_run_cost(e, dense["steps"]),
                             "ticket_flops": None} for e in results.get("levels", [])}
    unit = dense["steps"]
    unit_flops = dense.get("dense_flops") or None
    out, ticket, everything, flops = {}, 0.0, 0.0, 0.0
    for e in sorted(results.get("levels", []), key=lambda e: e["level"]):
        ticket += (e.get("steps") or 0) / unit
        everything += (e.get("steps") or 0) / unit + sum((c.get("steps") or 0) / unit
                                                         for c in e.get("controls", {}).values())
        if flops is not None and e.get("flops") is not None and unit_flops:
            flops += e["flops"] / unit_flops
        else:
            flops = None
        out[e["level"]] = {"ticket": ticket, "all": everything, "ticket_flops": flops}
    return out


def single_run_cost(entry: dict, dense_steps: int | None) -> float | None:
    """The cost of one training run in dense trainings (gradual pruning, a mask chosen at init): its steps over
    the dense run's (the mask-finding before it — a few scoring batches — is not counted)."""
    if not dense_steps or entry.get("steps") is None:
        return None
    return entry["steps"] / dense_steps


def compare_levels(runs: Mapping[int, dict], metric: str = "early_stop", tolerance: float = TOLERANCE) -> dict:
    """The verdict of one experiment over seeds: ``runs`` maps seed → that seed's results (``results.json``).

    Returns ``{"metric", "tolerance", "seeds", "levels": [row...], "smallest_matching_density",
    "dense_still_learning", "rule"}``; each row holds the level, density, every arm's interval, the paired
    intervals ``ticket_minus_dense`` and ``ticket_minus_control`` (the control with the higher mean),
    ``verdict``, ``seeds_to_decide`` (inconclusive rows), the early-stop step and the cumulative cost.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    seeds = list(runs)
    # early-bird mask searches (``search``) are not tickets: they have no test accuracy; their steps count in cost
    levels = sorted({e["level"] for r in runs.values() for e in r.get("levels", []) if not e.get("search")})
    costs = {s: run_costs(r) for s, r in runs.items()}
    dense = {s: arm_value(_entry(r, 0), "ticket", metric) for s, r in runs.items()}
    rows = []
    for level in levels:
        entries = {s: _entry(r, level) for s, r in runs.items()}
        present = {s: e for s, e in entries.items() if e is not None}
        values = {arm: {s: arm_value(e, arm, metric) for s, e in present.items()}
                  for arm in ("ticket", "reinit", "random_mask")}
        row = {"level": level, "density": mean_std(e["density"] for e in present.values())["mean"],
               "seeds": sorted(present), "dense": interval(dense.values()),
               "ticket": interval(values["ticket"].values()),
               "early_stop_step": mean_std(e.get("early_stop_step") for e in present.values()
                                           if e.get("status") == "ok"),
               "diverged": sum(e.get("status") != "ok" for e in present.values()),
               "cost": mean_std(costs[s].get(level, {}).get("ticket") for s in present)["mean"],
               "cost_all": mean_std(costs[s].get(level, {}).get("all") for s in present)["mean"]}
        for arm in ("reinit", "random_mask"):
            if any(arm in e.get("controls", {}) for e in present.values()):
                row[arm] = interval(values[arm].values())
        if level > 0:
            diff = paired_interval(values["ticket"], dense)
            row["ticket_minus_dense"] = diff
            row["verdict"] = verdict(diff, tolerance, row["diverged"])
            if row["verdict"] == "inconclusive":
                row["seeds_to_decide"] = seeds_to_decide(diff, tolerance)
            controls = [a for a in ("reinit", "random_mask") if a in row and row[a]["mean"] is not None]
            if controls:
                best = max(controls, key=lambda a: row[a]["mean"])
                row["best_control"] = best
                row["ticket_minus_control"] = paired_interval(values["ticket"], values[best])
        else:
            row["verdict"] = "dense"
        rows.append(row)
    # a level not every seed reached (yet) is shown, but the frontier stops before it
    complete = rows[:next((i for i, r in enumerate(rows) if len(r["seeds"]) < len(seeds)), len(rows))]
    deepest = next((r for r in reversed(complete) if r["verdict"] in ("beats", "matches")), None)
    return {"metric": metric, "metric_name": METRIC_NAMES[metric], "tolerance": tolerance, "seeds": seeds,
            "level": LEVEL, "levels": rows,
            "smallest_matching_density": smallest_matching_density(complete),
            # the frontier needs every level above it to match; this says how far down some level still does,
            # and which levels above it did not (inconclusive ones are what more seeds would settle)
            "deepest_matching_density": deepest["density"] if deepest else None,
            "not_matching_above": [r["level"] for r in complete if 0 < r["level"] < (deepest or {}).get("level", 0)
                                   and r["verdict"] not in ("beats", "matches")],
            "dense_still_learning": dense_still_learning(list(runs.values())), "rule": rule_text(tolerance)}


def rule_text(tolerance: float) -> str:
    return (f"paired by seed, 95 % t interval of ticket − dense: beats (lower bound > 0), matches (lower bound >= "
            f"−{100 * tolerance:g} points), below (upper bound < −{100 * tolerance:g} points), else inconclusive; "
            "smallest matching density = deepest level down to which every level beats or matches")
