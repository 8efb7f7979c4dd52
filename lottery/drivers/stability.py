"""Stability to SGD noise / linear mode connectivity (Frankle et al. 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis").

From one state at step k, two copies train under the same mask with different data orders. Their instability is
the highest test error on the straight line between the two final states minus the mean of the two endpoints'
errors; a network is "stable" when it is below ~2 %.

How the state at step k is reached: the level's rewind state trained k steps with the run's own data order
(``Session.train_from`` on a k-step budget, with its rewind and pruned-weights checks, as every run here). The
copies then train the rest of the budget (total - k steps) from there with data orders seeded differently. Each
run starts at step 0 with fresh optimizer state, so the learning
rate schedule restarts at k and the Adam moments are reset: exact for the default constant schedule without
warmup, an approximation otherwise (the result records a note).

The line between them is measured with lottery/barrier.py (the same code as IMP's barrier between levels), on
the test set; BatchNorm statistics are recomputed from the training set at every point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from torch import nn

from lottery import distributed
from lottery.drivers.registry import register_driver
from lottery.barrier import barrier_height, has_batchnorm, interpolation_errors, recompute_batchnorm  # noqa: F401
from lottery.errors import ConfigError
from lottery.masks import Mask
from lottery.options import Options, int_option, option, progress_option, read_list
from lottery.rewind import snapshot
from lottery.passes import Run, train_passes
from lottery.session import Session
from lottery.storage.atomic import finite, save_json
from lottery.storage.rundir import RunDir, check_writable, valid_values

RESULTS_FILE = "stability.json"


def _two_seeds(v: tuple) -> str | None:
    return None if len(v) == 2 and v[0] != v[1] and min(v) >= 0 else "two different data-order seeds >= 0 (e.g. 1,2)"


@dataclass(frozen=True)
class StabilityOptions(Options):
    """stability: where the two copies split and how finely the path between them is measured."""

    command: ClassVar[str] = "stability"
    studies_run: ClassVar[bool] = True
    level: int = int_option(0, "level whose mask and rewind state to use", metavar="N")
    k: int = int_option(0, "train this many steps before the two copies split", metavar="K")
    seeds: tuple = option((1, 2), "the two copies' data-order seeds", parse=read_list(int), check=_two_seeds,
                          metavar="S1,S2")
    points: int = int_option(21, "points on the line, both ends included", least=2, metavar="N")
    pack: int = int_option(1, "2 trains the two copies in one fused pass (the same results up to float rounding); "
                           "1 = one after another, bit for bit", least=1, metavar="K")
    progress: bool = progress_option()


def interpolate_errors(model: nn.Module, state_a: dict, state_b: dict, data, points: int = 21) -> tuple[list, list]:
    """Test error of ``(1 - α) a + α b`` at ``points`` evenly spaced α in [0, 1] (both ends included)."""
    return interpolation_errors(model, state_a, state_b, *data.test, points, batchnorm_x=data.train[0])


def instability(session: Session, start_state: dict, mask: Mask | None = None, k: int = 0, *,
                seeds: tuple[int, int] = (1, 2), points: int = 21, pack: int = 1) -> dict:
    """Train ``session``'s model to step k from ``start_state`` (data order: the config's seed), then two copies to
    the end of the budget with data orders ``seeds``; returns errors along the line between them and the
    instability. Every run goes through ``session.train_from`` (the rewind and pruned-weights checks); ``pack``
    >= 2 trains the two copies in one fused pass (scheduled by lottery/passes.py; lottery/fused.py: the same
    results up to float rounding), each copy rewound and checked alike."""
    cfg, model, data = session.cfg, session.model, session.data
    total = session.total_steps
    if not 0 <= k < total:
        raise ConfigError(f"k must be in [0, {total}) (the training budget), got {k}")
    if len(set(seeds)) != 2:
        raise ConfigError(f"two different data-order seeds are needed, got {seeds}")
    mask = mask if mask is not None else Mask.ones_like(model)
    at_k = start_state
    if k > 0:
        session.train_from(start_state, mask, f"stability: to step {k}", point="train:stability", steps=k)
        at_k = snapshot(model)
    halves = [Run(session, lambda: (at_k, mask), f"stability: copy {s}", "train:stability", seed=s, steps=total - k)
              for s in seeds]
    done: dict[int, tuple] = {}

    def record(run: Run, trained, result) -> None:
        done[run.seed] = result, snapshot(trained)

    # pack >= 2: the two copies in one fused pass (the scheduler's, as every other), rewound and checked alike
    train_passes(halves, pack, record, label=lambda chunk: ("stability: two copies fused", "train:stability"))
    results, finals = [done[s][0] for s in seeds], [done[s][1] for s in seeds]
    copies = [{"seed": s, "status": r.status, "test_accuracy": r.test_accuracy} for s, r in zip(seeds, results)]
    alphas, errors = interpolate_errors(model, finals[0], finals[1], data, points)
    exact = k == 0 or (cfg.schedule == "constant" and not cfg.warmup_steps)
    return {
        "k": k, "seeds": list(seeds), "points": points, "alphas": alphas, "errors": errors, "copies": copies,
        "instability": barrier_height(errors),
        "batchnorm_recomputed": has_batchnorm(model),
        "note": None if exact else "lr schedule and optimizer state restart at step k (approximation)",
    }


def stability_run(run_dir: str | Path, level: int = 0, k: int = 0, seeds: tuple[int, int] = (1, 2),
                  points: int = 21, plot: bool = True, progress: bool = False, pack: int = 1) -> dict:
    """``instability`` for level ``level`` of an IMP run: its mask and rewind state. Results accumulate in
    ``stability.json`` (a finished (level, k, seeds, points) is returned, not recomputed) and the plot is
    ``stability_level_NN_kK.png`` in the run directory."""
    distributed.refuse_processes("stability")
    run = RunDir(run_dir)
    cfg = run.config()
    results = run.load_results_strict()  # the level must be finished and ok: checked before anything is written
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
            session = Session(cfg, run)
            session.progress = progress
            mask = (Mask.ones_like(session.model) if level == 0 else run.load_mask(level)).to(session.device)
            found = {"level": level, "density": mask.density,
                     **instability(session, session.rewind_state(level), mask, k, seeds=tuple(seeds), points=points,
                                   pack=pack)}
            stored["entries"].append(found)
            save_json(run.path / RESULTS_FILE, stored)
    if plot:
        found["plot"] = str(plot_path_errors(found, run.path / f"stability_level_{level:02d}_k{k}.png"))
    return found


def valid_results(stored: object) -> bool:
    """stability.json: entries with finite errors in [0, 1] and a finite instability."""
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


@register_driver("stability", "instability (linear mode connectivity) of a level from step k", options=StabilityOptions,
                 report=lambda result, *_: f"{format_result(result)}\nplot: {result['plot']}")
def stability_command(run_dir: str | Path, opts: StabilityOptions) -> dict:
    return stability_run(run_dir, opts.level, opts.k, opts.seeds, opts.points, progress=opts.progress, pack=opts.pack)
