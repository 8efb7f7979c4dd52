"""Stability to SGD noise / linear mode connectivity (Frankle et al. 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis").

From one state at step k, two copies train under the same mask with different data orders. Their instability is
the highest test error on the straight line between the two final states minus the mean of the two endpoints'
errors; a network is "stable" when it is below ~2 %.

How the state at step k is reached: the level's rewind state trained k steps with the run's own data order
(``train`` on a k-step budget). The copies then train the rest of the budget (total - k steps) from there with
data orders seeded differently. ``train`` starts every run at step 0 with fresh optimizer state, so the learning
rate schedule restarts at k and the Adam moments are reset: exact for the default constant schedule without
warmup, an approximation otherwise (the result records a note).

Interpolation uses ``torch.lerp``, which returns the endpoints bit for bit at α = 0 and α = 1. BatchNorm: running
statistics of the two networks do not interpolate meaningfully, so for networks with BatchNorm every point's
statistics (endpoints included) are recomputed from the training set (cumulative average over batches in training
mode) before evaluation; networks without BatchNorm are evaluated as they are.
"""
from __future__ import annotations

import copy

import math
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from lottery import distributed
from lottery.config import Config
from lottery.errors import ConfigError
from lottery.testing import crash_progress
from lottery.storage.atomic import finite, save_json
from lottery.masks import Mask
from lottery.rewind import rewind, snapshot
from lottery.train import budget_steps, evaluate, train

