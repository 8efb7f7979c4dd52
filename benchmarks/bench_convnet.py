"""Convnets on the CPU: ``lottery run`` against the loop users write, whole process, and the step of three convnets.

    python benchmarks/bench_convnet.py            # 2 rounds of the whole-process race, then the step table
    python benchmarks/bench_convnet.py --quick    # 1 round, 100 steps, short step timings (a smoke test)
    python benchmarks/bench_convnet.py --rounds 1 # one alternation (a busy machine: the plain loop can take 20 min)
    python benchmarks/bench_convnet.py --write    # also replace this benchmark's section of benchmarks/RESULTS.md

(1) Whole process, LeNet-5 on Fashion-MNIST, SGD (lr 0.05, momentum 0.9), batch 64, 600 steps, each in a fresh
    child process, alternating, in one run:
      plain loop   torchvision ``FashionMNIST`` + ``ToTensor``/``Normalize`` + ``DataLoader`` (shuffle, no workers) +
                   the same LeNet-5 in torch's default layout and thread count, then its test accuracy;
      lottery run  ``lottery run --model lenet5 --dataset fashion_mnist --levels 0 --controls none`` with the same
                   optimizer, batch and steps (validation every 100 steps, per-layer signal, test pass, plots).
(2) Steps: LeNet-5 (1x28x28, batch 64), Conv-4 (3x32x32, batch 60) and ResNet-20 (3x32x32, batch 128) on
    synthetic in-memory data: a plain loop over preloaded tensors (``x[idx]``, default layout, default SGD) against
    ``lottery.train.train`` (validation beyond the run), ms per step, both at the thread count ``lottery`` picks.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lottery as lt  # noqa: E402
from benchmarks.bench_common import write_sections  # noqa: E402
from benchmarks.run import torchvision_root  # noqa: E402
from lottery.config import from_dict  # noqa: E402
from lottery.threads import fit_threads  # noqa: E402
from lottery.train import train  # noqa: E402

LR, MOMENTUM, BATCH = 0.05, 0.9, 64

PLAIN = r"""
import sys, time
import torch, torch.nn as nn, torch.nn.functional as F, torchvision
from torchvision import transforms
root, steps = sys.argv[1], int(sys.argv[2])
tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
train = torchvision.datasets.FashionMNIST(root, train=True, download=False, transform=tf)
test = torchvision.datasets.FashionMNIST(root, train=False, download=False, transform=tf)
loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, drop_last=True)
model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                      nn.Linear(84, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
step = 0
while step < steps:
    for x, y in loader:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        step += 1
        if step == steps:
            break
model.eval()
correct = 0
with torch.no_grad():
    for x, y in torch.utils.data.DataLoader(test, batch_size=1000):
        correct += (model(x).argmax(1) == y).sum().item()
print(f"accuracy {correct / len(test):.4f}")
"""


def child(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return time.perf_counter() - start, out.stdout


def whole_process(steps: int, rounds: int, tmp: Path) -> dict:
    """Wall seconds of each round of both processes, alternating, plus their test accuracies."""
    root = torchvision_root(tmp)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)  # both choose their own thread count, as a user's process would
    times: dict[str, list] = {"plain": [], "lottery": []}
    acc: dict[str, float] = {}
    for r in range(rounds):
        t, out = child([sys.executable, "-c", PLAIN, str(root), str(steps)], env)
        times["plain"].append(t)
        acc["plain"] = float(out.split("accuracy")[-1])
        t, out = child([sys.executable, "-m", "lottery", "run", "--model", "lenet5", "--dataset", "fashion_mnist",
                        "--levels", "0", "--controls", "none", "--steps", str(steps), "--optimizer", "sgd",
                        "--lr", str(LR), "--momentum", str(MOMENTUM), "--batch-size", str(BATCH),
                        "--out", str(tmp / f"runs{r}"), "--no-progress"], env)
        times["lottery"].append(t)
        acc["lottery"] = float(next(line.split()[2] for line in out.splitlines() if line.strip().startswith("0 "))) / 100
        print(f"round {r}: plain {times['plain'][-1]:.1f} s, lottery run {times['lottery'][-1]:.1f} s", flush=True)
    return {"times": times, "acc": acc}


NETS = {"lenet5": ((1, 28, 28), 64), "conv4": ((3, 32, 32), 60), "resnet20": ((3, 32, 32), 128)}


def step_times(steps: dict, repeats: int) -> dict:
    """ms per step of a plain loop and of ``lottery.train.train`` for each net, best of ``repeats`` alternations."""
    out = {}
    for name, (shape, batch) in NETS.items():
        n = steps[name]
        data = lt.load_dataset("synthetic", input_shape=list(shape), n_train=batch * 8, n_test=2, val_size=2)
        model = lt.build_model(name, shape, data.num_classes)
        lt.init_weights(model, "kaiming_normal", seed=0)
        cfg = from_dict({"dataset": "synthetic", "model": name, "optimizer": "sgd", "lr": 0.01, "batch_size": batch,
                         "steps": n, "eval_every": 10 * n, "record_signal": False, "progress": False})
        best = {"plain": float("inf"), "lottery": float("inf")}
        for _ in range(repeats):
            net = _copy(model)
            best["plain"] = min(best["plain"], _plain_steps(net, data, batch, n))
            net = _copy(model)
            start = time.perf_counter()
            train(net, data, cfg)
            best["lottery"] = min(best["lottery"], (time.perf_counter() - start) / n)
        out[name] = best
        print(f"{name}: plain {best['plain'] * 1e3:.1f} ms/step, lottery.train {best['lottery'] * 1e3:.1f}", flush=True)
    return out


def _copy(model):
    import copy

    return copy.deepcopy(model)


def _plain_steps(model, data, batch: int, n: int) -> float:
    x, y = data.train
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=MOMENTUM)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for i in range(n):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return (time.perf_counter() - start) / n


def report(whole: dict, steps: dict, threads: int, loads: tuple, cmd: str, n_steps: int) -> str:
    t = whole["times"]
    rows = [f"| {i} | {p:.1f} | {q:.1f} | {p / q:.2f}x |" for i, (p, q) in enumerate(zip(t["plain"], t["lottery"]))]
    best = min(t["plain"]) / min(t["lottery"])
    lines = [
        f"LeNet-5 on Fashion-MNIST, SGD {LR}/{MOMENTUM}, batch {BATCH}, {n_steps} steps, whole process (start to exit, "
        f"each in a fresh child process, alternating); `{cmd}`; torch {torch.__version__}, {os.cpu_count()} cores, "
        f"load average {loads[0]:.1f} at the start and {loads[1]:.1f} at the end (a shared, busy machine).",
        "",
        "| round | plain loop: torchvision + DataLoader, default layout and threads (s) | `lottery run` (s) | speed-up |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Best against best: **{best:.2f}x** (target >= 2x). Test accuracy: plain loop {100 * whole['acc']['plain']:.1f} %, "
        f"`lottery run` {100 * whole['acc']['lottery']:.1f} % (different data orders). `lottery run` also evaluates "
        "5000 validation images every 100 steps, records the per-layer signal, writes its run directory and five plots.",
        "",
        f"Step time on synthetic in-memory data, best of the rounds, {threads} thread(s) (what `lottery` picks here):",
        "",
        "| net | batch | plain loop, default layout (ms/step) | `lottery.train` (ms/step) | speed-up |",
        "|---|---|---|---|---|",
        *[f"| {n} | {NETS[n][1]} | {s['plain'] * 1e3:.1f} | {s['lottery'] * 1e3:.1f} | {s['plain'] / s['lottery']:.2f}x |"
          for n, s in steps.items()],
        "",
        "What makes the difference: convnets train in channels_last (lottery/models/layout.py; `fused = false` keeps "
        "torch's default layout for bit-identity with a plain loop), the data set is one in-memory tensor sliced by "
        "a seeded permutation (no DataLoader, no PIL), and a process never runs more threads than the cores the "
        "other running work leaves free (lottery/threads.py): on a busy machine two OpenMP threads wait at every "
        "barrier for a descheduled one.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round of 100 steps, short step timings")
    ap.add_argument("--rounds", type=int, default=None, help="alternations of the whole-process race (default 2; 1 "
                    "with --quick)")
    ap.add_argument("--write", action="store_true", help="replace this benchmark's section of benchmarks/RESULTS.md")
    args = ap.parse_args()
    threads = fit_threads()
    loads = [os.getloadavg()[0]]
    n_steps, rounds = (100, 1) if args.quick else (600, 2)
    rounds = args.rounds or rounds
    with tempfile.TemporaryDirectory() as tmp:
        whole = whole_process(n_steps, rounds, Path(tmp))
    steps = step_times({"lenet5": 20, "conv4": 3, "resnet20": 2} if args.quick else
                       {"lenet5": 100, "conv4": 15, "resnet20": 8}, 1 if args.quick else 2)
    loads.append(os.getloadavg()[0])
    cmd = "python benchmarks/bench_convnet.py" + (" --quick" if args.quick else "") + (" --write" if args.write else "")
    text = report(whole, steps, threads, tuple(loads), cmd, n_steps)
    print(text)
    if args.write:
        write_sections({"## Convnets on the CPU": text})


if __name__ == "__main__":
    main()
