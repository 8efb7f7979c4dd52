"""Training throughput of ``lottery.train`` against the loops users write, and against the machine's arithmetic limit.

    python benchmarks/run.py            # the full measurement, a few minutes on 2 cores
    python benchmarks/run.py --quick    # a smoke version, under a minute
    python benchmarks/run.py --write    # also replace this benchmark's sections of benchmarks/RESULTS.md

All figures come from one process run (the IMP run in a child process, to see its memory alone), so every ratio is
between loops measured minutes apart on the same machine under the same load. LeNet-300-100 on Fashion-MNIST (real
data), Adam 1.2e-3, batch 60, a 20 %-density random mask on every Linear weight:

  (a) DataLoader loop   torchvision ``FashionMNIST`` (PIL images, ToTensor + Normalize) + ``DataLoader`` +
                        ``torch.nn.utils.prune.custom_from_mask`` masks, default ``torch.optim.Adam``: what most
                        users write (num_workers=0: two cores leave no room for workers).
  (b0) plain loop       preloaded tensors, ``x[idx]`` batches, default Adam, one ``grad.mul_(mask)`` per layer.
  (b) best plain loop   preloaded tensors, one shuffled copy per epoch sliced contiguously, fused Adam, grads set
                        to None, all masks in one ``_foreach_mul_``: the fastest loop we could write by hand.
  (c) lottery.train     our trainer (``eval_every`` beyond the run, tiny val/test: the step rate), and again as an
                        IMP run uses it (validation on 5000 images every 100 steps).
  limit                 FLOPs of fwd+bwd (3 × 2 × batch × weights per step) at the fp32 GFLOP/s of a 2048² matmul.

Then (d) an IMP experiment's wall time per level against its training time, (e) its RSS after each level, and
(f) conv2 / conv4 / resnet20 on CIFAR-shaped synthetic data: our trainer against the best plain loop for each
(contiguous or channels-last, whichever is faster here; ``--compile`` also tries ``torch.compile``).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.nn.utils.prune  # noqa: F401  (not imported by torch itself)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lottery as lt  # noqa: E402
from lottery.config import from_dict  # noqa: E402
from lottery.train import train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench_common module
from bench_common import RESULTS, reset_peak_rss, rss_bytes, write_sections  # noqa: E402
SECTIONS = ("## Training throughput", "## IMP overhead and memory", "## Larger nets")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530
BATCH, LR, DENSITY = 60, 1.2e-3, 0.2


# -- measuring -----------------------------------------------------------------------------------------------
def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory of this process (VmRSS), or its peak since the last reset (VmHWM), in MiB."""
    return rss_bytes(field) / 2**20


def timed(step, n: int, warmup: int) -> float:
    """Seconds for ``n`` calls of ``step(i)`` after ``warmup`` untimed ones."""
    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    for i in range(warmup, warmup + n):
        step(i)
    return time.perf_counter() - start


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of a size² matmul: the arithmetic limit of this machine with the current threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def lenet_flops_per_step(model: torch.nn.Module, batch: int) -> float:
    """fwd + bwd of the Linear layers: 2·batch·weights forward, twice that backward (input and weight grads)."""
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 3 * 2 * batch * weights


# -- LeNet-300-100 on Fashion-MNIST ---------------------------------------------------------------------------
def lenet(data, seed: int = 0):
    """LeNet-300-100 with Glorot-normal init and a seeded random 20 %-density mask already applied."""
    model = lt.build_model("lenet_300_100", data.input_shape, data.num_classes)
    lt.init_weights(model, "xavier_normal", seed=seed)
    mask = lt.prune_random(lt.Mask.ones_like(model), 1 - DENSITY, scope="layer", seed=seed + 1)
    mask.apply(model)
    return model, mask


def torchvision_root(tmp: Path) -> Path:
    """torchvision's FashionMNIST layout (root/FashionMNIST/raw, uncompressed) built from the Debian IDX files."""
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in FASHION_DIR.glob("*.gz"):
        with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return tmp


