"""Export report figures: file size, multiply-adds and CPU latency of LeNet-300-100 tickets, dense vs sparse.

For each density (global magnitude pruning of a Glorot-normal LeNet-300-100; latency does not depend on the
values) the ticket is exported in the three layouts; the report gives the file sizes, the multiply-adds of one
forward pass, and the median latency (``lottery.export.measure_latency``, single thread) of the dense model vs the
model whose Linear layers run as ``torch.sparse`` CSR matmuls, at batch 1 and 256. Writes the ``## Export`` section of
benchmarks/RESULTS.md (other sections are kept).

    python benchmarks/bench_export.py [--densities 1,0.2,0.05,0.01] [--min-time 0.5] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

import lottery as lt
from lottery.export import LAYOUTS, count_macs, export_ticket, load_exported, measure_latency

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench_common module
from bench_common import RESULTS, write_sections  # noqa: E402
SHAPE = (1, 28, 28)


def ticket(density: float, seed: int = 0):
    model = lt.build_model("lenet_300_100", SHAPE, 10)
    lt.init_weights(model, "xavier_normal", seed=seed)
    mask = lt.Mask.ones_like(model)
    if density < 1:
        mask = lt.prune_magnitude(model, mask, 1 - density)
    mask.apply(model)
    return model.eval(), mask


def measure(density: float, batches, min_time: float, threads: int, out_dir: Path) -> dict:
    model, mask = ticket(density)
    sizes = {}
    for layout in LAYOUTS:
        path = export_ticket(model, mask, out_dir / f"{density}-{layout}.safetensors", layout,
                             model_name="lenet_300_100", input_shape=SHAPE, num_classes=10)
        sizes[layout] = os.path.getsize(path)
    checkpoint = out_dir / "final.pt"
    torch.save(model.state_dict(), checkpoint)
    dense_model = load_exported(out_dir / f"{density}-csr.safetensors")
    sparse_model = load_exported(out_dir / f"{density}-csr.safetensors", sparse=True)
    macs_dense, macs_sparse = count_macs(dense_model, SHAPE)
    latency = {b: (measure_latency(dense_model, SHAPE, b, min_time, threads) * 1e3,
                   measure_latency(sparse_model, SHAPE, b, min_time, threads) * 1e3) for b in batches}
    return {"density": mask.density, "sizes": sizes, "checkpoint": os.path.getsize(checkpoint),
            "macs": (macs_dense, macs_sparse), "latency": latency}


def table(rows, batches, threads: int) -> str:
    head = ("| density | dense file | csr | bitmask | csr / dense | multiply-adds | "
            + " | ".join(f"batch {b}: dense / sparse ms (speed-up)" for b in batches) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        s = r["sizes"]
        lat = " | ".join(f"{d:.3f} / {sp:.3f} ({d / sp:.2f}x)" for d, sp in (r["latency"][b] for b in batches))
        lines.append(f"| {r['density']:.1%} | {s['dense'] / 1e3:.0f} kB | {s['csr'] / 1e3:.0f} kB | "
                     f"{s['bitmask'] / 1e3:.0f} kB | {s['csr'] / s['dense']:.3f} | "
                     f"{r['macs'][1]:,} ({r['macs'][1] / r['macs'][0]:.1%}) | {lat} |")
    return "\n".join(lines)


def verdicts(rows, batches) -> str:
    """Where the sparse model was more than 10 % faster, per batch size (measured, not assumed)."""
    parts = []
    for b in batches:
        wins = [f"{r['density']:.0%}" for r in rows if r["latency"][b][0] / r["latency"][b][1] > 1.1]
        parts.append(f"batch {b}: sparse faster at " + (", ".join(wins) + " density" if wins else "no density tried"))
    return "; ".join(parts)


def size_notes(rows) -> str:
    """Bytes per kept weight of each layout (the slope between the densest and sparsest rows, so headers and
    biases cancel) and the smaller sparse layout per density: computed from this run's files."""
    hi, lo = max(rows, key=lambda r: r["density"]), min(rows, key=lambda r: r["density"])
    kept = {id(r): r["macs"][1] for r in rows}  # LeNet-300-100 is all Linear: one multiply-add per kept weight
    span = kept[id(hi)] - kept[id(lo)]
    slope = {k: (hi["sizes"][k] - lo["sizes"][k]) / span for k in ("csr", "bitmask")} if span else {}
    smaller = ", ".join(f"{r['density']:.0%}: {min(('csr', 'bitmask'), key=lambda k: r['sizes'][k])}" for r in rows)
    per_weight = (f"CSR costs {slope['csr']:.1f} bytes per kept weight and bitmask {slope['bitmask']:.1f} "
                  "(plus 1 bit per weight); " if slope else "")
    return f"{per_weight}the smaller sparse file at each density — {smaller}"


def section(rows, batches, threads: int, min_time: float) -> str:
    first = rows[0]
    verdicts_text = verdicts(rows, batches)
    macs_gap = max(abs(r["macs"][1] / r["macs"][0] - r["density"]) for r in rows)
    load = os.getloadavg()[0]
    return f"""## Export

`python benchmarks/bench_export.py` — LeNet-300-100 (266,200 prunable weights), global magnitude pruning of a
Glorot-normal init; torch {torch.__version__}, {platform.machine()}, {threads} thread(s), median of
blocked runs (`lottery.export.measure_latency`: blocks of ≥ 10 ms, ≥ {min_time} s in all) of one forward pass on
random inputs. One seed, one run, load average {load:.1f} on {os.cpu_count()} cores at the end. The training
checkpoint (`final.pt`, torch.save) is {first['checkpoint'] / 1e3:.0f} kB.

{table(rows, batches, threads)}

Computed from the table:
- Size: {size_notes(rows)}.
- Multiply-adds per example (Linear/Conv layers) differ from density × dense by at most {macs_gap:.2%}.
- Latency, sparse more than 10 % faster than dense: {verdicts_text}.

Convolutions stay dense in a sparse load (PyTorch has no sparse CPU convolution). `lottery export RUN_DIR --level N`
prints this report for one ticket.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--densities", default="1,0.2,0.05,0.01")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--min-time", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(float(d), batches, args.min_time, args.threads, Path(tmp)) for d in args.densities.split(",")]
    text = section(rows, batches, args.threads, args.min_time)
    print(text)
    if not args.no_write:
        write_sections({"## Export": text}, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
