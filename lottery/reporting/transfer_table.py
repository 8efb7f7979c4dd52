"""The tables of ``lottery transfer``: every row of ``transfer.json``, then per (init, alignment) over target seeds
the accuracy, the random masks and the restored share with its paired 95 % interval (lottery/stats.py)."""
from __future__ import annotations

import math

from lottery.drivers.transfer import ALIGNMENTS, random_accuracy, reference_row, restored, restored_interval, same_draw
from lottery.stats import mean_std


def format_table(stored: dict, level: int | None = None) -> str:
    """Every row (of ``level``, default all), then per (init, align) over target seeds: accuracy, random masks
    and restored with its paired 95 % interval; the source's own draw apart; dense barriers where measured."""
    src = stored["source"]
    lines = []
    for lv in sorted({r["level"] for r in stored["rows"]} if level is None else [level]):
        rows = [r for r in stored["rows"] if r["level"] == lv]
        ref = reference_row(stored, lv)
        density = rows[0]["density"] if rows else math.nan
        draws = max((sum(k == "random_mask" or k.startswith("random_mask_") for k in r["controls"]) for r in rows),
                    default=0)
        lines += [f"level {lv}'s mask ({100 * density:.2f} % of weights) of {src['init']} seed {src['seed']}, "
                  f"trained on other inits (data order of seed {src['seed']}); random % = mean of {draws} random "
                  "mask(s) per row; restored = share of the ticket's advantage over a random mask kept", ""]
        head = f"{'init':<22} {'seed':>4} {'align':<28} {'mask %':>8} {'random %':>8} {'restored':>8} {'early stop':>10}"
        lines += [head, "-" * len(head)]
        for r in rows:
            tag = " (ref)" if r.get("reference") else " (same draw)" if same_draw(r, src) else ""
            lines.append(f"{r['init']:<22} {r['seed']:>4} {_align(r) + tag:<28} {_pct(r['test_accuracy'])} "
                         f"{_pct(random_accuracy(r))} {_num(restored(r, ref)):>8} {r.get('early_stop_step') or '-':>10}")
        if ref is not None and "reproduces_source" in ref:
            lines.append(f"reference reproduces the source ticket bit for bit: {_reproduced(ref)}")
        lines += ["", "per init and alignment over target seeds (the reference and the source's own draw left out): "
                  "mean ± std; restored: mean [95 % paired t interval of accuracy - random over seeds] / the "
                  "reference's advantage", f"{'init':<22} {'align':<22} {'n':>2} {'mask %':>12} {'random %':>12} "
                  f"{'restored [95 % interval]':>26} {'barrier before -> after':>24}"]
        groups = _groups(rows)
        for (init, align), group in groups.items():
            fresh = [r for r in group if not same_draw(r, src)]
            if fresh:
                lines.append(_group_line(init, align, fresh, ref))
        same = [(init, align, [r for r in group if same_draw(r, src)]) for (init, align), group in groups.items()]
        if any(g for *_, g in same):
            lines.append("the source's own draw under another alignment (the source ticket again, not pooled):")
            lines += [_group_line(init, align, g, ref) for init, align, g in same if g]
        lines.append("")
    return "\n".join(lines).rstrip()


def _reproduced(ref: dict) -> str:
    """'yes', or NO with what the thread counts say about it."""
    if ref["reproduces_source"]:
        return "yes"
    threads, source = ref.get("threads"), ref.get("source_threads")
    if source is None:
        return (f"NO (the source run did not record its thread count; the reference trained on {threads} threads, "
                "and sums split over another count round differently)") if threads else "NO"
    return f"NO (on the source's {source} threads: a real difference, such as another torch version or device)"


def _group_line(init: str, align: str, group: list[dict], ref: dict | None) -> str:
    acc = mean_std([100 * r["test_accuracy"] for r in group if r["test_accuracy"] is not None])
    rnd = mean_std([100 * a for a in map(random_accuracy, group) if a is not None])
    share = restored_interval(group, ref)
    text = "-" if share is None else f"{share['mean']:.2f}" + (
        f" [{share['lo']:.2f}, {share['hi']:.2f}]" if share["lo"] is not None else " (one seed)")
    before = mean_std([r.get("barrier_before") for r in group])["mean"]
    after = mean_std([r.get("barrier_after") for r in group])["mean"]
    barrier = f"{100 * before:.1f} -> {100 * after:.1f} %" if before is not None and after is not None else "-"
    return f"{init:<22} {align:<22} {len(group):>2} {_ms(acc, '.1f'):>12} {_ms(rnd, '.1f'):>12} {text:>26} {barrier:>24}"


def _align(row: dict) -> str:
    return row["align"] + (f"/{row['match']}" if row.get("match") else "")


def _groups(rows: list[dict]) -> dict:
    """Rows but the reference by (init, alignment): inits in the order given, alignments in ALIGNMENTS' order."""
    out: dict = {}
    order = list(dict.fromkeys(r["init"] for r in rows))
    for r in sorted(rows, key=lambda r: (order.index(r["init"]), ALIGNMENTS.index(r["align"]))):
        if not r.get("reference"):
            out.setdefault((r["init"], _align(r)), []).append(r)
    return out


def _pct(acc: float | None) -> str:
    return f"{100 * acc:8.2f}" if acc is not None else f"{'-':>8}"


def _num(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else "-"


def _ms(stat: dict | None, fmt: str) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:{fmt}}±{stat['std']:{fmt}}"
