"""The mask-transfer study's tables and figures from several sources' transfer.json (experiments/RESULTS.md,
"Mask vs init").

    python experiments/mask_transfer.py RUN_DIR [RUN_DIR ...] --level 7 [--figures experiments/figures]

prints, per source, the rows (`lottery transfer`'s table), then one line per (source, target scheme, draw,
alignment) over the target seeds, and writes the transfer matrix of all
sources (mask_transfer_matrix.png) and each source's accuracy-vs-density figure (mask_transfer_<init>.png).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lottery.drivers.transfer import ALIGNMENTS, pooled_restored, reference_row
from lottery.reporting.transfer_table import format_table
from lottery.reporting.plots.transfer import plot_transfer_accuracy, plot_transfer_matrix
from lottery.stats import mean_std
from lottery.storage.atomic import load_json
from lottery.storage.rundir import RunDir


def draws_table(results: list[dict], level: int) -> str:
    """Per source, target scheme, draw (the source's own seed = the same N(0, 1) draw under another scale, or new
    seeds) and alignment: mean ± std over seeds of the accuracy and its random mask, and two restored shares:
    of the source ticket's advantage (pooled over each scheme's random masks), and of the advantage the *target
    scheme's* own ticket (its source's reference row) has over random masks on that scheme."""
    every = [r for res in results for r in res["rows"] if r["level"] == level]
    # "of target": against the target scheme's own ticket from the same seed (its source run, when given)
    refs = {(res["source"]["init"], res["source"]["seed"]): reference_row(res, level) for res in results}
    lines = [f"{'source':<18} {'target':<15} {'draw':<5} {'align':<22} {'n':>2} {'mask %':>10} {'random %':>10} "
             f"{'of source':>9} {'of target':>9}"]
    for res in results:
        src, ref = res["source"], reference_row(res, level)
        groups: dict = {}
        for r in res["rows"]:
            if r["level"] == level and not r.get("reference"):
                draw = "same" if r["seed"] == src["seed"] else "new"
                groups.setdefault((r["init"], draw, r["align"], r.get("match")), []).append(r)
        lines.append(f"{src['init'] + ' s' + str(src['seed']):<18} {'(own ticket)':<15} {'':<5} {'reference':<22} "
                     f"{1:>2} {100 * ref['test_accuracy']:>10.1f} "
                     f"{100 * ref['controls']['random_mask']['test_accuracy']:>10.1f}")
        for (init, draw, align, match), rows in sorted(groups.items(), key=lambda g: (
                g[0][0], g[0][1] == "new", ALIGNMENTS.index(g[0][2]))):
            acc = mean_std([100 * r["test_accuracy"] for r in rows])
            rnd = mean_std([100 * r["controls"]["random_mask"]["test_accuracy"] for r in rows])
            of_source = pooled_restored(rows, every, ref)
            target_ref = refs.get((init, src["seed"]))
            of_target = pooled_restored(rows, every, target_ref) if target_ref else None
            lines.append(f"{'':<18} {init:<15} {draw:<5} {align + ('/' + match if match else ''):<22} {len(rows):>2} "
                         f"{acc['mean']:>6.1f}±{acc['std']:<3.1f} {rnd['mean']:>6.1f}±{rnd['std']:<3.1f} "
                         f"{_share(of_source):>9} {_share(of_target):>9}")
    return "\n".join(lines)


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="IMP run directories that `lottery transfer` has written to")
    p.add_argument("--level", type=int, required=True)
    p.add_argument("--figures", default="experiments/figures")
    args = p.parse_args()
    results = [load_json(Path(r) / "transfer.json") for r in args.runs]
    for res in results:
        print(format_table(res, args.level), end="\n\n")
    print("per target scheme, draw and alignment, mean ± std over seeds; restored shares pooled over random masks:")
    print(draws_table(results, args.level))
    out = Path(args.figures)
    print(plot_transfer_matrix(results, args.level, path=out / "mask_transfer_matrix.png"))
    for run, res in zip(args.runs, results):
        src = res["source"]
        name = src["init"] + (f"_s{src['seed']}" if src["seed"] else "")  # seed 0 keeps the name it had
        print(plot_transfer_accuracy(res, RunDir(run).load_results(), path=out / f"mask_transfer_{name}.png"))


if __name__ == "__main__":
    main()
