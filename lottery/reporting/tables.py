"""Results as people read them: the end-of-run table and the plots written next to ``results.json``."""
from __future__ import annotations

import json
from pathlib import Path

from lottery.errors import CorruptFileError, LotteryError
from lottery.stats import TOLERANCE, compare_levels, still_learning_note
from lottery.storage.rundir import RunDir


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def _ci(stat: dict | None) -> str:
    """A mean in % with its 95 % half-width (``63.4±1.2``), the mean alone for one seed, ``-`` for none."""
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("lo") is None:
        return f"{100 * stat['mean']:.2f}"
    return f"{100 * stat['mean']:.1f}±{100 * (stat['hi'] - stat['mean']):.1f}"


def _diff(stat: dict | None) -> str:
    """A paired difference in points with its 95 % interval (``+0.3 [-0.5,+1.1]``)."""
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("lo") is None:
        return f"{100 * stat['mean']:+.2f}"
    return f"{100 * stat['mean']:+.1f} [{100 * stat['lo']:+.1f},{100 * stat['hi']:+.1f}]"


def _cost(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def verdict_header(comparison: dict) -> str:
    """What the numbers are: seeds, measure, interval."""
    seeds = comparison["seeds"]
    how = (f"{len(seeds)} seeds {seeds}: mean ± 95 % t half-width; ticket − dense and ticket − best control paired "
           "by seed (points, 95 % t interval)" if len(seeds) > 1 else
           f"ONE seed ({seeds[0]}): no interval and no verdict — run with --seeds 3 (or more) for them")
    return f"accuracy: {comparison['metric_name']} (--metric {comparison['metric']}); {how}"


def format_verdicts(comparison: dict) -> str:
    """Per level: weights left, ticket / reinit / random mask, the paired differences, the early-stop step, the
    cumulative cost in dense trainings and the verdict; then the smallest matching density and any warning.
    ``comparison``: ``lottery.stats.compare_levels``'s result (one seed or several)."""
    head = (f"{'level':>5} {'weights %':>9} {'ticket %':>10} {'reinit %':>10} {'random %':>10} "
            f"{'ticket-dense':>18} {'ticket-control':>19} {'stop':>6} {'cost':>5}  verdict")
    lines = [verdict_header(comparison), head, "-" * len(head)]
    for r in comparison["levels"]:
        control = r.get("ticket_minus_control")
        if control is not None and r.get("best_control"):
            control_text = f"{_diff(control)}{'r' if r['best_control'] == 'reinit' else 'm'}"
        else:
            control_text = "-"
        verdict = r["verdict"]
        if verdict == "diverged":
            verdict += f" ({r['diverged']} of {len(r['seeds'])} seeds)"
        if verdict == "inconclusive" and r.get("seeds_to_decide"):
            verdict += f" (~{r['seeds_to_decide']} seeds)"
        stop = r["early_stop_step"]["mean"]
        lines.append(
            f"{r['level']:>5} {100 * r['density']:9.2f} {_ci(r['ticket']):>10} {_ci(r.get('reinit')):>10} "
            f"{_ci(r.get('random_mask')):>10} {_diff(r.get('ticket_minus_dense')):>18} {control_text:>19} "
            f"{'-' if stop is None else f'{stop:.0f}':>6} {_cost(r['cost']):>5}  "
            f"{verdict}")
    lines += summary_lines(comparison)
    return "\n".join(lines)


def summary_lines(comparison: dict) -> list[str]:
    """The lines under a verdict table: the answer, then what qualifies it."""
    seeds = comparison["seeds"]
    smallest = comparison["smallest_matching_density"]
    tol = f"tolerance {100 * comparison['tolerance']:g} point{'s' if comparison['tolerance'] != 0.01 else ''}"
    if len(seeds) < 2:
        answer = "smallest matching density: needs at least 2 seeds (--seeds 3)"
    elif smallest is None:
        answer = f"smallest matching density: none — level 1 does not match dense ({len(seeds)} seeds, 95 %, {tol})"
    else:
        answer = f"smallest matching density: {100 * smallest:.2f} % ({len(seeds)} seeds, 95 %, {tol})"
    deepest, above = comparison.get("deepest_matching_density"), comparison.get("not_matching_above") or []
    if len(seeds) > 1 and deepest is not None and deepest != smallest:
        answer += (f"; the deepest level that beats or matches dense is at {100 * deepest:.2f} %, but level"
                   f"{'s' if len(above) > 1 else ''} {', '.join(map(str, above))} above it did not")
    lines = [answer, "columns: ticket-control is against the better control (r reinit, m random mask); stop = "
             "ticket's early-stop step; cost = dense trainings spent on the ticket's lineage (levels 0..L)"]
    note = still_learning_note(comparison.get("dense_still_learning"))
    if note:
        lines.append(note)
    if comparison.get("exhausted"):
        lines.append(f"stopped early: {comparison['exhausted']}")
    return lines


def format_table(results: dict, metric: str = "early_stop", tolerance: float = TOLERANCE) -> str:
    """One run's table: the verdict table of its single seed (no intervals: it says so and how to get them)."""
    seed = results.get("config", {}).get("seed", 0)
    comparison = compare_levels({seed: results}, metric, tolerance)
    if results.get("exhausted"):
        comparison["exhausted"] = results["exhausted"]
    text = format_verdicts(comparison)
    for e in results.get("levels", []):  # a layer with no weights left: the network's output ignores its input
        if e.get("collapsed_layers"):
            text += f"\nlevel {e['level']} collapsed: {', '.join(e['collapsed_layers'])} (no weights left)"
    return text


def format_seeds_table(results_list: list[dict], metric: str = "early_stop", tolerance: float = TOLERANCE) -> str:
    """The verdict table over runs of one experiment under several seeds (``check_seed_runs`` first)."""
    return format_verdicts(seed_comparison(results_list, metric, tolerance))


def seed_comparison(results_list: list[dict], metric: str = "early_stop", tolerance: float = TOLERANCE) -> dict:
    """``compare_levels`` over runs keyed by their seeds."""
    by_seed = {r.get("config", {}).get("seed", i): r for i, r in enumerate(results_list)}
    return compare_levels(dict(sorted(by_seed.items())), metric, tolerance)


def check_seed_runs(dirs: list[str]) -> None:
    """Runs averaged together must be one experiment under several seeds: the same run twice, or runs that
    differ in any other setting, are refused with the setting named. Any driver's runs (run_imp, find_tickets:
    there the init weights are the seed's own draw, so their fingerprint may differ too)."""
    seen, first = {}, None
    for d in dirs:
        run = RunDir(d)
        stored = run.settings(full=True)
        hashed = stored.get("hashed")
        if not isinstance(hashed, dict):
            raise CorruptFileError(f"{run.path / 'config.json'} is not a lottery run config; the directory is damaged")
        key = (stored.get("driver"), json.dumps(hashed, sort_keys=True))
        real = run.path.resolve()
        if real in seen or key in seen.values():
            twin = next(k for k, v in seen.items() if v == key or k == real)
            raise LotteryError(f"{d} is the same run as {twin}; list each run once")
        seen[real] = key
        free = ("seed", "init") if stored.get("driver") == "find_tickets" else ("seed",)
        settings = {"driver": stored.get("driver"), **{k: v for k, v in hashed.items() if k not in free}}
        if first is None:
            first = (d, settings)
            continue
        differ = sorted(k for k in {*settings, *first[1]} if settings.get(k) != first[1].get(k))
        if differ:
            named = ", ".join(f"'{k}' ({first[1].get(k)!r} vs {settings.get(k)!r})" for k in differ[:4])
            raise LotteryError(f"{d} and {first[0]} differ in {named}{' and more' if len(differ) > 4 else ''}, "
                               "not only in the seed; report compares seeds of one experiment — report them "
                               "separately")


def write_plots(run_path: str | Path, results: dict, metric: str = "early_stop") -> list[Path]:
    """Write the run's PNG plots beside its results; returns their paths."""
    from lottery.reporting.plots import run_plots

    return run_plots(Path(run_path), results, metric=metric)
