"""Matplotlib figures of a run: accuracy and early-stop step against weights remaining (log x-axis)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

SERIES = (("ticket", None), ("reinit", "reinit"), ("random mask", "random_mask"))


def _series(results: dict, key: str, control: str | None) -> tuple[list, list]:
    xs, ys = [], []
    for e in results["levels"]:
        src = e if control is None else e.get("controls", {}).get(control)
        if src and src.get(key) is not None and src.get("status") == "ok":
            xs.append(100 * e["density"])
            ys.append(src[key] * (100 if key == "test_accuracy" else 1))
    return xs, ys


def run_plots(run_path: Path, results: dict) -> list[Path]:
    written = []
    dense = next((e for e in results["levels"] if e["level"] == 0 and e["status"] == "ok"), None)
    for key, ylabel, fname in (("test_accuracy", "test accuracy (%)", "accuracy_vs_density.png"),
                               ("early_stop_step", "early-stop step (min val loss)", "early_stop_vs_density.png")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, control in SERIES:
            xs, ys = _series(results, key, control)
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, label=label)
        if dense is not None:
            ax.axhline(dense[key] * (100 if key == "test_accuracy" else 1), color="gray", ls="--", label="dense")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        ax.set_title(results.get("config", {}).get("name", ""))
        fig.tight_layout()
        path = Path(run_path) / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
