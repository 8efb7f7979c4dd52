"""Figures of one IMP run (or of several seeds of one config), drawn from ``results.json`` and the saved masks."""
from __future__ import annotations

import inspect
import math
from pathlib import Path

import matplotlib.pyplot as plt

from lottery.data import DATASETS
from lottery.reporting.plots.common import band, density_axis, legend, plain_log_ticks, save
from lottery.reporting.plots.signal import plot_layer_signal
from lottery.stats import METRICS, dense_still_learning, interval, still_learning_note
from lottery.storage.rundir import RunDir

SERIES = (("ticket", None), ("reinit", "reinit"), ("random mask", "random_mask"))
RUN_FILES = {
    "accuracy": "accuracy_vs_density.png",
    "early_stop": "early_stop_vs_density.png",
    "layer_density": "layer_density.png",
    "training_curves": "training_curves.png",
    "mask_pixels": "mask_pixels.png",  # image models only
    "layer_signal": "layer_signal.png",  # runs that recorded it (record_signal)
    "barrier": "barrier.png",  # runs that measured it (--barrier-points)
}
SEED_FILES = {"accuracy": "seeds_accuracy_vs_density.png", "early_stop": "seeds_early_stop_vs_density.png"}
# Loaders that read fixed-shape files: their shape is known without reading them (synthetic's comes from options).
_FIXED_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}


def _as_list(results) -> list[dict]:
    return [results] if isinstance(results, dict) else list(results)


def _title(results: dict, extra: str = "") -> str:
    c = results.get("config", {})
    parts = [c.get("name", ""), c.get("model", ""), c.get("dataset", ""), f"init {c.get('init', '')}"]
    return " · ".join(p for p in parts if p) + extra


def _by_level(results_list: list[dict], key: str, control: str | None) -> tuple[list, list, list]:
    """x = weights remaining (%), mean and 95 % t half-width over the results (seeds) of ``key`` at each level
    (lottery/stats.py; no band for one seed)."""
    xs, means, halves = [], [], []
    levels = sorted({e["level"] for r in results_list for e in r["levels"]})
    k = 100 if key.endswith("accuracy") else 1
    for level in levels:
        entries = [e for r in results_list for e in r["levels"] if e["level"] == level]
        srcs = [e if control is None else e.get("controls", {}).get(control) for e in entries]
        vals = [s[key] for s in srcs if s and s.get("status") == "ok" and s.get(key) is not None]
        if not vals:
            continue
        m = interval(vals)
        xs.append(100 * sum(e["density"] for e in entries) / len(entries))
        means.append(k * m["mean"])
        halves.append(0.0 if m["hi"] is None else k * (m["hi"] - m["mean"]))
    return xs, means, halves


def _vs_density(results, key: str, ylabel: str, ax=None):
    results_list = _as_list(results)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    for label, control in SERIES:
        xs, means, halves = _by_level(results_list, key, control)
        if xs:
            band(ax, xs, means, halves, label=label)
    dense = [e.get(key) for r in results_list for e in r["levels"] if e["level"] == 0 and e["status"] == "ok"]
    if any(v is not None for v in dense):  # a find_tickets loop may return no early_stop_step
        m = interval(dense)
        k = 100 if key.endswith("accuracy") else 1
        ax.axhline(k * m["mean"], color="gray", ls="--", label="dense")
        if m["hi"] is not None:
            ax.axhspan(k * m["lo"], k * m["hi"], color="gray", alpha=0.1, lw=0)
    density_axis(ax)
    ax.set_ylabel(ylabel)
    legend(ax, fontsize=8)
    n = len(results_list)
    ax.set_title(_title(results_list[0], f" · {n} seeds, mean with 95 % interval" if n > 1 else " · one seed"),
                 fontsize=9)
    note = still_learning_note(dense_still_learning(results_list))
    if note:  # every figure of an unfinished dense baseline says so
        ax.text(0.01, 0.01, "dense still learning: train longer (--steps N or auto)", transform=ax.transAxes,
                fontsize=7, color="firebrick", va="bottom")
    return fig or ax.figure


