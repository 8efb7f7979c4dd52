"""A compare-inits directory's ``summary.json``: written with each run's path relative to the summary itself, so a
copied or moved comparison (with its runs beside it) reads its own runs; read back checked, one line when damaged.

Summaries written before this stored ``run_dir`` as given (absolute, or relative to the working directory the
comparison ran in); they carry no ``run_dir_base`` and are read as before.
"""
from __future__ import annotations

import os
from pathlib import Path

from lottery.errors import CorruptFileError
from lottery.storage.atomic import load_json, save_json
from lottery.storage.validate import valid_values

BASE = "summary.json's directory"  # the value of ``run_dir_base`` in summaries whose run paths are relative to it


def _number(v) -> bool:
    return v is None or isinstance(v, (int, float)) and not isinstance(v, bool)


_STAT = {"mean": _number, "std": _number, "n": int}
_SCHEME = {
    "label": str, "status": str, "smallest_matching_density": _number, "match_tolerance_used": _number,
    "runs": [{"seed": int, "run_dir": str, "status": str}], "diverged_runs": [dict],
    "dense": {"test_accuracy": _STAT, "early_stop_step": _STAT},
    "levels": [{"level": int, "density": _number, "ticket": _STAT, "early_stop_step": _STAT, "diverged": int}],
    "dense_curve": {"step": list, "mean": list, "std": list},
}
_SUMMARY = {"seeds": [int], "chance_accuracy": _number, "match_rule": str, "schemes": [_SCHEME]}


def _fits(value, spec) -> bool:
    """``value`` has the shape ``spec`` describes: a type, a predicate, ``{key: spec}`` (those keys at least), or
    ``[spec]`` (a list of such items)."""
    if isinstance(spec, dict):
        return isinstance(value, dict) and all(k in value and _fits(value[k], s) for k, s in spec.items())
    if isinstance(spec, list):
        return isinstance(value, list) and all(_fits(v, spec[0]) for v in value)
    if isinstance(spec, type):
        return isinstance(value, spec) and not (spec is int and isinstance(value, bool))
    return spec(value)


def save_summary(compare_dir: str | os.PathLike, summary: dict) -> None:
    """Write ``summary.json`` into ``compare_dir``; each run's ``run_dir`` is stored relative to it."""
    compare_dir = Path(compare_dir)
    stored = {**summary, "run_dir_base": BASE, "schemes": [
        {**s, "runs": [{**r, "run_dir": os.path.relpath(r["run_dir"], compare_dir)} for r in s["runs"]]}
        for s in summary["schemes"]]}
    stored.pop("comparison_dir", None)  # wherever the directory is now, it is the one holding this file
    compare_dir.mkdir(parents=True, exist_ok=True)
    save_json(compare_dir / "summary.json", stored)


def load_summary(compare_dir: str | os.PathLike) -> dict:
    """``summary.json`` of ``compare_dir``, checked (one line naming it when damaged), with every ``run_dir`` a
    path that works from here and ``comparison_dir`` this directory."""
    compare_dir = Path(compare_dir)
    path = compare_dir / "summary.json"
    summary = load_json(path, fix="run the comparison again to rewrite it (its runs are reused)")
    if not _fits(summary, _SUMMARY) or not valid_values(summary):
        raise CorruptFileError(f"{path} is not a compare-inits summary (a field is missing, of the wrong type, or "
                               "out of range); run the comparison again to rewrite it (its runs are reused)")
    relative = summary.get("run_dir_base") == BASE

    def where(run_dir: str) -> str:
        return os.path.normpath(compare_dir / run_dir) if relative and not os.path.isabs(run_dir) else run_dir

    return {**summary, "comparison_dir": str(compare_dir), "schemes": [
        {**s, "runs": [{**r, "run_dir": where(r["run_dir"])} for r in s["runs"]]} for s in summary["schemes"]]}
