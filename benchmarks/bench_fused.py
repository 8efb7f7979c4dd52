"""Fused training (lottery/fused.py) against K separate runs, and a compare-inits grid one run at a time vs in workers.

    python benchmarks/bench_fused.py            # the measurement (several minutes on 2 loaded cores)
    python benchmarks/bench_fused.py --quick    # a smoke version
    python benchmarks/bench_fused.py --write    # also replace `## Fused training and grids` in RESULTS.md

(a) Fused sweep: K = 1, 2, 4, 8, 16 networks of LeNet-300-100 (batch 60, Adam), a deep MLP (12 hidden layers of
128, batch 128, SGD + momentum) and Conv-4 (3x32x32, batch 60, Adam) on synthetic data of those shapes, each
network under its own 20 %-density random mask, init and data order. "separate" is ``lottery.train.train`` on one
network, timed in the same process just before, times K (the K runs are identical in cost); the ratio is the
separate time over the fused time for the same K networks and steps. Evaluation is left out (``eval_every``
beyond the run, tiny val/test), so this is the step rate.
(b) Grid: ``lottery compare-inits`` on the init study's network (the 12x128 ReLU MLP on Fashion-MNIST, momentum
SGD, batch 128; 2 schemes x 2 seeds, 2 levels of 500 steps, validation every 100, both controls: 28 training
runs), as separate processes: one run at a time (``--pack 1 --jobs 1``, torch's threads), ``--jobs 2``, ``--jobs 2
--pack 4`` (each worker advances its two trunks in lockstep, fused; lottery/executors/grid.py) and one process in
lockstep (``--pack 4``); wall time of each whole command, the largest accuracy difference against the
one-at-a-time summary, and the fixed cost (the same command again, every run reused: start-up, data, summary and
plots). ``--quick`` uses MNIST-1D's MLP and 100 steps.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lottery as lt  # noqa: E402
from lottery.config import from_dict  # noqa: E402
from lottery.fused import train_fused  # noqa: E402
from lottery.train import train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench_common module
from bench_common import RESULTS, write_sections  # noqa: E402

SECTION = "## Fused training and grids"
GRID_SECTION = "## Grid executor"
# name, model, options, input shape, batch, optimizer, lr
NETS = [("LeNet-300-100", "lenet_300_100", {}, (1, 28, 28), 60, "adam", 1.2e-3),
        ("deep MLP 12x128", "mlp", {"hidden": [128] * 12}, (1, 28, 28), 128, "sgd", 0.02),
        ("Conv-4", "conv4", {}, (3, 32, 32), 60, "adam", 3e-4)]


def _data(shape, n_train, device):
    return lt.load_dataset("synthetic", input_shape=list(shape), num_classes=10, n_train=n_train, n_test=16,
                           val_size=16, device=device)


def _nets(model, options, shape, k, device):
    models, masks = [], []
    for i in range(k):
        m = lt.build_model(model, shape, 10, **options)
        lt.init_weights(m, "kaiming_normal", seed=i)
        mask = lt.prune_random(lt.Mask.ones_like(m), 0.8, seed=i)
        mask.apply(m)
        models.append(m.to(device))
        masks.append(mask.to(device))
    return models, masks


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, steps: int, device) -> float:
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return (time.perf_counter() - t) / steps, out


def fused_sweep(model, options, shape, batch, optimizer, lr, ks, steps, device, n_train=2048, repeats=3) -> list[dict]:
    """Seconds per step of one separate run and of fused K, for each K in ``ks``: the best of ``repeats`` rounds
    that alternate the two (a shared machine's stalls hit single rounds); results checked finite."""
    data = _data(shape, n_train, device)
    cfg = from_dict(dict(steps=steps, batch_size=batch, optimizer=optimizer, lr=lr, eval_every=10 ** 9,
                         progress=False, device=device.type))
    rows = []
    for k in ks:
        (one,), (mask,) = _nets(model, options, shape, 1, device)
        train(one, data, cfg.replace(steps=2), mask, seed=0)  # warm-up
        models, masks = _nets(model, options, shape, k, device)
        train_fused(models, data, cfg.replace(steps=2), masks, seeds=list(range(k)))  # warm-up
        separate = fused = math.inf
        for _ in range(repeats):
            (one,), (mask,) = _nets(model, options, shape, 1, device)
            separate = min(separate, _timed(lambda: train(one, data, cfg, mask, seed=0), steps, device)[0])
            models, masks = _nets(model, options, shape, k, device)
            took, out = _timed(lambda: train_fused(models, data, cfg, masks, seeds=list(range(k))), steps, device)
            fused = min(fused, took)
            assert all(r.status == "ok" for r in out), "a fused network diverged in the benchmark"
        rows.append({"k": k, "separate_ms": 1e3 * separate, "fused_ms": 1e3 * fused,
                     "ratio": k * separate / fused})
        print(f"  K={k:>3}: separate {1e3 * separate:8.2f} ms/step/net, fused {1e3 * fused:8.2f} ms/step "
              f"({k * separate / fused:.2f}x K separate)", flush=True)
    return rows


STUDY_NET = ["--model", "deep_mlp", "--dataset", "fashion_mnist", "--optimizer", "sgd", "--lr", "0.02",
             "--momentum", "0.9", "--batch-size", "128", "--eval-every", "100"]


def grid(quick: bool) -> list[dict]:
    steps, seeds = ("100", "2") if quick else ("500", "2")
    flags = [*([] if quick else STUDY_NET), "--inits", "kaiming_normal,xavier_normal", "--seeds", seeds,
             "--levels", "2", "--steps", steps, "--no-progress", "--device", "cpu"]
    rows, reference = [], None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for label, extra in (("one at a time (--pack 1 --jobs 1)", ["--jobs", "1", "--pack", "1"]),
                         ("--jobs 2", ["--jobs", "2", "--pack", "1"]),
                         ("--jobs 2 --pack 4", ["--jobs", "2", "--pack", "4"]),
                         ("lockstep, one process (--pack 4 --jobs 1)", ["--jobs", "1", "--pack", "4"])):
        with tempfile.TemporaryDirectory() as out:
            argv = [sys.executable, "-m", "lottery", "compare-inits", *flags, *extra, "--out", out]
            t = time.perf_counter()
            subprocess.run(argv, check=True, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t
            t = time.perf_counter()
            subprocess.run(argv, check=True, env=env, capture_output=True, text=True)  # everything reused
            fixed = time.perf_counter() - t
            (path,) = Path(out).glob("compare-*/summary.json")
            accs = [(s["label"], r["level"], arm, r[arm]["mean"]) for s in json.loads(path.read_text())["schemes"]
                    for r in s["levels"] for arm in ("ticket", "reinit", "random_mask") if arm in r]
        reference = reference or accs
        diff = max(abs(a[3] - b[3]) for a, b in zip(accs, reference) if a[3] is not None and b[3] is not None)
        rows.append({"label": label, "wall": wall, "fixed": fixed, "diff": diff,
                     "speedup": rows[0]["wall"] / wall if rows else 1.0,
                     "work_speedup": (rows[0]["wall"] - rows[0]["fixed"]) / (wall - fixed) if rows else 1.0})
        print(f"  {label}: {wall:.1f} s ({rows[-1]['speedup']:.2f}x; fixed cost {fixed:.1f} s), max accuracy "
              f"difference {diff:.4f}", flush=True)
    return rows


def report(sweeps: dict, args, load: tuple) -> str:
    lines = [SECTION, "",
             f"`python benchmarks/bench_fused.py{' --quick' if args.quick else ''}` on {os.cpu_count()} cores, "
             f"{torch.get_num_threads()} torch thread(s), load average {load[0]:.1f} / {load[1]:.1f} at start / end; "
             f"best of 3 alternating rounds (Conv-4: 2) of {args.steps} steps (Conv-4: {max(2, args.steps // 10)}, "
             "K up to 4, to bound the run time).", "",
             "| network | K | separate ms/step (one net) | fused ms/step (K nets) | fused vs K separate |",
             "|---|---|---|---|---|"]
    for name, rows in sweeps.items():
        for r in rows:
            lines.append(f"| {name} | {r['k']} | {r['separate_ms']:.2f} | {r['fused_ms']:.2f} | {r['ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


def grid_report(grid_rows: list, args, load: tuple) -> str:
    net = "MLP on MNIST-1D, 100 steps" if args.quick else "12x128 MLP on Fashion-MNIST, 500 steps"
    lines = [GRID_SECTION, "", f"`python benchmarks/bench_fused.py{' --quick' if args.quick else ''}` on "
             f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} at start / end. compare-inits grid "
             f"({net}; 2 schemes x 2 seeds, 2 levels, reinit + random-mask controls: 28 training runs; whole "
             "command, separate processes; fixed cost = the same command again with every run reused: start-up, "
             "data, summary, plots):", "",
             "| how | wall s | speed-up | fixed cost s | speed-up without the fixed cost | max accuracy difference "
             "vs one at a time |", "|---|---|---|---|---|---|"]
    for r in grid_rows:
        lines.append(f"| {r['label']} | {r['wall']:.1f} | {r['speedup']:.2f}x | {r['fixed']:.1f} | "
                     f"{r['work_speedup']:.2f}x | {r['diff']:.4f} |")
    lines += ["", NOTE]
    return "\n".join(lines) + "\n"


NOTE = ("The accuracy column is the largest difference over every run of the grid (dense, tickets, controls) against "
        "the one-at-a-time grid. Even `--jobs 2` alone, unfused, differs: its workers run one thread instead of two, "
        "and this 12-layer network's training amplifies the other float rounding into visible differences within a "
        "few hundred steps (experiments/RESULTS.md, init study: over the whole study, packed tickets agree with "
        "one-at-a-time tickets within the seed spread). `--pack 1 --jobs 1` is the bit-for-bit path.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke sizes")
    ap.add_argument("--write", action="store_true", help=f"replace `{SECTION}` in benchmarks/RESULTS.md")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-grid", action="store_true", help="skip the compare-inits grid")
    ap.add_argument("--no-sweep", action="store_true", help="skip the fused sweep")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.steps = 5 if args.quick else 30
    ks = (1, 2, 4) if args.quick else (1, 2, 4, 8, 16)
    sections = {}
    if not args.no_sweep:
        load0 = os.getloadavg()
        sweeps = {}
        for name, model, options, shape, batch, optimizer, lr in NETS:
            print(name, flush=True)
            # Conv-4 costs most of a second per network step: fewer steps and rounds, and K up to 4
            conv = model == "conv4"
            sweeps[name] = fused_sweep(model, options, shape, batch, optimizer, lr, ks[:3] if conv else ks,
                                       max(2, args.steps // 10) if conv else args.steps, torch.device("cpu"),
                                       repeats=2 if conv else 3)
        sections[SECTION] = report(sweeps, args, (load0[0], os.getloadavg()[0]))
    if not args.no_grid:
        load0 = os.getloadavg()
        print("grid", flush=True)
        rows = grid(args.quick)
        sections[GRID_SECTION] = grid_report(rows, args, (load0[0], os.getloadavg()[0]))
    for text in sections.values():
        print(text)
    if args.write and sections:
        write_sections(sections)
        print(f"wrote {', '.join(map(repr, sections))} in {RESULTS}")


if __name__ == "__main__":
    main()
