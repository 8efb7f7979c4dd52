"""Global magnitude pruning of a 25M-weight model: `lottery.prune_magnitude` vs `torch.nn.utils.prune`.

Measures, for each method:
- time: median over ``--repeats`` prunings of a freshly built model (building is not timed), both methods in one
  subprocess, alternating, so a change in machine load during the run hits both alike;
- peak extra memory, in a fresh subprocess per method (neither inherits the other's heap): peak RSS during one
  pruning minus the RSS just before it, as a multiple of the parameter bytes (the peak is reset with
  ``/proc/self/clear_refs`` where the kernel allows it, and read from ``getrusage(RUSAGE_SELF).ru_maxrss``);
- mask file size: ``Mask.save`` of the pruned mask vs ``torch.save`` of the ``weight_mask`` buffers that
  ``torch.nn.utils.prune`` keeps.

Targets (the rows of the table it writes): ≥ 5× faster than ``global_unstructured``, peak extra memory ≤ 1.5×
the parameters, mask files ≤ 1/30 of torch's float masks.

    python benchmarks/bench_prune.py            # print the table
    python benchmarks/bench_prune.py --write    # also replace the "## Pruning" section of benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYERS, WIDTH, FRACTION = 4, 2500, 0.2  # 4 × 2500² = 25M prunable weights
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench_common module
from bench_common import RESULTS, reset_peak_rss, rss_bytes, write_sections  # noqa: E402
SECTION = "## Pruning"


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _build_model(seed: int, width: int = WIDTH):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(LAYERS)])


def _prune_lottery(model, mask):
    import lottery as lt

    return lt.prune_magnitude(model, mask, FRACTION, scope="global")


def _prune_torch(model, mask):
    from torch.nn.utils import prune as tprune

    params = [(m, "weight") for m in model]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=FRACTION)
    return None


PRUNE = {"lottery": _prune_lottery, "torch": _prune_torch}
PARAM_BYTES = LAYERS * WIDTH * WIDTH * 4


def _fresh(method: str, seed: int):
    """A new model and, for lottery, its all-kept mask: part of the caller's state (IMP holds it between levels),
    so it exists before any baseline; torch's API has no input mask."""
    import lottery as lt

    model = _build_model(seed)
    mask = lt.Mask.ones_like(model) if method == "lottery" else None
    gc.collect()
    return model, mask


def _warm_up(method: str) -> None:
    """The first call pages in library code and starts thread pools: not memory or time spent pruning."""
    import lottery as lt

    small = _build_model(seed=0, width=64)
    PRUNE[method](small, lt.Mask.ones_like(small) if method == "lottery" else None)


