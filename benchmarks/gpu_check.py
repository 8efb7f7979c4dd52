"""The prepared GPU check: the CUDA path end to end, and training timings for LeNet-300-100 and ResNet-20.

Run it once on a machine with a GPU (the whole script takes a couple of minutes on one device):

    python benchmarks/gpu_check.py                 # CUDA: checks + timings, writes `## GPU` in RESULTS.md
    python benchmarks/gpu_check.py --smoke         # anywhere (CPU): the same checks on a reduced size, no file

Checks, each an assertion that stops the script with a message:
1. data and model live on the device, training keeps pruned weights at exactly zero, results are finite;
2. fp32 on CUDA follows the CPU run from the same init and batches (validation loss within 2 %; kernels differ);
3. bf16 autocast (``--amp``) trains to a finite result and the weights stay float32;
4. a full IMP experiment (``run_imp``, 1 level, ``device=cuda``) completes and its run directory exports;
5. the exported ticket reloads (on the CPU) with the CUDA model's predictions;
6. fused training (``lottery.fused``) of 3 LeNet-300-100 tickets on the device follows 3 separate runs (validation
   losses within 1e-3 relative).
Timings: steps per second of ``lottery.train.train`` under a 20 %-density mask, fp32 vs bf16 autocast, with the data
set in device memory (synthetic data of MNIST / CIFAR shapes: the GPU machine has no internet); and the fused sweep:
K = 1 .. 64 LeNet-300-100 tickets in one pass against K separate runs (the target: >= 10x at K = 32).
ResNet-20 (batch 128): one network in ``lottery.train`` against a plain PyTorch loop (default layout fp32, and
channels_last + bf16 autocast, the best plain loop; data on the device in both), one IMP level end to end with
augmentation (``run_imp``: dense level + level 1), and host synchronisations inside the step (CUDA's sync debug
mode: a 10-step and a 30-step run must raise equally many, i.e. only the evaluations sync). ResNet-20 has
BatchNorm buffers, which the fused trainer cannot stack yet, so the convnet K sweep (K = 1 .. 32) runs Conv-4
(no normalization: one grouped convolution per layer through ``torch.func.vmap``).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import warnings
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import lottery as lt
from lottery.config import from_dict
from lottery.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench_common module
from bench_common import RESULTS, write_sections  # noqa: E402
from bench_fused import _data as _sweep_data, _nets, fused_sweep  # noqa: E402
# (model, input shape, batch, lr, steps on GPU, steps in --smoke)
MODELS = [("lenet_300_100", (1, 28, 28), 60, 1.2e-3, 3000, 20), ("resnet20", (3, 32, 32), 128, 1e-3, 600, 2)]


def _data(shape, n_train: int, device):
    return lt.load_dataset("synthetic", input_shape=list(shape), num_classes=10, n_train=n_train, n_test=n_train // 4,
                           val_size=n_train // 8, device=device)


def _setup(name, shape, device):
    """The same init and 20 %-density mask on every device: drawn and pruned on the CPU, then moved."""
    model = lt.build_model(name, shape, 10)
    lt.init_weights(model, "kaiming_normal" if name.startswith("resnet") else "xavier_normal", seed=0)
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.8)
    mask.apply(model)
    return model.to(device), mask.to(device)


def _train(name, shape, batch, lr, steps, device, data, amp: bool):
    cfg = from_dict(dict(model=name, steps=steps, batch_size=batch, lr=lr, eval_every=max(1, steps // 2),
                         device=device.type, amp=amp, progress=False))
    model, mask = _setup(name, shape, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = train(model, data, cfg, mask, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    # check 1: everything on the device, pruned weights exactly zero, a finite result
    assert data.train[0].device.type == device.type, "the data set is not on the device"
    assert all(p.device.type == device.type for p in model.parameters()), "a parameter left the device"
    params = dict(model.named_parameters())
    assert all(not params[k][~m].any() for k, m in mask.items()), "a pruned weight became non-zero"
    assert result.status == "ok" and math.isfinite(result.test_loss), f"{name}: training {result.status}"
    assert all(p.dtype == torch.float32 for p in model.parameters()), "autocast changed the weights' dtype"
    return {"model": model, "mask": mask, "result": result, "steps_per_s": steps / seconds}


def check_cpu_agreement(name, shape, batch, lr, device, n_train, steps=20):
    """check 2: the same init, data and batches on CPU and on the device give nearby validation losses."""
    cpu = torch.device("cpu")
    ref = _train(name, shape, batch, lr, steps, cpu, _data(shape, n_train, cpu), amp=False)
    dev = _train(name, shape, batch, lr, steps, device, _data(shape, n_train, device), amp=False)
    a, b = ref["result"].curve[-1][1], dev["result"].curve[-1][1]
    assert abs(a - b) <= 0.02 * abs(a) + 1e-4, f"{name}: CPU val loss {a:.5f} vs {device.type} {b:.5f}"
    return a, b


def check_imp_and_export(device, out_dir: Path, steps: int = 50):
    """checks 4 and 5: run_imp on the device, export level 1, reload on the CPU with the same predictions."""
    from lottery.export import export_run, load_exported
    from lottery.storage.rundir import RunDir

    cfg = dict(name="gpu-check", dataset="synthetic", dataset_options={"input_shape": [1, 28, 28], "num_classes": 10},
               model="lenet_300_100", levels=1, steps=steps, eval_every=25, batch_size=60, controls=["random_mask"],
               device=device.type, out=str(out_dir / "runs"), progress=False)
    results = lt.run_imp(cfg)
    assert results["status"] == "complete", results["status"]
    run_dir = out_dir / "runs" / from_dict(cfg).run_name()
    path = export_run(run_dir, 1, layout="csr")
    model = lt.build_model("lenet_300_100", (1, 28, 28), 10).to(device)
    model.load_state_dict({k: v.to(device) for k, v in RunDir(run_dir).load_state("level_01/final.pt").items()})
    x = torch.randn(32, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(x.to(device)).cpu()
        got = load_exported(path)(x)
    assert torch.allclose(expected, got, atol=1e-4, rtol=1e-3), "the exported ticket predicts differently"
    return results["levels"][-1]["test_accuracy"]


def check_fused(device, n_train: int, steps: int = 20) -> float:
    """check 6: 3 fused LeNet-300-100 tickets on the device follow their separate runs."""
    from lottery.fused import train_fused

    data = _sweep_data((1, 28, 28), n_train, device)
    cfg = from_dict(dict(steps=steps, batch_size=60, lr=1.2e-3, eval_every=5, device=device.type, progress=False))
    separate, separate_masks = _nets("lenet_300_100", {}, (1, 28, 28), 3, device)
    alone = [train(m, data, cfg, mk, seed=i) for i, (m, mk) in enumerate(zip(separate, separate_masks))]
    models, masks = _nets("lenet_300_100", {}, (1, 28, 28), 3, device)  # the same inits and masks again
    fused = train_fused(models, data, cfg, masks, seeds=[0, 1, 2])
    worst = max(abs(f[1] - a[1]) / abs(a[1]) for r, g in zip(alone, fused) for a, f in zip(r.curve, g.curve))
    assert worst <= 1e-3, f"fused vs separate validation loss differs by {worst:.2e} relative on {device.type}"
    return worst


def resnet_plain_loop(device, data, steps: int, channels_last: bool, amp: bool, warmup: int = 3) -> float:
    """Steps per second of a plain PyTorch loop over ResNet-20 (SGD momentum, fused kernel on CUDA, random batches
    gathered on the device), in torch's default layout or channels_last, fp32 or bf16 autocast."""
    model = lt.build_model("resnet20", (3, 32, 32), 10).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=device.type == "cuda")
    x, y = data.train
    gen = torch.Generator(device=device).manual_seed(0)
    cast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp and device.type == "cuda" \
        else contextlib.nullcontext

    def step():
        idx = torch.randint(0, len(x), (128,), device=device, generator=gen)
        xb = x.index_select(0, idx)
        with cast():
            loss = torch.nn.functional.cross_entropy(model(xb), y.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):  # kernel selection, allocator
        step()
    took = _timed_steps(step, steps, device)
    return steps / took


