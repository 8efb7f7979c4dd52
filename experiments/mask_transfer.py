"""The mask-transfer study's tables and figures from several sources' transfer.json (experiments/RESULTS.md,
"Mask vs init").

    python experiments/mask_transfer.py RUN_DIR [RUN_DIR ...] --level 7 [--figures experiments/figures]

prints, per source, the rows (`lottery transfer`'s table), then one line per (source, target scheme, alignment)
over the target seeds that are independent draws (not the source's seed), and writes the transfer matrix of all
sources (mask_transfer_matrix.png) and each source's accuracy-vs-density figure (mask_transfer_<init>.png).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lottery.drivers.transfer import ALIGNMENTS, format_table, pooled_restored, reference_row
from lottery.reporting.plots.transfer import plot_transfer_accuracy, plot_transfer_matrix
from lottery.stats import mean_std
from lottery.storage.atomic import load_json
from lottery.storage.rundir import RunDir


def independent_draws(results: list[dict], level: int) -> str:
    """Mean ± std over target seeds other than the source's: accuracy, its random mask, pooled restored share."""
    lines = [f"{'source':<18} {'target':<16} {'align':<22} {'n':>2} {'ticket %':>10} {'random %':>10} "
             f"{'restored':>10}"]
    for res in results:
        src = res["source"]
        ref = reference_row(res, level)
        groups: dict = {}
        for r in res["rows"]:
            if r["level"] == level and r["seed"] != src["seed"]:
                align = r["align"] + (f"/{r['match']}" if r.get("match") else "")
                groups.setdefault((r["init"], align), []).append(r)
        lines.append(f"{src['init'] + ' s' + str(src['seed']):<18} {'(own ticket)':<16} {'reference':<22} {1:>2} "
                     f"{100 * ref['test_accuracy']:>10.1f} "
                     f"{100 * ref['controls']['random_mask']['test_accuracy']:>10.1f} {1:>10.2f}")
        for (init, align), rows in sorted(groups.items(), key=lambda g: (g[0][0], ALIGNMENTS.index(g[0][1].split('/')[0]))):
            acc = mean_std([100 * r["test_accuracy"] for r in rows])
            rnd = mean_std([100 * r["controls"]["random_mask"]["test_accuracy"] for r in rows])
            rest = pooled_restored(rows, [r for r in res["rows"] if r["level"] == level], ref)
            lines.append(f"{'':<18} {init:<16} {align:<22} {len(rows):>2} {acc['mean']:>6.1f}±{acc['std']:<3.1f} "
                         f"{rnd['mean']:>6.1f}±{rnd['std']:<3.1f} {rest if rest is None else round(rest, 2):>10}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="IMP run directories that `lottery transfer` has written to")
    p.add_argument("--level", type=int, required=True)
    p.add_argument("--figures", default="experiments/figures")
    args = p.parse_args()
    results = [load_json(Path(r) / "transfer.json") for r in args.runs]
    for res in results:
        print(format_table(res, args.level), end="\n\n")
    print("independent target draws (seeds other than the source's), mean ± std over seeds:")
    print(independent_draws(results, args.level))
    out = Path(args.figures)
    print(plot_transfer_matrix(results, args.level, path=out / "mask_transfer_matrix.png"))
    for run, res in zip(args.runs, results):
        print(plot_transfer_accuracy(res, RunDir(run).load_results(),
                                     path=out / f"mask_transfer_{res['source']['init']}.png"))


if __name__ == "__main__":
    main()
