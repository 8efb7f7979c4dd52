"""The init study's extra tables, from finished `lottery compare-inits` directories (nothing is trained here).

    python experiments/init_study.py runs/compare-inits_deep_mlp_fashion-<hash> [--level 8]

Prints (1) whether IMP rescues a poor init: each scheme's dense accuracy, its best ticket (level, density,
accuracy, mean ± std over seeds) and the gap to the best dense network of the comparison; and (2) how much the
tickets of different schemes share at one level: IoU of their masks (first seed) next to the IoU two independent
random masks of those densities would have; and (3) the same for every (scheme, seed) of the first two seeds, so
that tickets of two schemes are also compared from independent draws; and (4) what the comparison cost in
training time.
"""
from __future__ import annotations

import argparse
import re

from lottery.analysis.overlap import overlap_across_runs, overlap_across_schemes
from lottery.storage.atomic import load_json
from lottery.storage.summary import load_summary


def _short(label: str) -> str:
    """A variant's label without its checkpoint path: checkpoint:path=runs/x/final.pt:exclude=fc13 ->
    checkpoint:path=…:exclude=fc13."""
    return re.sub(r"path=[^:]*", "path=…", label)


def _pct(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "      -      "
    return f"{100 * stat['mean']:5.2f} ± {100 * (stat['std'] or 0):4.2f}"


def rescue_table(summary: dict) -> str:
    ok = [s for s in summary["schemes"] if s["dense"]["test_accuracy"]["mean"] is not None]
    best_dense = max(ok, key=lambda s: s["dense"]["test_accuracy"]["mean"])
    ref = best_dense["dense"]["test_accuracy"]["mean"]
    lines = [f"best dense network: {_short(best_dense['label'])} {100 * ref:.2f} %",
             f"{'scheme':<24} {'status':<9} {'dense':>13} {'best ticket':>13} {'level':>5} {'weights %':>9} "
             f"{'ticket - best dense':>19}"]
    for s in summary["schemes"]:
        rows = [r for r in s["levels"] if r["level"] > 0 and r["ticket"]["mean"] is not None]
        best = max(rows, key=lambda r: r["ticket"]["mean"], default=None)
        gap = f"{100 * (best['ticket']['mean'] - ref):+19.2f}" if best else f"{'-':>19}"
        lines.append(f"{_short(s['label']):<24} {s['status']:<9} {_pct(s['dense']['test_accuracy']):>13} "
                     f"{_pct(best['ticket'] if best else None):>13} {best['level'] if best else '-':>5} "
                     f"{100 * best['density'] if best else 0:9.1f} {gap}")
    return "\n".join(lines)


def overlap_table(comparison_dir: str, level: int) -> str:
    ov = overlap_across_schemes(comparison_dir, level)
    base = ov.random_baseline()
    labels = [_short(x) for x in ov.labels]
    width = max(len(x) for x in labels)
    lines = [f"mask IoU between schemes at level {level} (first seed); [random masks of those densities]",
             " " * width + "  " + "  ".join(f"{x[:12]:>12}" for x in labels)]
    for i, a in enumerate(labels):
        cells = [f"{ov.matrix[i, j]:.2f} [{base[i, j]:.2f}]" for j in range(len(ov.labels))]
        lines.append(f"{a:<{width}}  " + "  ".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def seeds_table(summary: dict, level: int) -> str:
    """IoU of the masks of every (scheme, seed) pair of the first two seeds, schemes that trained (status ok):
    same scheme and other seed shows how much a ticket depends on its draw; other scheme and other seed compares
    two independent inits (with one seed, two schemes draw the same N(0, 1) numbers and differ only in scale)."""
    seeds = summary["seeds"][:2]
    runs = {f"{_short(s['label'])[:10]}/s{r['seed']}": r["run_dir"] for s in summary["schemes"] if s["status"] == "ok"
            for r in s["runs"] if r["seed"] in seeds}
    if len(runs) < 2:
        return "mask IoU across seeds: needs two runs that trained"
    ov = overlap_across_runs(runs, level)
    base = ov.random_baseline()
    width = max(len(x) for x in ov.labels)
    lines = [f"mask IoU at level {level} between (scheme, seed) pairs, seeds {seeds}; random masks of those "
             f"densities: {base[0, 1]:.2f}", " " * width + " " + " ".join(f"{x:>13}" for x in ov.labels)]
    for i, a in enumerate(ov.labels):
        lines.append(f"{a:<{width}} " + " ".join(f"{ov.matrix[i, j]:13.2f}" for j in range(len(ov.labels))))
    return "\n".join(lines)


def time_line(summary: dict) -> str:
    """What the comparison cost: training runs and their summed wall time (each run's own clock, so runs that
    shared the CPU with others count their slower time)."""
    total, runs = 0.0, 0
    for s in summary["schemes"]:
        for r in s["runs"]:
            for e in load_json(f"{r['run_dir']}/results.json")["levels"]:
                for run in [e, *e.get("controls", {}).values()]:
                    if run.get("wall_time") is not None:
                        total, runs = total + run["wall_time"], runs + 1
    return f"training: {runs} runs, {total / 3600:.2f} h of summed wall time ({total / max(runs, 1):.1f} s per run)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison_dir")
    parser.add_argument("--level", type=int, default=8, help="level whose masks are compared (default 8)")
    args = parser.parse_args()
    summary = load_summary(args.comparison_dir)
    print(rescue_table(summary))
    print()
    print(overlap_table(args.comparison_dir, args.level))
    print()
    print(seeds_table(summary, args.level))
    print()
    print(time_line(summary))


if __name__ == "__main__":
    main()