def dataloader_loop(data, root: Path):
    """(a): the loop most users write, step by step."""
    import torchvision
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    dataset = torchvision.datasets.FashionMNIST(str(root), train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    model, mask = lenet(data)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.utils.prune.custom_from_mask(module, "weight", mask[f"{name}.weight"])
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    batches = iter(loader)

    def step(_):
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def plain_loop(data):
    """(b0): preloaded tensors, but the obvious way: fancy indexing, default Adam, a mask multiply per layer."""
    model, mask = lenet(data)
    x, y = data.train
    params = dict(model.named_parameters())
    pairs = [(params[k], m.float()) for k, m in mask.items()]
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen, per_epoch, perm = torch.Generator().manual_seed(0), len(x) // BATCH, None

    def step(i):
        nonlocal perm
        if i % per_epoch == 0:
            perm = torch.randperm(len(x), generator=gen)
        idx = perm[(i % per_epoch) * BATCH : (i % per_epoch + 1) * BATCH]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        for p, m in pairs:
            p.grad.mul_(m)
        opt.step()

    return step


def best_loop(data, model=None, mask=None, x=None, y=None, fwd=None, channels_last=False):
    """(b): the fastest hand-written loop we know (also used for the conv nets, with their own model)."""
    if model is None:
        model, mask = lenet(data)
    x, y = (x, y) if x is not None else data.train
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = model if fwd is None else fwd
    params = dict(model.named_parameters())
    masked = [params[k] for k in mask]
    gates = [m.to(params[k].dtype) for k, m in mask.items()]
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    gen, per_epoch = torch.Generator().manual_seed(0), len(x) // BATCH
    xs = ys = None

    def step(i):
        nonlocal xs, ys
        if i % per_epoch == 0:
            perm = torch.randperm(len(x), generator=gen)
            xs, ys = x[perm], y[perm]
            if channels_last:
                xs = xs.contiguous(memory_format=torch.channels_last)
        j = (i % per_epoch) * BATCH
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(fwd(xs[j : j + BATCH]), ys[j : j + BATCH]).backward()
        torch._foreach_mul_([p.grad for p in masked], gates)
        opt.step()

    return step


def small_eval(data, n: int = 2):
    """The data set with tiny val/test splits: the trainer's start and end evaluations then cost nothing."""
    return dataclasses.replace(data, val=tuple(t[:n] for t in data.val), test=tuple(t[:n] for t in data.test))


def trainer_seconds(data, net, mask, steps: int, **cfg) -> float:
    """Wall time of one ``lottery.train.train`` call of ``steps`` steps (a short call first warms it up)."""
    settings = dict(dataset="fashion_mnist", model="lenet_300_100", optimizer="adam", lr=LR, batch_size=BATCH,
                    eval_every=10**9, progress=False, device="cpu")
    settings.update(cfg)
    train(net, data, from_dict({**settings, "steps": 20}), mask)
    start = time.perf_counter()
    train(net, data, from_dict({**settings, "steps": steps}), mask)
    return time.perf_counter() - start


def measure_lenet(data, steps: int, dl_steps: int, repeats: int) -> dict:
    """Seconds per step of every loop, best of ``repeats`` rounds that alternate the loops (load drifts)."""
    tmp = Path(tempfile.mkdtemp(prefix="lottery-bench-"))
    try:
        root = torchvision_root(tmp)
        fast = small_eval(data)
        loops = {
            "dataloader": (lambda: dataloader_loop(data, root), dl_steps),
            "plain": (lambda: plain_loop(data), steps),
            "best": (lambda: best_loop(data), steps),
        }
        per_step = {k: [] for k in (*loops, "trainer", "trainer_eval100")}
        peak = {}
        for _ in range(repeats):
            for name, (make, n) in loops.items():
                reset_peak_rss()
                step = make()
                per_step[name].append(timed(step, n, warmup=20) / n)
                peak[name] = max(peak.get(name, 0.0), rss_mb("VmHWM"))
                del step
            reset_peak_rss()
            model, mask = lenet(data)
            per_step["trainer"].append(trainer_seconds(fast, model, mask, steps) / steps)
            peak["trainer"] = max(peak.get("trainer", 0.0), rss_mb("VmHWM"))
            model, mask = lenet(data)
            per_step["trainer_eval100"].append(trainer_seconds(data, model, mask, steps, eval_every=100) / steps)
            peak["trainer_eval100"] = max(peak.get("trainer_eval100", 0.0), rss_mb("VmHWM"))
        return {"per_step": per_step, "peak_rss_mb": peak}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def thread_scaling(data, steps: int) -> dict:
    """Trainer ms/step and matmul GFLOP/s at 1 thread and at every core: small GEMMs scale worse than big ones,
    and on a loaded machine OpenMP barriers wait for descheduled threads."""
    before, out = torch.get_num_threads(), {}
    fast = small_eval(data)
    try:
        for n in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(n)
            model, mask = lenet(data)
            out[n] = {"gflops": matmul_gflops(repeats=3), "trainer": trainer_seconds(fast, model, mask, steps) / steps}
    finally:
        torch.set_num_threads(before)
    return out


def profile_trainer(data, steps: int) -> dict[str, float]:
    """Where a trainer step's CPU time goes (torch.profiler self time, in shares): the evidence for what bounds it."""
    from torch.profiler import ProfilerActivity, profile

    model, mask = lenet(data)
    fast = small_eval(data)
    trainer_seconds(fast, model, mask, 20)
    cfg = from_dict(dict(dataset="fashion_mnist", model="lenet_300_100", lr=LR, batch_size=BATCH, steps=steps,
                         eval_every=10**9, progress=False, device="cpu"))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(model, fast, cfg, mask)
    groups = {"matrix multiplies (mm, addmm)": ("aten::mm", "aten::addmm"),
              "optimizer kernel": ("aten::_fused_adam_", "aten::_foreach_add_", "aten::_foreach_lerp_",
                                   "aten::_foreach_addcmul_", "aten::_foreach_sqrt",
                                   "aten::_foreach_div_", "aten::_foreach_addcdiv_", "aten::lerp_", "aten::addcdiv_",
                                   "aten::addcmul_", "aten::sqrt", "aten::div_"),
              "Optimizer.step Python": ("Optimizer.step#Adam.step",),
              "batch gather (index_select)": ("aten::index_select",),
              "mask multiply": ("aten::_foreach_mul_", "aten::mul_")}
    totals = {k: 0.0 for k in groups}
    everything = 0.0
    for e in prof.key_averages():
        everything += e.self_cpu_time_total
        for k, names in groups.items():
            if e.key in names:
                totals[k] += e.self_cpu_time_total
    totals["everything else (autograd, small ops)"] = everything - sum(totals.values())
    return {k: v / everything for k, v in totals.items()}


# -- IMP: overhead per level and memory across levels (child process) -----------------------------------------
IMP_CHILD = r"""
import json, sys, time
import lottery.imp_engine as engine
from lottery.drivers.imp import run_imp
def rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
samples, original = [], engine.Engine._finish_level
def finish_level(self, pending, entry):
    entry = original(self, pending, entry)
    samples.append({"level": pending.level, "rss_mb": rss("VmRSS"), "peak_mb": rss("VmHWM")})
    return entry
engine.Engine._finish_level = finish_level
start = time.perf_counter()
results = run_imp(json.loads(sys.argv[1]))
print(json.dumps({"results": results, "rss": samples, "wall": time.perf_counter() - start}))
"""


def measure_imp(steps: int, levels: int, out: Path) -> dict:
    cfg = dict(name="bench", dataset="fashion_mnist", model="lenet_300_100", optimizer="adam", lr=LR,
               batch_size=BATCH, steps=steps, eval_every=100, levels=levels, scope="layer",
               layer_fractions={"fc3.weight": 0.1}, controls=[], progress=False, device="cpu", out=str(out))
    proc = subprocess.run([sys.executable, "-c", IMP_CHILD, json.dumps(cfg)], capture_output=True, text=True,
                          cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT),
                                              "OMP_NUM_THREADS": str(torch.get_num_threads())})
    if proc.returncode != 0:
        raise RuntimeError(f"IMP child failed:\n{proc.stderr[-3000:]}")
    out_json = json.loads(proc.stdout.strip().splitlines()[-1])
    levels_out = [{"level": e["level"], "density": e["density"], "train_s": e["wall_time"],
                   "level_s": e.get("level_wall_time", float("nan")), "test_accuracy": e["test_accuracy"]}
                  for e in out_json["results"]["levels"]]
    return {"levels": levels_out, "rss": out_json["rss"], "wall": out_json["wall"], "steps": steps}