def _timed_steps(step, steps: int, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def imp_level_resnet(device, out_dir: Path, steps: int, n_train: int) -> dict:
    """One IMP level of ResNet-20 end to end (``run_imp``: the dense level 0, then level 1 at 80 % density) with
    augmentation, SGD 0.1 and evaluations every quarter run; seconds per training run."""
    cfg = dict(name="gpu-resnet20", model="resnet20", dataset="synthetic", init="kaiming_normal",
               dataset_options={"input_shape": [3, 32, 32], "num_classes": 10, "n_train": n_train,
                                "n_test": n_train // 4},
               augment="crop_flip", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128,
               steps=steps, eval_every=max(1, steps // 4), levels=1, controls=[], device=device.type,
               out=str(out_dir / "runs"), progress=False)
    t0 = time.perf_counter()
    results = lt.run_imp(cfg)
    wall = time.perf_counter() - t0
    assert results["status"] == "complete", results["status"]
    return {"wall": wall, "per_run": wall / 2, "acc": [lv["test_accuracy"] for lv in results["levels"]]}


def sync_count(device, data, steps: int) -> int:
    """Host synchronisations CUDA's sync debug mode reports while ``lottery.train`` runs ``steps`` steps (with
    evaluations only at the start and the end)."""
    cfg = from_dict(dict(model="resnet20", steps=steps, batch_size=128, lr=0.1, optimizer="sgd", eval_every=10 ** 6,
                         device=device.type, progress=False, record_signal=False))
    model, mask = _setup("resnet20", (3, 32, 32), device)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(model, data, cfg, mask, seed=0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def convnet_section(plain: dict, ours: dict, imp: dict, syncs, sweep) -> str:
    lines = ["", "ResNet-20, batch 128, data on the device; steps/s:", "",
             "| loop | fp32 | bf16 autocast |", "|---|---|---|",
             f"| plain PyTorch loop, default layout | {plain['default32']:.1f} | {plain['default16']:.1f} |",
             f"| plain PyTorch loop, channels_last | {plain['cl32']:.1f} | {plain['cl16']:.1f} |",
             f"| `lottery.train` (channels_last, mask, evaluations) | {ours['fp32']:.1f} | {ours['bf16']:.1f} |",
             "", f"`lottery.train` against the best plain loop: {ours['bf16'] / max(plain['cl16'], plain['cl32']):.2f}x "
             "(target: within 2x, i.e. >= 0.5x).",
             f"One IMP level end to end (`run_imp`, dense + level 1, augmentation on): {imp['wall']:.1f} s, "
             f"{imp['per_run']:.1f} s per training run; test accuracies {', '.join(f'{a:.3f}' for a in imp['acc'])}.",
             "Host synchronisations reported by CUDA's sync debug mode: " + (
                 f"{syncs[0]} in a 10-step run, {syncs[1]} in a 30-step run "
                 f"({'none inside the step' if syncs[0] == syncs[1] else 'the step syncs: see the profiler'})."
                 if syncs else "not measured (no CUDA)."),
             "", "Fused Conv-4 (batch 60, Adam, own masks, inits and data orders; no evaluation):", "",
             "| K | separate ms/step (one net) | fused ms/step (K nets) | fused vs K separate |", "|---|---|---|---|"]
    lines += [f"| {r['k']} | {r['separate_ms']:.3f} | {r['fused_ms']:.3f} | {r['ratio']:.2f}x |" for r in sweep]
    return "\n".join(lines) + "\n"


def section(rows, device_name: str, checks: dict, sweep=()) -> str:
    lines = [
        "## GPU",
        "",
        f"`python benchmarks/gpu_check.py` on {device_name}, torch {torch.__version__}; one run each (timings of one",
        "process, data set in device memory, synthetic data of MNIST / CIFAR-10 shapes, a 20 %-density mask,",
        "`lottery.train.train` including its evaluations). Checks passed: " + ", ".join(checks) + ".",
        "",
        "| model | batch | steps | fp32 steps/s | bf16 autocast steps/s | bf16 speed-up | fp32 test acc | bf16 test acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['batch']} | {r['steps']} | {r['fp32']:.1f} | {r['bf16']:.1f} | "
                     f"{r['bf16'] / r['fp32']:.2f}x | {r['acc32']:.3f} | {r['acc16']:.3f} |")
    if sweep:
        lines += ["", "Fused LeNet-300-100 tickets (batch 60, Adam, own masks, inits and data orders; no evaluation):",
                  "", "| K | separate ms/step (one net) | fused ms/step (K nets) | fused vs K separate |",
                  "|---|---|---|---|"]
        lines += [f"| {r['k']} | {r['separate_ms']:.3f} | {r['fused_ms']:.3f} | {r['ratio']:.2f}x |" for r in sweep]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="reduced sizes; runs on the CPU when there is no GPU")
    p.add_argument("--results", default=None, help="file whose `## GPU` section to write (default: RESULTS.md "
                                                      "on CUDA, nothing in --smoke)")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("no CUDA device: run with --smoke for the reduced CPU check", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    device_name = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.machine()})"
    n_train = 400 if args.smoke else 20000
    if not cuda:  # the CPU smoke run: tiny kernels, where a second thread on a shared machine only spin-waits
        torch.set_num_threads(1)
    rows, checks = [], {}
    for name, shape, batch, lr, steps, smoke_steps in MODELS:
        steps = smoke_steps if args.smoke else steps
        data = _data(shape, n_train, device)
        fp32 = _train(name, shape, batch, lr, steps, device, data, amp=False)
        bf16 = _train(name, shape, batch, lr, steps, device, data, amp=True)  # check 3 (autocast only on CUDA)
        rows.append({"name": name, "batch": batch, "steps": steps, "fp32": fp32["steps_per_s"],
                     "bf16": bf16["steps_per_s"], "acc32": fp32["result"].test_accuracy,
                     "acc16": bf16["result"].test_accuracy})
        print(f"{name}: fp32 {fp32['steps_per_s']:.0f} steps/s, bf16 {bf16['steps_per_s']:.0f} steps/s", flush=True)
    checks["device placement and zeros"] = True
    a, b = check_cpu_agreement("lenet_300_100", (1, 28, 28), 60, 1.2e-3, device, n_train, 5 if args.smoke else 20)
    checks[f"CPU vs {device.type} val loss {a:.4f} / {b:.4f}"] = True
    with tempfile.TemporaryDirectory() as tmp:
        acc = check_imp_and_export(device, Path(tmp), 20 if args.smoke else 50)
    checks[f"run_imp + export round trip (level-1 acc {acc:.3f})"] = True
    worst = check_fused(device, n_train, 5 if args.smoke else 20)
    checks[f"fused vs separate val loss within {worst:.1e} relative"] = True
    ks = (1, 2) if args.smoke else (1, 2, 4, 8, 16, 32, 64)
    sweep = fused_sweep("lenet_300_100", {}, (1, 28, 28), 60, "adam", 1.2e-3, ks, 3 if args.smoke else 300, device,
                        n_train=n_train)
    # ResNet-20 against the plain loop, one IMP level, host syncs; the convnet K sweep (Conv-4)
    data = _data((3, 32, 32), n_train, device)
    n = 1 if args.smoke else 200
    plain = {f"{lay}{bits}": resnet_plain_loop(device, data, n, lay == "cl", bits == "16", 1 if args.smoke else 3)
             for lay in ("default", "cl") for bits in ("32", "16")}
    ours = {"fp32": rows[-1]["fp32"], "bf16": rows[-1]["bf16"]}
    print(f"resnet20 plain loop: {plain}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        imp = imp_level_resnet(device, Path(tmp), 2 if args.smoke else 400, n_train)
    print(f"resnet20 IMP level: {imp}", flush=True)
    syncs = (sync_count(device, data, 10), sync_count(device, data, 30)) if cuda else None
    conv_sweep = fused_sweep("conv4", {"scale": 0.125} if args.smoke else {}, (3, 32, 32), 60, "adam", 3e-4,
                             (1, 2) if args.smoke else (1, 2, 4, 8, 16, 32), 2 if args.smoke else 30, device,
                             n_train=n_train, repeats=1 if args.smoke else 3)
    text = section(rows, device_name + (" (smoke: reduced sizes)" if args.smoke else ""), checks, sweep)
    text += convnet_section(plain, ours, imp, syncs, conv_sweep)
    print(text)
    target = args.results or (None if args.smoke else str(RESULTS))
    if target:
        write_sections({"## GPU": text}, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