RESULTS_FILE = "stability.json"


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, x: torch.Tensor, batch: int = 500) -> None:
    """Reset BatchNorm running statistics and re-estimate them over ``x`` (cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    was_training = model.training
    model.train()
    for i in range(0, len(x), batch):
        model(x[i : i + batch])
    model.train(was_training)
    for m, momentum in zip(bns, saved):
        m.momentum = momentum


@torch.no_grad()
def interpolate_errors(model: nn.Module, state_a: dict, state_b: dict, data, points: int = 21) -> tuple[list, list]:
    """Test error of ``(1 - α) a + α b`` at ``points`` evenly spaced α in [0, 1] (both ends included)."""
    if points < 2:
        raise ConfigError(f"points must be >= 2 (α = 0 and α = 1 at least), got {points}")
    alphas = [i / (points - 1) for i in range(points)]
    bn = _has_batchnorm(model)
    errors = []
    for alpha in alphas:
        mixed = {k: torch.lerp(a, state_b[k], alpha) if a.is_floating_point() else a for k, a in state_a.items()}
        model.load_state_dict(mixed)
        if bn:
            recompute_batchnorm(model, data.train[0])
        errors.append(1.0 - evaluate(model, *data.test)[1])
    return alphas, errors


def instability(model: nn.Module, data, cfg: Config, start_state: dict, mask: Mask | None = None, k: int = 0, *,
                seeds: tuple[int, int] = (1, 2), points: int = 21, progress: bool = False, pack: int = 1) -> dict:
    """Train to step k from ``start_state`` (data order ``cfg.seed``), then two copies to the end of the budget
    with data orders ``seeds``; returns errors along the line between them and the instability. ``progress``:
    one bar over every training step. ``pack`` >= 2 trains the two copies in one fused pass (lottery/fused.py:
    the same results up to float rounding)."""
    total = budget_steps(cfg, len(data.train[0]))
    if not 0 <= k < total:
        raise ConfigError(f"k must be in [0, {total}) (the training budget), got {k}")
    if len(set(seeds)) != 2:
        raise ConfigError(f"two different data-order seeds are needed, got {seeds}")
    rewind(model, start_state, mask)
    fused = pack >= 2
    with _bar(progress, k + (1 if fused else 2) * (total - k)) as shown:
        bar = crash_progress(shown, "train:stability")
        if k > 0:
            train(model, data, cfg.replace(steps=k, epochs=None, progress=False), mask, seed=cfg.seed, progress=bar)
        at_k = snapshot(model)
        rest = cfg.replace(steps=total - k, epochs=None, progress=False)
        if fused:
            from lottery.fused import train_fused

            models = [copy.deepcopy(model) for _ in seeds]
            for m in models:
                rewind(m, at_k, mask)
            results = train_fused(models, data, rest, [mask, mask], seeds=list(seeds), progress=bar)
            finals = [snapshot(m) for m in models]
        else:
            results, finals = [], []
            for s in seeds:
                rewind(model, at_k, mask)
                results.append(train(model, data, rest, mask, seed=s, progress=bar))
                finals.append(snapshot(model))
        copies = [{"seed": s, "status": r.status, "test_accuracy": r.test_accuracy} for s, r in zip(seeds, results)]
    alphas, errors = interpolate_errors(model, finals[0], finals[1], data, points)
    exact = k == 0 or (cfg.schedule == "constant" and not cfg.warmup_steps)
    return {
        "k": k, "seeds": list(seeds), "points": points, "alphas": alphas, "errors": errors, "copies": copies,
        "instability": max(errors) - (errors[0] + errors[-1]) / 2,
        "batchnorm_recomputed": _has_batchnorm(model),
        "note": None if exact else "lr schedule and optimizer state restart at step k (approximation)",
    }


def _bar(progress: bool, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="stability", dynamic_ncols=True) if progress else nullcontext()


def stability_run(run_dir: str | Path, level: int = 0, k: int = 0, seeds: tuple[int, int] = (1, 2),
                  points: int = 21, plot: bool = True, progress: bool = False, pack: int = 1) -> dict:
    """``instability`` for level ``level`` of an IMP run: its mask and rewind state. Results accumulate in
    ``stability.json`` (a finished (level, k, seeds, points) is returned, not recomputed) and the plot is
    ``stability_level_NN_kK.png`` in the run directory."""
    from lottery.drivers.imp import Experiment
    from lottery.storage.rundir import RunDir, check_writable

    distributed.refuse_processes("stability")
    run = RunDir(run_dir)
    cfg = run.config()
    results = run.load_results()  # the level must be finished and ok: checked before anything is written
    entry = next((e for e in (results or {}).get("levels", []) if e["level"] == level), None)
    if entry is None or (level > 0 and run.load_mask(level) is None):
        raise ConfigError(f"{run.path} has no finished level {level} yet; run that level first")
    if entry["status"] != "ok":
        raise ConfigError(f"level {level} of {run.path} diverged: its weights mean nothing to interpolate; "
                          "pick a level whose status is ok")
    # It reads the run's files and writes only stability.json, under that file's own lock: two studies of one
    # run never interleave, while the IMP run (the trunk's lock) may go on.
    with run.for_driver(RESULTS_FILE):
        stored = run.driver_results(RESULTS_FILE, valid_results, lambda: {"entries": []})
        key = {"level": level, "k": k, "seeds": list(seeds), "points": points}
        found = next((e for e in stored["entries"] if all(e.get(a) == b for a, b in key.items())), None)
        if found is None:
            check_writable(run.path)  # before the training, not after it
            exp = Experiment(cfg, run)
            mask = (Mask.ones_like(exp.model) if level == 0 else run.load_mask(level)).to(exp.device)
            found = {"level": level, "density": mask.density,
                     **instability(exp.model, exp.data, cfg, exp.rewind_state(level), mask, k,
                                   seeds=tuple(seeds), points=points, progress=progress, pack=pack)}
            stored["entries"].append(found)
            save_json(run.path / RESULTS_FILE, stored)
    if plot:
        found["plot"] = str(plot_path_errors(found, run.path / f"stability_level_{level:02d}_k{k}.png"))
    return found


def valid_results(stored: object) -> bool:
    """stability.json: entries with finite errors in [0, 1] and a finite instability."""
    from lottery.storage.rundir import valid_values

    entries = stored.get("entries") if isinstance(stored, dict) else None
    return isinstance(entries, list) and all(
        isinstance(e, dict) and isinstance(e.get("errors"), list) and len(e["errors"]) >= 2
        and isinstance(e.get("alphas"), list) and finite(e.get("instability"), -1, 1) for e in entries) \
        and valid_values(entries)


def plot_path_errors(result: dict, path: str | Path) -> Path:
    """Test error (%) along the interpolation path, with the endpoints' mean for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lottery.reporting.plots.common import save

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(result["alphas"], [100 * e for e in result["errors"]], marker="o", ms=3)
    ax.axhline(50 * (result["errors"][0] + result["errors"][-1]), color="gray", ls="--", label="endpoint mean")
    level = f"level {result['level']}, " if "level" in result else ""
    ax.set_title(f"{level}k={result['k']}: instability {100 * result['instability']:.2f} %")
    ax.set_xlabel("interpolation α")
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)  # atomic: a planted symlink is replaced, never written through


def format_result(result: dict) -> str:
    errs = ", ".join(f"{100 * e:.1f}" for e in result["errors"])
    return (f"level {result.get('level', '-')} (density {100 * result.get('density', math.nan):.2f} %), k={result['k']}: "
            f"instability {100 * result['instability']:.2f} %\n  test error % along α: {errs}")
