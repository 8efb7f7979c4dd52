"""The headline numbers of README.md and experiments/RESULTS.md, printed from finished run directories.

    python experiments/headline.py RUNS_DIR [--metric early_stop|final]

RUNS_DIR holds the runs of the commands in experiments/RESULTS.md ("Headline results, under the verdict rules"):
``lenet300_fashion_auto-*`` (5 seeds), ``mlp-mnist1d-*`` (the default run, 5 seeds), ``deep20-*`` and
``deep20_sgd-*`` (He vs Glorot, dense, 10 seeds each) and ``calibrated_controls-*`` (calibrated controls, He and
Glorot, 3 seeds). Every interval and verdict comes from lottery/stats.py, as in ``lottery report``.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from lottery.reporting.tables import format_verdicts
from lottery.stats import arm_value, compare_levels, interval, welch_interval
from lottery.storage.rundir import RunDir


def runs_named(root: Path, name: str) -> dict[str, dict[int, dict]]:
    """``{init label: {seed: results}}`` of the runs ``<name>-<hash>`` under ``root``."""
    out: dict[str, dict[int, dict]] = defaultdict(dict)
    for path in sorted(root.glob(f"{name}-*")):
        if not (path / "results.json").is_file() or path.name.rpartition("-")[0] != name:
            continue
        results = RunDir(path).read_results()
        cfg = results["config"]
        label = cfg["init"] + (f"*{cfg['init_scale']:g}" if cfg.get("init_scale", 1) != 1 else "")
        out[label][cfg["seed"]] = results
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def pct(stat: dict) -> str:
    if stat.get("mean") is None:
        return "-"
    if stat.get("lo") is None:
        return f"{100 * stat['mean']:.2f}"
    return f"{100 * stat['mean']:.2f} [{100 * stat['lo']:.2f}, {100 * stat['hi']:.2f}]"


def imp_section(root: Path, name: str, metric: str) -> None:
    for label, runs in runs_named(root, name).items():
        done = [s for s, r in runs.items() if r.get("status") != "running"]
        print(f"\n### {name} ({label}; seeds {list(runs)}, finished {done})\n")
        print(format_verdicts(compare_levels(runs, metric)))
        budgets = {s: r["levels"][0].get("steps") for s, r in runs.items()}
        stops = {s: r["levels"][0].get("early_stop_step") for s, r in runs.items()}
        print(f"dense budget (steps) by seed: {budgets}; dense early stop: {stops}")


def dense_section(root: Path, name: str, metric: str) -> None:
    schemes = runs_named(root, name)
    print(f"\n### {name}: dense accuracy ({metric}), mean [95 % t interval]\n")
    values = {}
    for label, runs in schemes.items():
        values[label] = [arm_value(r["levels"][0], "ticket", metric) for r in runs.values()]
        shown = ", ".join("div" if v is None else f"{100 * v:.1f}" for v in values[label])
        print(f"- {label} ({len(runs)} seeds): {pct(interval(values[label]))}; by seed: {shown}")
    if {"kaiming_normal", "xavier_normal"} <= set(values):
        w = welch_interval(values["kaiming_normal"], values["xavier_normal"])
        print(f"- He − Glorot (Welch): {100 * w['mean']:+.2f} points [{100 * w['lo']:+.2f}, {100 * w['hi']:+.2f}], "
              f"df {w['df']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--metric", default="early_stop", choices=("early_stop", "final"))
    args = parser.parse_args()
    for name in ("lenet300_fashion_auto", "mlp-mnist1d", "calibrated_controls"):
        if name == "mlp-mnist1d":  # the default run is named <model>-<dataset>
            imp_section(args.runs, "mlp-mnist1d", args.metric)
        else:
            imp_section(args.runs, name, args.metric)
    for name in ("deep20", "deep20_sgd"):
        dense_section(args.runs, name, args.metric)


if __name__ == "__main__":
    main()
