"""Results as a tidy pandas DataFrame: one row per run × level × arm, for analysis beyond the built-in tables.

pandas is an optional extra (``pip install pandas``); nothing else in lottery imports this module.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from lottery.errors import LotteryError
from lottery.storage.atomic import load_json
from lottery.storage.rundir import RunDir

COLUMNS = ("run", "level", "arm", "density", "test_accuracy", "early_stop_step", "status", "seed", "init", "model",
           "dataset", "hash")
# Entry fields that are not one number per row (or are columns already): left out of the extra metric columns.
_SKIP = {"level", "density", "num_kept", "layer_density", "collapsed_layers", "controls", "curve", "status",
         "test_accuracy", "early_stop_step"}


def _run_dirs(path: Path) -> list[tuple[Path, str | None]]:
    """(run directory, init label) for a run, a compare-inits directory, or a directory holding runs."""
    if (path / "config.json").is_file():
        return [(path, None)]
    if (path / "summary.json").is_file():  # compare-inits: its runs, labelled by init variant
        summary = load_json(path / "summary.json")
        return [(Path(r["run_dir"]), s["label"]) for s in summary.get("schemes", []) for r in s.get("runs", [])]
    found = sorted(p.parent for p in path.glob("*/config.json"))
    if not found:
        raise LotteryError(f"{path} is neither a run directory nor a directory of runs (no config.json); "
                           "pass a directory under runs/")
    return [(p, None) for p in found]


def _rows(run_dir: Path, label: str | None) -> list[dict]:
    run = RunDir(run_dir)
    config = run.settings()
    results = run.load_results() or {"levels": []}
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
                         "test_accuracy": r.get("test_accuracy"), "early_stop_step": r.get("early_stop_step"),
                         "status": r.get("status"), **extra})
    return rows


def load_results(run_dirs: str | os.PathLike | Iterable[str | os.PathLike]):
    """A tidy DataFrame of one or more runs: one row per run × level × arm (``ticket``, ``reinit``,
    ``random_mask``) with the columns of ``COLUMNS`` first, then any other per-run numbers (``test_loss``,
    ``wall_time``, a ``find_tickets`` loop's own metrics). Takes run directories, directories holding runs, or
    ``compare-inits`` directories (``init`` is then the variant's label).

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
