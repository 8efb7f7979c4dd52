"""What a ``find_tickets`` ``train_fn`` returns, checked at the call: the metrics become a results entry only when
results.json can be read back with them (``lt.load_results``, ``lottery report``), else one line names the metric."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from lottery.errors import LotteryError
from lottery.storage.rundir import valid_run

# Names train_fn's metrics may not use: what find_tickets writes into a results entry itself, what `lt.load_results`
# makes columns of (a metric named `arm` would relabel a control row), and the built-in loop's own `signal`.
RESERVED = ("level", "density", "num_kept", "layer_density", "collapsed_layers", "controls", "level_wall_time",
            "wall_time", "rewind_state_step", "run", "arm", "seed", "init", "model", "dataset", "hash", "signal")


class TrainFnError(LotteryError):
    """``train_fn`` broke its contract: bad metrics, a changed model, or pruned weights left non-zero."""


def _scalar(value: Any) -> Any:
    """A one-element tensor or numpy scalar as a Python number; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        return value.item()
    return value


def _plain(value: Any, where: str, key: str) -> Any:
    """A JSON-ready copy of a metric: numbers (tensors and numpy scalars too), strings, lists, dicts."""
    value = _scalar(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_plain(v, where, key) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, where, key) for k, v in value.items()}
    raise TrainFnError(f"{where}: train_fn returned metric '{key}' as {type(value).__name__}; "
                       "return numbers, strings, lists or dicts")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fraction(v: Any, where: str, what: str) -> None:
    """``v`` (a number) is a fraction in [0, 1]; one line naming ``what`` otherwise."""
    if not 0 <= v <= 1:
        hint = f" ({v} looks like a percentage: divide by 100)" if 1 < v <= 100 else ""
        raise TrainFnError(f"{where}: train_fn returned {what} {v!r}; it must be a fraction in [0, 1]{hint}")


def _curve(raw: Any, where: str) -> tuple[list, bool]:
    """The ``curve`` metric as stored ([step, val_loss, val_accuracy] rows, numbers kept as they are) and whether
    it holds a non-finite value (a run that diverged); one line naming what is wrong otherwise."""
    shape = (f"{where}: train_fn returned a 'curve' that is not a list of [step, val_loss, val_accuracy]; rename "
             "it or fix its shape")
    if not isinstance(raw, (list, tuple)):
        raise TrainFnError(shape)
    rows, diverged = [], False
    for point in raw:
        row = [_scalar(v) for v in point] if isinstance(point, (list, tuple)) else None
        if row is None or len(row) != 3 or not all(_is_number(v) for v in row):
            raise TrainFnError(shape)
        step, loss, acc = row
        if not math.isfinite(step) or step < 0:
            raise TrainFnError(f"{where}: train_fn returned a 'curve' step {step!r}; steps are numbers >= 0")
        if math.isfinite(acc):
            _fraction(acc, where, "a 'curve' val_accuracy")
        elif not math.isnan(acc):
            raise TrainFnError(f"{where}: train_fn returned a 'curve' val_accuracy {acc!r}; it must be a fraction "
                               "in [0, 1] (NaN where the run diverged)")
        # a non-finite validation loss (or a NaN accuracy): the run diverged, as the built-in loop says too
        diverged = diverged or not (math.isfinite(loss) and math.isfinite(acc))
        rows.append(row)
    return rows, diverged


def check_metrics(out: Any, where: str, diverged: bool) -> dict:
    """train_fn's return value as a results entry part: ``status``, ``test_accuracy``, ``early_stop_step``, the
    rest of its metrics; a one-line TrainFnError naming the metric if it breaks the contract, so nothing is stored
    that results.json could not be read back with. A curve holding a non-finite loss records the run as
    ``diverged``. Reserved names (``RESERVED``: what find_tickets and ``lt.load_results`` set themselves) are
    refused rather than renamed, so every stored metric keeps the name the loop gave it."""
    if not isinstance(out, Mapping):
        raise TrainFnError(f"{where}: train_fn returned {type(out).__name__}; return a dict such as "
                           "{'test_accuracy': 0.93}")
    taken = [k for k in out if k in RESERVED]
    if taken:
        raise TrainFnError(f"{where}: train_fn returned '{taken[0]}', a name find_tickets or lt.load_results sets "
                           f"itself (reserved: {', '.join(RESERVED)}); rename it")
    curve, curve_diverged = _curve(out.get("curve", []), where)
    metrics = {str(k): _plain(v, where, str(k)) for k, v in out.items() if k != "curve"}
    status = metrics.get("status", "ok")
    if status not in ("ok", "diverged"):
        raise TrainFnError(f"{where}: train_fn returned status {status!r}; use 'ok' or 'diverged'")
    status = "diverged" if diverged or curve_diverged else status
    acc = _scalar(out.get("test_accuracy"))
    if status == "ok" and "test_accuracy" not in out:
        keys = ", ".join(map(str, out)) or "none"
        raise TrainFnError(f"{where}: train_fn returned no 'test_accuracy' (keys: {keys}); "
                           "return {'test_accuracy': a fraction in [0, 1], ...}")
    if status == "ok" or acc is not None:
        if not _is_number(acc) or (status == "ok" and not math.isfinite(acc)):
            raise TrainFnError(f"{where}: train_fn returned test_accuracy {acc!r}; it must be a fraction in [0, 1], "
                               "or return status 'diverged'")
        if math.isfinite(acc):
            _fraction(acc, where, "test_accuracy")
    for key in ("early_stop_step", "steps"):
        v = metrics.get(key)
        if v is not None and (not _is_number(v) or v < 0):
            raise TrainFnError(f"{where}: train_fn returned {key} {_scalar(out[key])!r}; return a step number >= 0 "
                               "or None")
    metrics.update(status=status, test_accuracy=metrics.get("test_accuracy"),
                   early_stop_step=metrics.get("early_stop_step"))
    if "curve" in out:
        metrics["curve"] = curve
    if not valid_run(metrics):  # the reader's own check, in case the ones above missed a case
        raise TrainFnError(f"{where}: train_fn returned metrics that results.json could not be read back with; "
                           "check test_accuracy, early_stop_step, steps and curve")
    return metrics
