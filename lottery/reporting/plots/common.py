"""Shared pieces of the figures: saving, the log-density x-axis, mean ± std bands."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator

_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG (atomically: a temp file renamed) and close it."""
    from lottery.storage.atomic import atomic_write

    path = Path(path)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return path


def density_axis(ax, xlabel: str = "weights remaining (%)") -> None:
    """Log x-axis of weights remaining, dense on the left, sparsest on the right (the LTH papers' layout)."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, which="both")
    plain_log_ticks(ax.xaxis)


def plain_log_ticks(axis) -> None:
    """Label a log axis 1, 2, 3, 5, 7, 10, 20, ..., instead of 10^0 or 9x10^1."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
    axis.set_major_formatter(_PLAIN)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def band(ax, xs, means, stds, label=None, color=None, marker="o", **kw):
    """A line through the means and, where some half-width is non-zero, a shaded ± band (``stds``: a std or an
    interval's half-width, as the caller says)."""
    (line,) = ax.plot(xs, means, marker=marker, ms=3, label=label, color=color, **kw)
    if stds is not None and any(s for s in stds):
        lo = [m - s for m, s in zip(means, stds)]
        hi = [m + s for m, s in zip(means, stds)]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    return line


def legend(ax, **kw) -> None:
    """A legend only when something is labelled (a fully diverged run draws nothing)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)
