"""Results as people read them: the end-of-run table and the plots written next to ``results.json``."""
from __future__ import annotations

from pathlib import Path

from lottery.stats import mean_std


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def format_table(results: dict) -> str:
    """Level, weights remaining, test accuracy of ticket / reinit / random mask, early-stop step, status."""
    head = f"{'level':>5} {'weights %':>9} {'ticket %':>8} {'reinit %':>8} {'random %':>8} {'early stop':>10}  status"
    lines = [head, "-" * len(head)]
    for e in results["levels"]:
        c = e.get("controls", {})
        statuses = [e["status"]] + [v["status"] for v in c.values()]
        status = "ok" if all(s == "ok" for s in statuses) else "diverged"
        lines.append(
            f"{e['level']:>5} {100 * e['density']:9.2f} {_pct(e.get('test_accuracy')):>8} "
            f"{_pct(c.get('reinit', {}).get('test_accuracy')):>8} {_pct(c.get('random_mask', {}).get('test_accuracy')):>8} "
            f"{'-' if e.get('early_stop_step') is None else e['early_stop_step']:>10}  {status}"
        )
    return "\n".join(lines)


def _pm(values, scale: float = 100, digits: int = 2) -> str:
    s = mean_std(values)
    return "-" if s["mean"] is None else f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"


def format_seeds_table(results_list: list[dict]) -> str:
    """Mean ± sample std over runs (seeds) of one experiment, per level: the table RESULTS.md quotes."""
    depth = min(len(r["levels"]) for r in results_list)
    head = (f"{'level':>5} {'weights %':>9} {'ticket %':>15} {'reinit %':>15} {'random %':>15} "
            f"{'early stop':>15}  runs")
    lines = [head, "-" * len(head)]
    for level in range(depth):
        entries = [r["levels"][level] for r in results_list]

        def acc(e, control=None):
            src = e if control is None else e.get("controls", {}).get(control, {})
            return src.get("test_accuracy") if src.get("status") == "ok" else None

        lines.append(
            f"{level:>5} {100 * entries[0]['density']:9.2f} {_pm([acc(e) for e in entries]):>15} "
            f"{_pm([acc(e, 'reinit') for e in entries]):>15} "
            f"{_pm([acc(e, 'random_mask') for e in entries]):>15} "
            f"{_pm([e.get('early_stop_step') for e in entries], 1, 0):>15}  {len(entries)}"
        )
    return "\n".join(lines)


def write_plots(run_path: str | Path, results: dict) -> list[Path]:
    """Write the run's PNG plots beside its results; returns their paths."""
    from lottery.plots import run_plots

    return run_plots(Path(run_path), results)
