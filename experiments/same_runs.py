"""How closely two runs directories holding the same IMP runs agree (nothing is trained here).

    python experiments/same_runs.py RUNS_A RUNS_B

The run directories' names carry the hash of every setting that reaches training, so a name found in both holds
the same experiment trained twice — e.g. once one run at a time and once with ``--jobs 2 --pack 4`` (``pack`` and
``jobs`` are not hashed). Prints (1) run by run, over every level and arm found in both: equal statuses, equal
early-stop steps and the distribution of test-accuracy differences; and (2) per init scheme and arm, the mean test
accuracy over the seeds of A and of B at each level, next to the seed spread, as a count: at how many (scheme,
level, arm) cells the two means differ by less than the seeds' standard deviation (of A and B pooled).
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from lottery.storage.atomic import load_json


def _arms(level: dict):
    yield "ticket", level
    yield from level.get("controls", {}).items()


def pairs(a_dir: Path, b_dir: Path):
    """(run name, init label, seed, level, arm, run in A, run in B) for every run trained in both."""
    for path in sorted(a_dir.glob("*/results.json")):
        other = b_dir / path.parent.name / "results.json"
        if not other.exists():
            continue
        a, b = load_json(path), load_json(other)
        cfg = a["config"]
        label = cfg["init"] + "".join(f":{k}={v}" for k, v in sorted((cfg.get("init_options") or {}).items()))
        label += f"*{cfg['init_scale']:g}" if cfg.get("init_scale", 1.0) != 1.0 else ""
        b_levels = {e["level"]: e for e in b["levels"]}
        for level in a["levels"]:
            if level["level"] not in b_levels:
                continue
            b_arms = dict(_arms(b_levels[level["level"]]))
            for arm, run in _arms(level):
                if arm in b_arms:
                    yield path.parent.name, label, cfg["seed"], level["level"], arm, run, b_arms[arm]


def run_table(rows: list) -> str:
    diffs = [abs(a["test_accuracy"] - b["test_accuracy"]) for *_, a, b in rows
             if a.get("test_accuracy") is not None and b.get("test_accuracy") is not None]
    lines = [f"{len({r[0] for r in rows})} run directories in both, {len(rows)} training runs compared",
             f"same status: {sum(a['status'] == b['status'] for *_, a, b in rows)}; "
             f"same early-stop step: {sum(a['early_stop_step'] == b['early_stop_step'] for *_, a, b in rows)}"]
    if diffs:
        q = statistics.quantiles(diffs, n=10) if len(diffs) > 1 else [diffs[0]] * 9
        lines.append(f"|test accuracy A - B| in points: median {100 * statistics.median(diffs):.2f}, 90th percentile "
                     f"{100 * q[8]:.2f}, max {100 * max(diffs):.2f}; identical in {sum(d == 0 for d in diffs)} "
                     f"of {len(diffs)}")
    return "\n".join(lines)


def spread_table(rows: list) -> str:
    """Per (scheme, level, arm) with >= 2 seeds in both: |mean A - mean B| against the pooled seed std."""
    cells: dict = defaultdict(lambda: ([], []))
    for _, label, _, level, arm, a, b in rows:
        if a.get("test_accuracy") is not None and b.get("test_accuracy") is not None:
            cells[(label, level, arm)][0].append(a["test_accuracy"])
            cells[(label, level, arm)][1].append(b["test_accuracy"])
    within, worst, counted = 0, (0.0, None), 0
    per_scheme: dict = defaultdict(lambda: [0, 0])
    for key, (xa, xb) in sorted(cells.items()):
        if len(xa) < 2:
            continue
        std = statistics.pstdev(xa + xb)
        gap = abs(statistics.mean(xa) - statistics.mean(xb))
        counted += 1
        per_scheme[key[0]][1] += 1
        if gap <= std:
            within += 1
            per_scheme[key[0]][0] += 1
        if gap - std > worst[0]:
            worst = (gap - std, key, gap, std)
    lines = [f"(scheme, level, arm) cells with >= 2 seeds: {counted}; |mean A - mean B| within the seeds' std: "
             f"{within}"]
    lines += [f"  {label:<28} {n}/{total}" for label, (n, total) in sorted(per_scheme.items())]
    if worst[1] is not None:
        _, (label, level, arm), gap, std = worst
        lines.append(f"largest excess: {label} level {level} {arm}: means differ by {100 * gap:.2f} points, seed std "
                     f"{100 * std:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_a", type=Path)
    parser.add_argument("runs_b", type=Path)
    args = parser.parse_args()
    rows = list(pairs(args.runs_a, args.runs_b))
    if not rows:
        raise SystemExit(f"no run directory of {args.runs_a} is also in {args.runs_b}: nothing to compare")
    print(run_table(rows))
    print()
    print(spread_table(rows))


if __name__ == "__main__":
    main()
