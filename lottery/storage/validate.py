"""What a stored result must look like: the checks of results.json's level entries (and of the drivers' files
that hold such entries), each saying what is wrong, so a reader can name the bad entry and skip only it."""
from __future__ import annotations

import math

from lottery.storage.atomic import finite


def _number_or_none(v: object) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def curve_problem(curve: object, diverged: bool) -> str | None:
    """What is wrong with ``[[step, val_loss, val_acc], ...]`` (None: nothing): steps >= 0, accuracies in [0, 1];
    a non-finite loss (and a NaN accuracy) only where the run diverged."""
    if not isinstance(curve, list):
        return "curve is not a list of [step, val_loss, val_accuracy]"
    for c in curve:
        if not (isinstance(c, list) and len(c) == 3 and all(_number_or_none(x) and x is not None for x in c)):
            return f"curve point {str(c)[:40]} is not [step, val_loss, val_accuracy]"
        if not finite(c[0], 0):
            return f"curve step {c[0]} is not a step >= 0"
        if not (finite(c[1]) and finite(c[2], 0, 1) or diverged and (math.isnan(c[2]) or finite(c[2], 0, 1))):
            return f"curve point {c} is not a finite loss and an accuracy in [0, 1]"
    return None


def run_problem(r: object) -> str | None:
    """What is wrong with one training run's summary (None: nothing), its curve left out: accuracy in [0, 1] (or
    None; any value where the run diverged), steps >= 0 and finite (or None)."""
    if not isinstance(r, dict) or not isinstance(r.get("status"), str):
        return "not a training run's results (no status)"
    acc = r.get("test_accuracy")
    if not (acc is None or finite(acc, 0, 1) or r["status"] != "ok" and _number_or_none(acc)):
        return f"test_accuracy {acc!r} is not a fraction in [0, 1]"
    for key in ("early_stop_step", "steps"):
        if not (r.get(key) is None or finite(r[key], 0)):
            return f"{key} {r[key]!r} is not a step >= 0"
    return None


def valid_run(r: object) -> bool:
    """One training run's summary: accuracy in [0, 1] (or None), steps >= 0, all finite."""
    return run_problem(r) is None and curve_problem(r.get("curve", []), r["status"] != "ok") is None


def level_problem(e: object) -> str | None:
    """What is wrong with a level entry's own fields (None: nothing), its curve and controls left out: the fields
    the driver and the report read, of the right types and ranges."""
    if not isinstance(e, dict) or type(e.get("level")) is not int or e["level"] < 0:
        return "not a level entry (no level number)"
    if not finite(e.get("density"), 0, 1):
        return f"density {e.get('density')!r} is not a fraction in [0, 1]"
    if not isinstance(e.get("controls", {}), dict):
        return "controls is not a table of control runs"
    if not isinstance(e.get("layer_density") or {}, dict) or not all(
            finite(v, 0, 1) for v in (e.get("layer_density") or {}).values()):
        return "layer_density holds a value outside [0, 1]"
    return run_problem(e)


def entry_problems(e: object) -> list[tuple[str, str]]:
    """Every problem of a level entry as (what: ``level`` / ``curve`` / a control's name, why)."""
    problem = level_problem(e)
    if problem is not None:
        return [("level", problem)]
    found = []
    problem = curve_problem(e.get("curve", []), e["status"] != "ok")
    if problem is not None:
        found.append(("curve", problem))
    for name, r in e.get("controls", {}).items():
        problem = run_problem(r) or curve_problem(r.get("curve", []), r["status"] != "ok")
        if problem is not None:
            found.append((str(name), problem))
    return found


def valid_level(e: object) -> bool:
    """A level entry of results.json with the fields the driver and the report read, of the right types and
    ranges: a NaN, an infinity, an accuracy or density outside [0, 1] or a negative step is refused here, not
    crashed on in a plot."""
    return not entry_problems(e)


def entry_name(e: object, what: str) -> str:
    level = f"level {e['level']}" if isinstance(e, dict) and type(e.get("level")) is int else "an entry"
    return level if what == "level" else f"{level}'s {what}"


def valid_values(obj: object, key: str = "") -> bool:
    """Every number in a stored JSON tree is finite; under a key naming an accuracy, density or error it lies
    in [0, 1], under one naming a step it is >= 0 (how summary.json and stability.json are checked)."""
    stack = [(obj, key)]
    while stack:
        v, k = stack.pop()
        if isinstance(v, dict):
            stack += [(x, str(name) if name not in ("mean", "std") else k) for name, x in v.items()]
        elif isinstance(v, list):
            stack += [(x, k) for x in v]
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            if not finite(v):
                return False
            if any(w in k for w in ("accuracy", "density", "error")) and not 0 <= v <= 1:
                return False
            if "step" in k and v < 0:
                return False
    return True