def plot_accuracy_vs_density(results, ax=None, metric: str = "early_stop"):
    """Test accuracy (``metric``: at the early-stop step, or final) of ticket / reinit / random mask against
    weights remaining, with 95 % interval bands over seeds; dense as a dashed line."""
    name = {"early_stop": "at early stop", "final": "final weights"}[metric]
    return _vs_density(results, METRICS[metric], f"test accuracy, {name} (%)", ax)


def plot_early_stop_vs_density(results, ax=None):
    """Early-stop step (minimum validation loss) of ticket and controls against weights remaining."""
    return _vs_density(results, "early_stop_step", "early-stop step (min val loss)", ax)


def plot_layer_density(results: dict, ax=None):
    """Each layer's density at each level against the overall density (log-log; global pruning spreads them)."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    levels = [e for e in results["levels"] if e.get("layer_density")]
    layers = list(levels[0]["layer_density"]) if levels else []
    xs = [100 * e["density"] for e in levels]
    for name in layers:
        ax.plot(xs, [100 * e["layer_density"].get(name, math.nan) for e in levels], marker="o", ms=3, label=name)
    if xs:
        ax.plot(xs, xs, color="gray", ls=":", label="overall")
    density_axis(ax, "overall weights remaining (%)")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set_ylabel("layer weights remaining (%)")
    legend(ax, fontsize=7, ncol=2)
    ax.set_title(_title(results, " · per-layer density"), fontsize=9)
    return fig or ax.figure


def plot_training_curves(results: dict, ax=None, metric: str = "accuracy"):
    """Validation accuracy (or loss) against step for the ticket of every level, coloured by density."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    col = 2 if metric == "accuracy" else 1
    levels = [e for e in results["levels"] if e.get("curve")]
    cmap = plt.get_cmap("viridis")
    for i, e in enumerate(levels):
        steps = [p[0] for p in e["curve"]]
        vals = [p[col] * (100 if col == 2 else 1) for p in e["curve"]]
        color = cmap(i / max(len(levels) - 1, 1))
        ax.plot(steps, vals, color=color, lw=2 if e["level"] == 0 else 1,
                label=f"L{e['level']} {100 * e['density']:.1f}%" + (" (dense)" if e["level"] == 0 else ""))
    ax.set_xlabel("training step")
    ax.set_ylabel("validation accuracy (%)" if col == 2 else "validation loss")
    ax.grid(alpha=0.3)
    if levels:
        legend(ax, fontsize=6, ncol=2)
    ax.set_title(_title(results, " · ticket training curves per level"), fontsize=9)
    return fig or ax.figure


# -- the first layer's mask as an image -----------------------------------------------------------------------
def input_shape_of(config: dict) -> tuple | None:
    """The data set's input shape from a config dict, without loading the data (None when unknown)."""
    opts = config.get("dataset_options") or {}
    if "input_shape" in opts:
        shape = opts["input_shape"]
        return tuple(shape) if isinstance(shape, (list, tuple)) else (shape,)
    name = config.get("dataset")
    if name in _FIXED_SHAPES:
        return _FIXED_SHAPES[name]
    try:
        param = inspect.signature(DATASETS.get(name)).parameters.get("input_shape")
    except Exception:  # an unknown name: no mask image rather than a failed report
        return None
    if param is not None and isinstance(param.default, (tuple, list)):
        return tuple(param.default)
    return None


def image_shape(input_shape) -> tuple[int, int, int] | None:
    """(C, H, W) when the input is an image (two spatial dims > 1), else None."""
    if not input_shape:
        return None
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[1] < 2 or shape[2] < 2:
        return None
    return shape


def first_layer_pixels(mask, input_shape) -> tuple[str, "object"] | None:
    """(layer name, H×W array of the fraction of the first layer's weights kept per input pixel), or None.

    The first layer must be fully connected (a 2-D weight) with one input per pixel and channel of the image.
    """
    shape = image_shape(input_shape)
    if shape is None or not len(mask):
        return None
    name = next(iter(mask))
    w = mask[name]
    c, h, wd = shape
    if w.ndim != 2 or w.shape[1] != c * h * wd:
        return None
    kept = w.float().reshape(w.shape[0], c, h, wd).mean(dim=(0, 1))
    return name, kept.cpu().numpy()