def memory_worker(method: str) -> dict:
    """In a fresh interpreter: peak extra memory of one pruning, then the size of the masks it leaves."""
    import torch

    _warm_up(method)
    model, mask = _fresh(method, seed=0)
    before = rss_bytes()
    reset = reset_peak_rss()
    out = PRUNE[method](model, mask)
    result = dict(
        peak_extra=(_peak_rss_bytes() - before) / PARAM_BYTES,
        # What stays allocated while the pruned model lives (torch: weight_orig, float masks, masked weight).
        held_extra=(rss_bytes() - before) / PARAM_BYTES,
        peak_reset=reset,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mask")
        if method == "lottery":
            out.save(path)
            result["kept"] = out.num_kept
        else:
            torch.save({f"{i}.weight_mask": m.weight_mask for i, m in enumerate(model)}, path)
            result["kept"] = sum(int(torch.count_nonzero(m.weight_mask)) for m in model)
        result["file_bytes"] = os.path.getsize(path)
    return result


def timing_worker(repeats: int) -> dict:
    """Both methods in one interpreter, alternating (and swapping which goes first), so a change in machine load
    during the run hits both alike; each pruning gets a freshly built model, and building is not timed."""
    for method in PRUNE:
        _warm_up(method)
    times = {method: [] for method in PRUNE}
    for rep in range(repeats):
        order = list(PRUNE) if rep % 2 == 0 else list(PRUNE)[::-1]
        for method in order:
            model, mask = _fresh(method, seed=rep)
            t0 = time.perf_counter()
            PRUNE[method](model, mask)
            times[method].append(time.perf_counter() - t0)
            del model, mask
            gc.collect()
    return times


def run_worker(*args: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(lt_res: dict, th_res: dict, repeats: int, load: float) -> str:
    import torch
    import lottery

    speedup = th_res["median_s"] / lt_res["median_s"]
    size_ratio = th_res["file_bytes"] / lt_res["file_bytes"]
    ok = lambda c: "yes" if c else "**no**"  # noqa: E731
    mb = lambda b: f"{b / 2**20:.2f} MiB"  # noqa: E731
    lines = [
        f"Global magnitude pruning, {FRACTION:.0%} of a {LAYERS}×Linear({WIDTH}, {WIDTH}) model "
        f"({LAYERS * WIDTH * WIDTH / 1e6:.0f}M float32 weights, {mb(lt_res['param_bytes'])}); "
        f"median of {repeats} runs, alternating the two methods in one process; memory measured in a fresh process "
        "per method. "
        f"lottery {lottery.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{datetime.date.today().isoformat()}, load average {load:.1f} on {os.cpu_count()} cores, "
        f"`python benchmarks/bench_prune.py --write`.",
        "",
        "| method | time (s, median) | peak extra memory (× params) | held after pruning (× params) "
        "| mask file | kept weights |",
        "|---|---|---|---|---|---|",
        f"| `lottery.prune_magnitude` | {lt_res['median_s']:.3f} | {lt_res['peak_extra']:.2f} "
        f"| {lt_res['held_extra']:.2f} | {mb(lt_res['file_bytes'])} | {lt_res['kept']:,} |",
        f"| `torch.nn.utils.prune.global_unstructured` (L1Unstructured) | {th_res['median_s']:.3f} "
        f"| {th_res['peak_extra']:.2f} | {th_res['held_extra']:.2f} | {mb(th_res['file_bytes'])} "
        f"| {th_res['kept']:,} |",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| ≥ 5× faster than `global_unstructured` | {speedup:.1f}× | {ok(speedup >= 5)} |",
        f"| peak extra memory ≤ 1.5× the parameters | {lt_res['peak_extra']:.2f}× "
        f"(torch: {th_res['peak_extra']:.2f}×) | {ok(lt_res['peak_extra'] <= 1.5)} |",
        f"| mask file ≤ 1/30 of torch's float masks | 1/{size_ratio:.0f} | {ok(size_ratio >= 30)} |",
        "",
        f"Timings (s): lottery {', '.join(f'{t:.3f}' for t in lt_res['times'])}; "
        f"torch {', '.join(f'{t:.3f}' for t in th_res['times'])}. "
        "Peak extra memory is the peak RSS during one pruning after a warm-up (`ru_maxrss`, peak reset via "
        "`/proc/self/clear_refs`" + ("" if lt_res["peak_reset"] and th_res["peak_reset"] else " — reset refused here")
        + ") minus the RSS just before it; the input all-ones mask (1 byte per weight) exists before the baseline. "
        "\"Held after pruning\" is what stays allocated while the pruned model lives "
        "(torch keeps `weight_orig`, a float `weight_mask` and the masked `weight`).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="prunings per method (median reported)")
    ap.add_argument("--write", action="store_true", help="replace the '## Pruning' section of benchmarks/RESULTS.md")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)  # memory METHOD | timing
    args = ap.parse_args()
    if args.worker:
        kind, *rest = args.worker
        print(json.dumps(memory_worker(rest[0]) if kind == "memory" else timing_worker(args.repeats)))
        return
    load = os.getloadavg()[0]
    res = {method: run_worker("memory", method) for method in PRUNE}
    for method, times in run_worker("timing", "--repeats", str(args.repeats)).items():
        res[method].update(times=times, median_s=statistics.median(times), param_bytes=PARAM_BYTES)
    body = table(res["lottery"], res["torch"], args.repeats, load=max(load, os.getloadavg()[0]))
    print(body)
    if args.write:
        write_sections({SECTION: body})
        print(f"wrote the '{SECTION}' section of {RESULTS}")


if __name__ == "__main__":
    main()