# -- larger nets -----------------------------------------------------------------------------------------------
def measure_convs(models: list[str], steps: int, n_train: int, repeats: int, try_compile: bool) -> dict:
    data = lt.load_dataset("synthetic", input_shape=(3, 32, 32), num_classes=10, n_train=n_train, n_test=256)
    fast = small_eval(data)
    out = {}
    for name in models:
        def build():
            model = lt.build_model(name, data.input_shape, data.num_classes)
            lt.init_weights(model, "kaiming_normal", seed=0)
            mask = lt.prune_random(lt.Mask.ones_like(model), 1 - DENSITY, scope="layer", seed=1)
            mask.apply(model)
            return model, mask

        x, y = data.train
        variants = {
            "contiguous": lambda: best_loop(data, *build(), x=x, y=y),
            "channels_last": lambda: best_loop(data, *build(), x=x, y=y, channels_last=True),
        }
        if try_compile:
            variants["compile"] = lambda: (lambda m, k: best_loop(data, m, k, x=x, y=y, fwd=torch.compile(m)))(
                *build())
        times = {k: [] for k in (*variants, "trainer")}
        compile_s = None
        for r in range(repeats):
            for v, make in variants.items():
                if v == "compile" and r == 0:
                    start = time.perf_counter()
                    step = make()
                    step(0)
                    compile_s = time.perf_counter() - start
                else:
                    step = make()
                times[v].append(timed(step, steps, warmup=2) / steps)
            model, mask = build()
            times["trainer"].append(trainer_seconds(fast, model, mask, steps, dataset="synthetic", model=name,
                                                    lr=LR) / steps)
        out[name] = {"per_step": {k: min(v) for k, v in times.items()}, "compile_s": compile_s}
    return out