def _pick_levels(levels: list[int], n: int) -> list[int]:
    if len(levels) <= n:
        return levels
    idx = sorted({round(i * (len(levels) - 1) / (n - 1)) for i in range(n)})
    return [levels[i] for i in idx]


def plot_mask_pixels(run_path, results: dict, input_shape=None, levels=None, max_panels: int = 6):
    """The first layer's kept fraction per input pixel, one panel per level (a few levels); None if not an image."""
    input_shape = input_shape or input_shape_of(results.get("config", {}))
    if image_shape(input_shape) is None:
        return None
    run = RunDir(run_path)
    done = [e["level"] for e in results["levels"]]
    chosen = list(levels) if levels is not None else _pick_levels(done, max_panels)
    panels = []
    for level in chosen:
        mask = run.load_mask(level)  # level 0's all-ones mask is saved too
        px = first_layer_pixels(mask, input_shape) if mask is not None else None
        if px is not None:
            density = next((e["density"] for e in results["levels"] if e["level"] == level), mask.density)
            panels.append((level, density, *px))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels) + 0.6, 2.8), squeeze=False)
    for ax, (level, density, name, img) in zip(axes[0], panels):
        im = ax.imshow(img, cmap="magma", vmin=0, vmax=max(float(img.max()), 1e-9))
        ax.set_title(f"L{level}: {100 * density:.1f}% kept", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{panels[0][2]}: fraction of weights kept per input pixel", fontsize=9)
    fig.tight_layout()
    return fig


def plot_barrier(results: dict):
    """The error barrier between each level's trained weights and its parent's (left, against density) and the
    error along each line (right): levels stay linearly connected while they match dense. None without barriers."""
    levels = [e for e in results["levels"] if e.get("barrier")]
    if not levels:
        return None
    fig, (ax, path) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax.plot([100 * e["density"] for e in levels], [100 * e["barrier"]["barrier"] for e in levels], marker="o")
    ax.axhline(0, color="gray", lw=0.8)
    density_axis(ax)
    ax.set_ylabel("error barrier to the parent level (points)")
    ax.grid(alpha=0.3)
    for e in levels:
        b = e["barrier"]
        path.plot(b["alphas"], [100 * x for x in b["errors"]], marker=".", label=f"level {e['level']}")
    path.set_xlabel("α (0: parent level, 1: this level)")
    path.set_ylabel("validation error (%)")
    path.grid(alpha=0.3)
    legend(path)
    fig.suptitle(_title(results, " · barrier between successive levels"))
    fig.tight_layout()
    return fig


# -- writers --------------------------------------------------------------------------------------------------
def run_plots(run_path, results: dict, input_shape=None, metric: str = "early_stop") -> list[Path]:
    """Write every figure of one run into ``run_path``; returns the paths (``RUN_FILES`` names)."""
    run_path = Path(run_path)
    written = [
        save(plot_accuracy_vs_density(results, metric=metric), run_path / RUN_FILES["accuracy"]),
        save(plot_early_stop_vs_density(results), run_path / RUN_FILES["early_stop"]),
        save(plot_layer_density(results), run_path / RUN_FILES["layer_density"]),
        save(plot_training_curves(results), run_path / RUN_FILES["training_curves"]),
    ]
    fig = plot_mask_pixels(run_path, results, input_shape)
    if fig is not None:
        written.append(save(fig, run_path / RUN_FILES["mask_pixels"]))
    dense = next((e for e in results["levels"] if e["level"] == 0 and e.get("signal")), None)
    if dense is not None:
        fig = plot_layer_signal(dense["signal"], title=_title(results, " · dense network's layer signal"))
        written.append(save(fig, run_path / RUN_FILES["layer_signal"]))
    fig = plot_barrier(results)
    if fig is not None:
        written.append(save(fig, run_path / RUN_FILES["barrier"]))
    return written


def seed_plots(out_dir, results_list: list[dict], metric: str = "early_stop") -> list[Path]:
    """Accuracy and early-stop step vs density with 95 % interval bands over several seeds of one config."""
    out_dir = Path(out_dir)
    return [save(plot_accuracy_vs_density(results_list, metric=metric), out_dir / SEED_FILES["accuracy"]),
            save(plot_early_stop_vs_density(results_list), out_dir / SEED_FILES["early_stop"])]
