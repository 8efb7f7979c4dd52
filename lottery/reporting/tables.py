"""Results as people read them: the end-of-run table and the plots written next to ``results.json``."""
from __future__ import annotations

from pathlib import Path

from lottery.errors import LotteryError
from lottery.stats import mean_std
from lottery.storage.rundir import RunDir


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


ACCURACY_NOTE = ("accuracies: test set, weights at the final step; results.json also holds "
                 "early_stop_test_accuracy (weights at the early-stop step)")


def format_table(results: dict) -> str:
    """Level, weights remaining, test accuracy of ticket / reinit / random mask, early-stop step, status."""
    head = f"{'level':>5} {'weights %':>9} {'ticket %':>8} {'reinit %':>8} {'random %':>8} {'early stop':>10}  status"
    lines = [head, "-" * len(head)]
    for e in results["levels"]:
        c = e.get("controls", {})
        statuses = [e["status"]] + [v["status"] for v in c.values()]
        status = "ok" if all(s == "ok" for s in statuses) else "diverged"
        if e.get("collapsed_layers"):  # a layer with no weights left: the network's output ignores its input
            status += f" (collapsed: {', '.join(e['collapsed_layers'])})"
        lines.append(
            f"{e['level']:>5} {100 * e['density']:9.2f} {_pct(e.get('test_accuracy')):>8} "
            f"{_pct(c.get('reinit', {}).get('test_accuracy')):>8} {_pct(c.get('random_mask', {}).get('test_accuracy')):>8} "
            f"{'-' if e.get('early_stop_step') is None else e['early_stop_step']:>10}  {status}"
        )
    if results.get("exhausted"):
        lines.append(f"stopped early: {results['exhausted']}")
    lines.append(ACCURACY_NOTE)
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
    lines.append(ACCURACY_NOTE)
    return "\n".join(lines)


def check_seed_runs(dirs: list[str]) -> None:
    """Runs averaged together must be one experiment under several seeds: the same run twice, or runs that
    differ in any other setting, are refused with the setting named."""
    seen, first = {}, None
    for d in dirs:
        run = RunDir(d)
        cfg = run.config()
        real = run.path.resolve()
        if real in seen or cfg.hash() in seen.values():
            twin = next(k for k, v in seen.items() if v == cfg.hash() or k == real)
            raise LotteryError(f"{d} is the same run as {twin}; list each run once")
        seen[real] = cfg.hash()
        settings = {k: v for k, v in cfg.hashed_settings().items() if k != "seed"}
        if first is None:
            first = (d, settings)
            continue
        differ = sorted(k for k in {*settings, *first[1]} if settings.get(k) != first[1].get(k))
        if differ:
            raise LotteryError(f"{d} and {first[0]} differ in '{differ[0]}', not only in the seed; "
                               "report averages seeds of one experiment — report them separately")


def write_plots(run_path: str | Path, results: dict) -> list[Path]:
    """Write the run's PNG plots beside its results; returns their paths."""
    from lottery.reporting.plots import run_plots

    return run_plots(Path(run_path), results)