def ok(cond: bool) -> str:
    return "yes" if cond else "**no**"


def threads_verdict(threads: dict) -> str:
    """How the trainer's speed changed with the thread count in this run (computed, not asserted)."""
    if len(threads) < 2:
        return ""
    (n1, r1), (n2, r2) = min(threads.items()), max(threads.items())
    return (f"Here {n2} threads ran the trainer {r1['trainer'] / r2['trainer']:.2f}× as fast as {n1} "
            "(load average above).")


def conv_verdict(conv_res: dict, compiled: bool) -> str:
    """Channels-last (and torch.compile) against contiguous eager, from this run's table."""
    gains = {n: r["per_step"]["contiguous"] / r["per_step"]["channels_last"] - 1 for n, r in conv_res.items()}
    text = "Channels-last vs contiguous here: " + ", ".join(f"{n} {g:+.0%}" for n, g in gains.items()) + " speed."
    if compiled:
        text += " torch.compile vs contiguous eager: " + ", ".join(
            f"{n} {r['per_step']['contiguous'] / r['per_step']['compile']:.2f}× after {r['compile_s']:.0f} s of "
            "compiling" for n, r in conv_res.items()) + "."
    return text


def report(args, gflops: float, flops_step: float, lenet_res: dict, imp_res: dict, conv_res: dict,
           loads: tuple) -> dict[str, str]:
    best = {k: min(v) for k, v in lenet_res["per_step"].items()}
    spread = {k: max(v) / min(v) for k, v in lenet_res["per_step"].items()}
    limit = flops_step / (gflops * 1e9)
    dl = best["dataloader"]
    names = {
        "dataloader": "(a) torchvision dataset + DataLoader + `torch.nn.utils.prune`",
        "plain": "(b0) plain loop over preloaded tensors (default Adam, `x[idx]`)",
        "best": "(b) best plain loop (sliced shuffled copy, fused Adam, `_foreach_mul_` masks)",
        "trainer": "(c) `lottery.train.train`",
        "trainer_eval100": "(c) `lottery.train.train`, validation (5000) every 100 steps",
    }
    rows = [
        "| loop | ms/step | steps/s | s/epoch (1000 steps) | × faster than (a) | × the arithmetic limit "
        "| peak RSS (MiB) | max/min of rounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, label in names.items():
        t = best[k]
        rows.append(f"| {label} | {t * 1e3:.2f} | {1 / t:.0f} | {t * 1e3:.2f} | {dl / t:.1f} | {t / limit:.2f} "
                    f"| {lenet_res['peak_rss_mb'][k]:.0f} | {spread[k]:.2f} |")
    rows.append(f"| arithmetic limit ({flops_step * 1e3 / 1e9:.1f} GFLOP/epoch at {gflops:.0f} GFLOP/s) "
                f"| {limit * 1e3:.2f} | {1 / limit:.0f} | {limit * 1e3:.2f} | {dl / limit:.1f} | 1.00 | | |")
    tr = best["trainer"]
    load_txt = f"load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end, on {os.cpu_count()} cores"
    throughput = "\n".join([
        f"LeNet-300-100 on Fashion-MNIST (55k train images in memory), Adam {LR}, batch {BATCH}, a {DENSITY:.0%}-density "
        f"random mask on every Linear weight. Best of {args.repeats} rounds that alternate the loops, "
        f"{args.steps} timed steps each after 20 warm-up steps ({args.dl_steps} for (a)); torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {load_txt}; {datetime.date.today().isoformat()}; "
        f"`python benchmarks/run.py {' '.join(sys.argv[1:])}`.",
        "",
        *rows,
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| ≤ 1.5 s per epoch of 1000 steps | {tr * 1e3:.2f} s | {ok(tr * 1e3 <= 1.5)} |",
        f"| within 2× of the arithmetic limit | {tr / limit:.2f}× | {ok(tr / limit <= 2)} |",
        f"| ≥ 12× the DataLoader loop | {dl / tr:.1f}× (the arithmetic limit itself is {dl / limit:.1f}× (a) "
        f"here) | {ok(dl / tr >= 12)} |",
        "",
        "Threads (same run): " + "; ".join(
            f"{n} thread{'s' if n > 1 else ''}: matmul {r['gflops']:.0f} GFLOP/s, trainer {r['trainer'] * 1e3:.2f} "
            f"s/epoch ({r['trainer'] / (flops_step / (r['gflops'] * 1e9)):.2f}× that thread count's limit)"
            for n, r in lenet_res["threads"].items()) + ". " + threads_verdict(lenet_res["threads"]),
        "",
        "Profile of the trainer's step (torch.profiler, self CPU time, same run): " + ", ".join(
            f"{k} {v:.0%}" for k, v in lenet_res["profile"].items()) + ".",
        "",
        "The trainer uses torch's fused Adam kernel (`fused = true`, the default): the same update as the "
        "`foreach` kernel up to float rounding (float64 agreement, tests/test_train_equivalence.py); `fused = false` "
        "restores bit-identity with a plain loop.",
        "",
        "The limit counts the Linear layers' fwd + bwd FLOPs (3 × 2 × batch × weights per step, dense: the mask "
        "saves no arithmetic in dense kernels) at the fp32 GFLOP/s of a 2048² matmul measured in the same run. "
        "(c) runs with tiny validation/test splits so that the step rate is measured; the second (c) row is the "
        "trainer as an IMP run uses it (early stopping needs the validation loss every 100 steps). Peak RSS is "
        "the process's VmHWM, reset before each loop (the data sets loaded up front are part of every row).",
    ])

    levels = imp_res["levels"]
    ratios = [e["level_s"] / e["train_s"] for e in levels]
    total_train = sum(e["train_s"] for e in levels)
    rss = imp_res["rss"]
    growth = rss[-1]["rss_mb"] - rss[0]["rss_mb"] if rss else float("nan")
    imp_rows = ["| level | density | training (s) | level wall time (s) | level / training | RSS after (MiB) "
                "| peak RSS so far (MiB) | test accuracy |", "|---|---|---|---|---|---|---|---|"]
    for e, r in zip(levels, rss):
        imp_rows.append(f"| {e['level']} | {e['density']:.3f} | {e['train_s']:.2f} | {e['level_s']:.2f} "
                        f"| {e['level_s'] / e['train_s']:.3f} | {r['rss_mb']:.0f} | {r['peak_mb']:.0f} "
                        f"| {e['test_accuracy']:.4f} |")
    imp = "\n".join([
        f"`lt.run_imp` on Fashion-MNIST, LeNet-300-100, {imp_res['steps']} steps per level, validation every 100 "
        f"steps, layerwise 20 % (output 10 %), rewind to init, no controls, in a child process; same run as above.",
        "",
        *imp_rows,
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| wall time per level ≤ 1.2× its training | worst level {max(ratios):.3f}×, mean {sum(ratios) / len(ratios):.3f}× "
        f"| {ok(max(ratios) <= 1.2)} |",
        f"| RSS flat across levels | {growth:+.0f} MiB from level 0 to level {len(rss) - 1} "
        f"| {ok(abs(growth) <= 20)} |",
        "",
        f"Whole experiment: {imp_res['wall']:.1f} s wall for {total_train:.1f} s of training "
        f"({imp_res['wall'] / total_train:.2f}×, including loading the data set and drawing the init once). "
        "Training time is `wall_time` of each level in results.json, level time `level_wall_time` (pruning, "
        "rewinding with its bit-for-bit check, training, saving weights and mask).",
    ])

    conv_rows = ["| model | best plain loop: contiguous (ms/step) | channels-last | "
                 + ("torch.compile | " if args.compile else "") + "`lottery.train` | trainer / best | met (≤ 1.5×) |",
                 "|---|---|---|" + ("---|" if args.compile else "") + "---|---|---|"]
    for name, r in conv_res.items():
        ps = r["per_step"]
        plain_best = min(v for k, v in ps.items() if k != "trainer")
        cells = [f"{ps['contiguous'] * 1e3:.0f}", f"{ps['channels_last'] * 1e3:.0f}"]
        if args.compile:
            cells.append(f"{ps['compile'] * 1e3:.0f} (compile {r['compile_s']:.0f} s)")
        ratio = ps["trainer"] / plain_best
        conv_rows.append(f"| {name} | {' | '.join(cells)} | {ps['trainer'] * 1e3:.0f} | {ratio:.2f} | {ok(ratio <= 1.5)} |")
    convs = "\n".join([
        f"CIFAR-shaped synthetic data (3×32×32, 10 classes, {args.conv_train} training images), batch {BATCH}, Adam, "
        f"{DENSITY:.0%}-density mask, best of {args.repeats} rounds of {args.conv_steps} steps; same run as above.",
        "",
        *conv_rows,
        "",
        "The trainer runs contiguous (NCHW) tensors, as the plain loop the equivalence tests compare it with; "
        "channels-last picks other conv kernels (other rounding). " + conv_verdict(conv_res, args.compile),
    ])
    return {SECTIONS[0]: throughput + "\n", SECTIONS[1]: imp + "\n", SECTIONS[2]: convs + "\n"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke version: fewer steps and rounds (< 1 minute)")
    ap.add_argument("--write", action="store_true", help="replace our sections of benchmarks/RESULTS.md")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile for the conv nets (slow)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for every loop")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    q = args.quick
    args.steps, args.dl_steps, args.repeats = (100, 30, 1) if q else (500, 200, 3)
    args.imp_steps, args.imp_levels = (100, 2) if q else (1000, 4)
    args.conv_steps, args.conv_train = (2, 256) if q else (10, 1024)
    conv_models = ["conv2", "resnet20"] if q else ["conv2", "conv4", "resnet20"]
    loads = [os.getloadavg()[0]]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {loads[0]:.1f}", flush=True)
    if torch.get_num_threads() > 1 and loads[0] > 0.5:
        print(f"warning: load average {loads[0]:.1f}: with other processes on the cores, {torch.get_num_threads()} "
              "OpenMP threads wait on each other at every op; --threads 1 measures the single-thread speed",
              flush=True)
    data = lt.load_dataset("fashion_mnist")
    gflops = matmul_gflops()
    model, _ = lenet(data)
    flops_step = lenet_flops_per_step(model, BATCH)
    print(f"matmul 2048²: {gflops:.0f} GFLOP/s; LeNet step {flops_step / 1e6:.0f} MFLOP", flush=True)
    lenet_res = measure_lenet(data, args.steps, args.dl_steps, args.repeats)
    print("lenet:", {k: f"{min(v) * 1e3:.2f} ms" for k, v in lenet_res["per_step"].items()}, flush=True)
    lenet_res["threads"] = thread_scaling(data, args.steps // 2)
    print("threads:", lenet_res["threads"], flush=True)
    lenet_res["profile"] = profile_trainer(data, 200)
    print("profile:", lenet_res["profile"], flush=True)
    del data
    with tempfile.TemporaryDirectory(prefix="lottery-bench-imp-") as out:
        imp_res = measure_imp(args.imp_steps, args.imp_levels, Path(out))
    print("imp:", imp_res["levels"], imp_res["rss"], flush=True)
    conv_res = measure_convs(conv_models, args.conv_steps, args.conv_train, args.repeats, args.compile)
    print("convs:", {k: {v: f"{t * 1e3:.0f} ms" for v, t in r["per_step"].items()} for k, r in conv_res.items()},
          flush=True)
    loads.append(os.getloadavg()[0])

    sections = report(args, gflops, flops_step, lenet_res, imp_res, conv_res, tuple(loads))
    print()
    for heading, body in sections.items():
        print(f"{heading}\n\n{body}")
    if args.write:
        write_sections(sections)
        print(f"wrote {', '.join(repr(s) for s in sections)} in {RESULTS}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
