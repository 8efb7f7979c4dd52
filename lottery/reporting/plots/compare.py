"""Figures of an init-scheme comparison, drawn from ``summary.json`` (``lottery.drivers.compare_inits``): mean with a 95 % interval over seeds."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt

from lottery.reporting.plots.common import COLORS, band, density_axis, legend, save

COMPARE_FILES = {
    "accuracy": "compare_accuracy_vs_density.png",
    "controls": "compare_controls_vs_density.png",
    "early_stop": "compare_early_stop_vs_density.png",
    "training_curves": "compare_training_curves.png",
    "relative": "compare_relative_to_dense.png",
}
_CONTROL_LABELS = (("ticket", "ticket"), ("reinit", "reinit"), ("random_mask", "random mask"))


def _label(s: dict) -> str:
    return s["label"] + ("" if s["status"] == "ok" else f" ({s['status']})")


def _series(s: dict, key: str, k: float = 100) -> tuple[list, list, list]:
    """x (weights %), means and band half-widths: the 95 % interval where the row has one (lottery/stats.py),
    else the std (an early-stop step's spread)."""
    xs, means, halves = [], [], []
    for row in s["levels"]:
        stat = row.get(key)
        if stat and stat.get("mean") is not None:
            xs.append(100 * row["density"])
            means.append(k * stat["mean"])
            half = stat["hi"] - stat["mean"] if stat.get("hi") is not None else (stat.get("std") or 0)
            halves.append(k * half)
    return xs, means, halves


def _subtitle(summary: dict) -> str:
    n = len(summary["seeds"])
    return f"{n} seed{'s' if n > 1 else ''}" + (", mean with 95 % interval" if n > 1 else "")


def plot_compare_accuracy(summary: dict, ax=None):
    """Ticket test accuracy vs weights remaining per init scheme; each scheme's dense accuracy dashed."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, s in enumerate(summary["schemes"]):
        color = COLORS[i % len(COLORS)]
        xs, means, stds = _series(s, "ticket")
        if xs:
            band(ax, xs, means, stds, label=_label(s), color=color)
        dense = s["dense"]["test_accuracy"]
        if dense["mean"] is not None:
            ax.axhline(100 * dense["mean"], color=color, ls="--", lw=0.8)
    ax.axhline(100 * summary["chance_accuracy"], color="black", ls=":", lw=0.8, label="chance")
    density_axis(ax)
    ax.set_ylabel("ticket test accuracy (%)  [dashed: dense]")
    legend(ax, fontsize=7)
    ax.set_title(f"IMP tickets per init scheme · {_subtitle(summary)}", fontsize=9)
    return fig or ax.figure


def plot_compare_relative(summary: dict, ax=None):
    """Ticket minus the scheme's own dense accuracy (points): the paired difference by seed and its 95 % interval.

    Schemes whose dense accuracies differ by tens of points merge into one line on an absolute axis; relative to
    their own dense network the question "does a ticket match dense, down to which density?" is read directly.
    """
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, s in enumerate(summary["schemes"]):
        xs, means, halves = _series(s, "ticket_minus_dense")
        if xs:
            band(ax, xs, means, halves, label=_label(s), color=COLORS[i % len(COLORS)])
    ax.axhline(0, color="black", lw=0.8)
    density_axis(ax)
    ax.set_ylabel("ticket − dense test accuracy (points)")
    legend(ax, fontsize=7)
    ax.set_title(f"tickets relative to each scheme's dense network · {_subtitle(summary)}", fontsize=9)
    return fig or ax.figure


def plot_compare_early_stop(summary: dict, ax=None):
    """Ticket early-stop step vs weights remaining per init scheme."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, s in enumerate(summary["schemes"]):
        xs, means, stds = _series(s, "early_stop_step", k=1)
        if xs:
            band(ax, xs, means, stds, label=_label(s), color=COLORS[i % len(COLORS)])
    density_axis(ax)
    ax.set_ylabel("early-stop step (min val loss)")
    legend(ax, fontsize=7)
    ax.set_title(f"early-stop step per init scheme · {_subtitle(summary)}", fontsize=9)
    return fig or ax.figure


def plot_compare_controls(summary: dict):
    """One panel per init scheme: ticket vs reinit vs random mask, with the dense accuracy dashed."""
    schemes = summary["schemes"]
    cols = min(3, len(schemes))
    rows = math.ceil(len(schemes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, s in zip(axes.flat, schemes):
        for key, label in _CONTROL_LABELS:
            xs, means, stds = _series(s, key)
            if xs:
                band(ax, xs, means, stds, label=label)
        dense = s["dense"]["test_accuracy"]
        if dense["mean"] is not None:
            ax.axhline(100 * dense["mean"], color="gray", ls="--", label="dense")
        smallest = s.get("smallest_matching_density")
        if smallest is not None:
            ax.axvline(100 * smallest, color="green", ls=":", lw=1, label="smallest match")
        density_axis(ax)
        ax.set_title(_label(s), fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            legend(ax, fontsize=6)
        else:  # diverged before any level finished: say so instead of an empty panel
            ax.text(0.5, 0.5, "no finished level", ha="center", va="center", transform=ax.transAxes)
    for ax in axes.flat[len(schemes):]:
        ax.set_visible(False)
    for ax in axes.flat:
        ax.set_ylabel("test accuracy (%)", fontsize=8)
    fig.suptitle(f"ticket vs controls per init scheme · {_subtitle(summary)}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_compare_training_curves(summary: dict, ax=None):
    """Validation accuracy vs step of the dense network (level 0) per init scheme: how each init starts to learn."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, s in enumerate(summary["schemes"]):
        curve = s.get("dense_curve") or {}
        if curve.get("step"):
            band(ax, curve["step"], [100 * m for m in curve["mean"]], [100 * (x or 0) for x in curve["std"]],
                 label=_label(s), color=COLORS[i % len(COLORS)], marker=None)
    ax.axhline(100 * summary["chance_accuracy"], color="black", ls=":", lw=0.8, label="chance")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    legend(ax, fontsize=7)
    ax.set_title(f"dense training curves per init scheme · {_subtitle(summary)}", fontsize=9)
    return fig or ax.figure


def compare_plots(out_dir, summary: dict) -> list[Path]:
    """Write the comparison's figures into ``out_dir`` (``COMPARE_FILES`` names); returns their paths."""
    out_dir = Path(out_dir)
    return [
        save(plot_compare_accuracy(summary), out_dir / COMPARE_FILES["accuracy"]),
        save(plot_compare_controls(summary), out_dir / COMPARE_FILES["controls"]),
        save(plot_compare_early_stop(summary), out_dir / COMPARE_FILES["early_stop"]),
        save(plot_compare_training_curves(summary), out_dir / COMPARE_FILES["training_curves"]),
        save(plot_compare_relative(summary), out_dir / COMPARE_FILES["relative"]),
    ]
