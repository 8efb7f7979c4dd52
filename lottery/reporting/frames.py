"""Results as a tidy pandas DataFrame: one row per run × level × arm, for analysis beyond the built-in tables.

pandas is an optional extra (``pip install pandas``); nothing else in lottery imports this module.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from lottery.errors import LotteryError
from lottery.storage.rundir import RunDir
from lottery.stats import TOLERANCE, compare_levels
from lottery.storage.summary import load_summary

COLUMNS = ("run", "level", "arm", "density", "test_accuracy", "early_stop_test_accuracy", "early_stop_step", "steps",
           "status", "seed", "init", "model", "dataset", "hash")
VERDICT_COLUMNS = ("init", "level", "density", "n", "ticket", "ticket_lo", "ticket_hi", "ticket_minus_dense",
                   "ticket_minus_dense_lo", "ticket_minus_dense_hi", "best_control", "ticket_minus_control",
                   "ticket_minus_control_lo", "ticket_minus_control_hi", "verdict", "cost")
# Entry fields that are not one number per row (or are columns already): left out of the extra metric columns.
_SKIP = {"level", "density", "num_kept", "layer_density", "collapsed_layers", "controls", "curve", "status",
         "test_accuracy", "early_stop_test_accuracy", "early_stop_step", "steps"}


def _run_dirs(path: Path) -> list[tuple[Path, str | None]]:
    """(run directory, init label) for a run, a compare-inits directory, or a directory holding runs."""
    if (path / "config.json").is_file():
        return [(path, None)]
    if (path / "summary.json").is_file():  # compare-inits: its runs, labelled by init variant
        summary = load_summary(path)
        return [(Path(r["run_dir"]), s["label"]) for s in summary["schemes"] for r in s["runs"]]
    found = sorted(p.parent for p in path.glob("*/config.json"))
    if not found:
        raise LotteryError(f"{path} is neither a run directory nor a directory of runs (no config.json); "
                           "pass a directory under runs/")
    return [(p, None) for p in found]


def _rows(run_dir: Path, label: str | None) -> list[dict]:
    run = RunDir(run_dir)
    config = run.settings()
    results = run.read_results_lenient() or {"levels": []}
    base = {"run": run.path.name, "seed": config.get("seed"), "init": label or config.get("init"),
            "model": config.get("model"), "dataset": config.get("dataset"),
            "hash": results.get("hash") or run.path.name.rpartition("-")[2]}
    rows = []
    for e in results["levels"]:
        arms = [("ticket", e), *e.get("controls", {}).items()]
        for arm, r in arms:
            extra = {k: v for k, v in r.items() if k not in _SKIP and isinstance(v, (int, float, str, type(None)))
                     and not isinstance(v, bool)}
            rows.append({**base, "level": e["level"], "arm": arm, "density": e["density"],
                         "test_accuracy": r.get("test_accuracy"),
                         "early_stop_test_accuracy": r.get("early_stop_test_accuracy"),
                         "early_stop_step": r.get("early_stop_step"), "steps": r.get("steps"),
                         "status": r.get("status"), **extra})
    return rows


def load_results(run_dirs: str | os.PathLike | Iterable[str | os.PathLike]):
    """A tidy DataFrame of one or more runs: one row per run × level × arm (``ticket``, ``reinit``,
    ``random_mask``) with the columns of ``COLUMNS`` first, then any other per-run numbers (``test_loss``,
    ``wall_time``, a ``find_tickets`` loop's own metrics). Takes run directories, directories holding runs, or
    ``compare-inits`` directories (``init`` is then the variant's label). Each run is read leniently
    (``RunDir.read_results_lenient``: a damaged entry is left out with one line, the rest is read); code that
    resumes or builds on a run reads it strictly (``RunDir.load_results_strict``).

    >>> import tempfile, lottery as lt
    >>> results = lt.run_imp({"dataset": "synthetic", "levels": 1, "steps": 20, "controls": "random_mask",
    ...                       "progress": False, "out": tempfile.mkdtemp()})
    >>> df = lt.load_results(results["config"]["out"])
    >>> df[["level", "arm"]].values.tolist(), df.density.round(2).tolist()
    ([[0, 'ticket'], [1, 'ticket'], [1, 'random_mask']], [1.0, 0.8, 0.8])
    """
    try:
        import pandas as pd
    except ImportError:
        raise LotteryError("load_results needs pandas: pip install pandas") from None
    paths = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    rows = [row for p in paths for d, label in _run_dirs(Path(p)) for row in _rows(d, label)]
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df:
            df[c] = None
    return df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]


def verdicts(df, metric: str = "early_stop", tolerance: float = TOLERANCE):
    """The verdict table of ``load_results``' DataFrame: one row per init × level, the same numbers ``lottery
    report`` prints (both come from ``lottery.stats.compare_levels``; accuracies and differences as fractions).
    Each init's runs are its seeds.

    >>> import tempfile, lottery as lt
    >>> out = tempfile.mkdtemp()
    >>> for seed in (0, 1):
    ...     _ = lt.run_imp({"dataset": "synthetic", "levels": 1, "steps": 20, "controls": "random_mask",
    ...                     "seed": seed, "progress": False, "out": out})
    >>> table = lt.verdicts(lt.load_results(out))
    >>> table[["level", "n", "verdict"]].values.tolist()
    [[0, 2, 'dense'], [1, 2, 'inconclusive']]
    """
    import pandas as pd

    rows = []
    for init, runs in df.groupby("init", sort=False, dropna=False):
        comparison = compare_levels({seed: _results_of(group) for seed, group in runs.groupby("seed", sort=True)},
                                    metric, tolerance)
        for r in comparison["levels"]:
            diff, control = r.get("ticket_minus_dense") or {}, r.get("ticket_minus_control") or {}
            rows.append({"init": init, "level": r["level"], "density": r["density"], "n": r["ticket"]["n"],
                         "ticket": r["ticket"]["mean"], "ticket_lo": r["ticket"]["lo"], "ticket_hi": r["ticket"]["hi"],
                         "ticket_minus_dense": diff.get("mean"), "ticket_minus_dense_lo": diff.get("lo"),
                         "ticket_minus_dense_hi": diff.get("hi"), "best_control": r.get("best_control"),
                         "ticket_minus_control": control.get("mean"), "ticket_minus_control_lo": control.get("lo"),
                         "ticket_minus_control_hi": control.get("hi"), "verdict": r["verdict"], "cost": r["cost"]})
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


def _results_of(run_rows) -> dict:
    """One run's rows back into the ``results.json`` shape the statistics read."""
    levels = {}
    for row in run_rows.to_dict("records"):
        arm = {k: (None if _missing(v) else v) for k, v in row.items()}
        if row["arm"] == "ticket":
            levels.setdefault(row["level"], {"controls": {}}).update({**arm, "level": int(row["level"])})
        else:
            levels.setdefault(row["level"], {"controls": {}})["controls"][row["arm"]] = arm
    return {"levels": [levels[k] for k in sorted(levels) if "density" in levels[k]]}


def _missing(v) -> bool:
    return v is None or isinstance(v, float) and v != v
