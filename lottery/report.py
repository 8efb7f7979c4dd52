"""Results as people read them: the end-of-run table and the plots written next to ``results.json``."""
from __future__ import annotations

from pathlib import Path


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
            f"{e['early_stop_step']:>10}  {status}"
        )
    return "\n".join(lines)


def write_plots(run_path: str | Path, results: dict) -> list[Path]:
    """Write the run's PNG plots beside its results; returns their paths."""
    from lottery.plots import run_plots

    return run_plots(Path(run_path), results)
