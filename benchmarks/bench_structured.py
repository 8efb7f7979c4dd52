"""Structured tickets' real speed: a neuron ticket exported physically vs the full network, on the CPU.

For each fraction of units kept (layerwise neuron pruning, the output layer whole; latency does not depend on the
values) the ticket is exported with ``--format physical``'s code path and both networks are timed with
``lottery.export.measure_latency(clock="cpu")`` (one thread's CPU time per forward pass, median of blocked runs;
CPU time because on a shared machine wall time measures the scheduler too; the best of ``--repeats`` such medians,
the networks taking turns) at batch 1 and 256. The target: the
exported network runs at >= 0.7 x (1 / its multiply-add fraction) of the full network's speed at batch 256. For
contrast, an unstructured ticket of the same weight density runs its Linear layers as CSR matmuls (LeNet only:
convolutions have no sparse CPU kernel), and an n:m ticket runs dense on a CPU (same latency as the full network:
not timed). Writes the ``## Structured tickets`` section of benchmarks/RESULTS.md (other sections are kept).

    python benchmarks/bench_structured.py [--units 1,0.64,0.41,0.26] [--min-time 0.3] [--repeats 3] [--no-write]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

import lottery as lt
from lottery.export import count_macs, export_ticket, load_exported, measure_latency
from lottery.pruning import prune_structured

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench_common module
from bench_common import write_sections  # noqa: E402

MODELS = {"lenet_300_100": (1, 28, 28), "conv4": (3, 32, 32)}


def neuron_ticket(name: str, units: float):
    """A neuron ticket keeping ``units`` of every hidden layer's units (one layerwise prune)."""
    torch.manual_seed(0)
    model = lt.build_model(name, MODELS[name], 10).eval()
    mask = lt.Mask.ones_like(model)
    if units < 1:
        mask = prune_structured(model, mask, 1 - units, "neuron", scope="layer")
    mask.apply(model)
    return model, mask


def timed(models, shape, batch: int, min_time: float, repeats: int) -> list[float]:
    """Milliseconds of one thread's CPU time per forward of each model (CPU time, not wall time: on a shared
    machine wall time measures the scheduler too): the best of ``repeats`` medians, the models taking turns."""
    best = [float("inf")] * len(models)
    for _ in range(repeats):
        for i, model in enumerate(models):
            best[i] = min(best[i], measure_latency(model, shape, batch, min_time, clock="cpu") * 1e3)
    return best


def measure(name: str, units: float, batches, min_time: float, out: Path, repeats: int) -> dict:
    shape = MODELS[name]
    model, mask = neuron_ticket(name, units)
    path = export_ticket(model, mask, out / f"{name}-{units}.safetensors", "physical", model_name=name,
                         input_shape=shape, num_classes=10)
    small = load_exported(path)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert (small(x) - model(x)).abs().max() <= 1e-5  # the export is the ticket
    macs = count_macs(model, shape)[0], count_macs(small, shape)[0]
    row = {"units": units, "density": mask.density, "macs": macs, "latency": {}, "csr": {}}
    for b in batches:
        row["latency"][b] = timed([model, small], shape, b, min_time, repeats)
    if name == "lenet_300_100" and units < 1:  # the same weight density, unstructured, as CSR matmuls
        unstructured = lt.prune_magnitude(model, lt.Mask.ones_like(model), 1 - mask.density, scope="layer")
        path = export_ticket(model, unstructured, out / f"u-{units}.safetensors", "csr", model_name=name,
                             input_shape=shape, num_classes=10)
        sparse = load_exported(path, sparse=True)
        row["csr"] = {b: timed([sparse], shape, b, min_time, repeats)[0] for b in batches}
    return row


def table(rows, batches) -> str:
    head = ("| units kept | weights kept | multiply-adds | " + " | ".join(
        f"batch {b}: full / exported ms (speed-up)" for b in batches) + " | target at 256 | "
            + " | ".join(f"CSR, same density, batch {b}" for b in batches) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        frac = r["macs"][1] / r["macs"][0]
        lat = " | ".join(f"{f:.3f} / {e:.3f} ({f / e:.2f}x)" for f, e in (r["latency"][b] for b in batches))
        target = 0.7 / frac
        got = r["latency"][256][0] / r["latency"][256][1] if 256 in r["latency"] else None
        verdict = "-" if got is None else f">= {target:.2f}x: {'met' if got >= target else 'missed'}"
        csr = " | ".join(f"{r['csr'][b]:.3f} ms ({r['latency'][b][0] / r['csr'][b]:.2f}x)" if r["csr"] else "-"
                         for b in batches)
        lines.append(f"| {r['units']:.0%} | {r['density']:.1%} | {frac:.1%} | {lat} | {verdict} | {csr} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", default="1,0.64,0.41,0.26", help="fractions of hidden units kept")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batches", default="1,256")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds of timed runs per measurement")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds; the best median counts")
    p.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/RESULTS.md alone")
    args = p.parse_args(argv)
    units = [float(u) for u in args.units.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows = [measure(name, u, batches, args.min_time, Path(tmp), args.repeats) for u in units]
            sections.append(f"### {name} {MODELS[name]}\n\n{table(rows, batches)}")
            print(sections[-1], flush=True)
    body = (f"`python benchmarks/bench_structured.py --repeats {args.repeats} --min-time {args.min_time}` (one "
            f"thread's CPU time per forward pass, not wall time: the machine is shared; best of {args.repeats} "
            "alternating medians of blocked runs; a neuron ticket pruned "
            "layerwise once to the units shown, the output layer whole; exported with `--format physical` and "
            "checked to give the ticket's outputs). Target: speed-up at batch 256 >= 0.7 / (multiply-add "
            "fraction). n:m tickets run dense on a CPU (no n:m kernels): the full network's latency.\n\n"
            + "\n\n".join(sections))
    if not args.no_write:
        write_sections({"## Structured tickets": body})
    return 0


if __name__ == "__main__":
    sys.exit(main())
