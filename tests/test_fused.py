"""Fused training equals training each network alone (lottery.train.train), network by network.

Tolerances (measured, then stated here): float64 — final weights within 1e-9 relative, validation losses at every
step within 1e-6 (``evaluate`` sums the loss in float32 whatever the weights' dtype, so one float32 ulp); float32 —
within 1e-3 relative after 30 steps (observed for K = 8: weights 4e-7, losses 3e-7; float64 weights 6e-16). Masks
are exact and early-stop steps equal; pruned weights are exactly zero in weights, gradients and optimizer state.
"""
import copy
import dataclasses

import pytest
import torch

import lottery.fused as fused
from lottery.config import from_dict
from lottery.data import load_dataset
from lottery.inits import init_weights
from lottery.masks import Mask
from lottery.models import build_model
from lottery.pruning import prune_random
from lottery.train import train

TOL = {torch.float64: 1e-9, torch.float32: 1e-3}
LOSS_TOL = {torch.float64: 1e-6, torch.float32: 1e-3}


def _setup(k, dtype, model="mlp", options=None, optimizer="adam", shape=(1, 12, 12)):
    cfg = from_dict(dict(dataset="synthetic", steps=30, eval_every=1, batch_size=32, lr=5e-3, optimizer=optimizer,
                         progress=False, device="cpu"))
    data = load_dataset("synthetic", val_size=None)
    cast = lambda split: tuple(t.to(dtype) if t.is_floating_point() else t for t in split)  # noqa: E731
    data = dataclasses.replace(data, train=cast(data.train), val=cast(data.val), test=cast(data.test))
    models, masks = [], []
    for i in range(k):
        options = {"hidden": [32, 16]} if options is None else options
        m = build_model(model, shape, data.num_classes, **options).to(dtype)
        init_weights(m, "kaiming_normal", seed=i)
        mask = prune_random(Mask.ones_like(m), 0.1 * (i % 5), seed=i) if i % 5 else Mask.ones_like(m)
        mask.apply(m)
        models.append(m)
        masks.append(mask)
    return cfg, data, models, masks


def _close(a, b, tol):
    return all(torch.allclose(a[n], b[n], rtol=tol, atol=tol) for n in a)


def _compare(cfg, data, models, masks, seeds, dtype, method="auto"):
    alone = [copy.deepcopy(m) for m in models]
    ref = [train(m, data, cfg, mk, seed=s) for m, mk, s in zip(alone, masks, seeds)]
    got = fused.train_fused(models, data, cfg, masks, seeds=seeds, method=method)
    tol = TOL[dtype]
    for r, g, a, m, mk in zip(ref, got, alone, models, masks):
        assert g.status == r.status and g.steps == r.steps
        assert [c[0] for c in g.curve] == [c[0] for c in r.curve]
        if r.status == "ok":
            assert torch.allclose(torch.tensor([c[1] for c in g.curve]), torch.tensor([c[1] for c in r.curve]),
                                  rtol=LOSS_TOL[dtype], atol=LOSS_TOL[dtype])
            assert g.early_stop_step == r.early_stop_step
            assert abs(g.test_accuracy - r.test_accuracy) <= (0 if dtype == torch.float64 else 0.01)
            # the early-stop weights' test accuracy and the per-layer signal, as train records them
            assert abs(g.early_stop_test_accuracy - r.early_stop_test_accuracy) <= (
                0 if dtype == torch.float64 else 0.01)
            assert g.signal["layers"] == r.signal["layers"] and g.signal["steps"] == r.signal["steps"]
            for key in ("activation_std", "grad_norm"):
                assert torch.allclose(torch.tensor(g.signal[key], dtype=torch.float64),
                                      torch.tensor(r.signal[key], dtype=torch.float64),
                                      rtol=LOSS_TOL[dtype], atol=LOSS_TOL[dtype])
            assert _close(dict(m.named_parameters()), dict(a.named_parameters()), tol)
        params = dict(m.named_parameters())
        for n, keep in mk.items():  # pruned weights exactly zero; the mask itself untouched
            assert bool((params[n][~keep] == 0).all())
    return ref, got


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_equals_separate(k, dtype):
    cfg, data, models, masks = _setup(k, dtype)
    before = [{n: t.clone() for n, t in mk.items()} for mk in masks]
    _compare(cfg, data, models, masks, seeds=list(range(k)), dtype=dtype)
    assert all(all(torch.equal(b[n], mk[n]) for n in mk) for b, mk in zip(before, masks))


@pytest.mark.parametrize("method", ["bmm", "vmap"])
def test_shared_data_order_and_both_methods(method):
    """The IMP arms share one data order (one batch, one GEMM per layer); both forward methods agree."""
    cfg, data, models, masks = _setup(3, torch.float64)
    _compare(cfg.replace(optimizer="sgd", lr=0.05, schedule="cosine", warmup_steps=5), data, models, masks,
             seeds=[7, 7, 7], dtype=torch.float64, method=method)


def test_convnet_through_vmap():
    cfg, data, models, masks = _setup(3, torch.float64, model="lenet5", options={})
    assert fused.Stack(models).method == "vmap"
    _compare(cfg.replace(steps=10), data, models, masks, seeds=[0, 1, 2], dtype=torch.float64)


def test_pruned_stay_zero_in_gradients_and_optimizer_state(monkeypatch):
    seen = {}
    real = fused.make_optimizer
    monkeypatch.setattr(fused, "make_optimizer", lambda holder, cfg: seen.setdefault("opt", real(holder, cfg)))
    cfg, data, models, masks = _setup(3, torch.float32)
    fused.train_fused(models, data, cfg, masks, seeds=[0, 1, 2], method="bmm")
    opt = seen["opt"]
    stacked = {n: p for n, p in zip(dict(models[0].named_parameters()), opt.param_groups[0]["params"])}
    for i, mk in enumerate(masks):
        for n, keep in mk.items():
            p = stacked[n]
            assert bool((p[i][~keep] == 0).all()) and bool((p.grad[i][~keep] == 0).all())
            for v in opt.state[p].values():
                if v.shape == p.shape:
                    assert bool((v[i][~keep] == 0).all())
    assert any(bool((~mk[n]).any()) for mk in masks for n in mk)  # something was pruned


def test_diverging_network_does_not_disturb_the_others():
    cfg, data, models, masks = _setup(3, torch.float64)
    with torch.no_grad():
        for p in models[1].parameters():
            p.mul_(1e200)  # logits overflow: the validation loss is not finite
    ref, got = _compare(cfg, data, models, masks, seeds=[0, 1, 2], dtype=torch.float64)
    assert got[1].status == ref[1].status == "diverged" and got[1].steps == ref[1].steps
    assert [g.status for g in got] == ["ok", "diverged", "ok"]


def test_early_stop_step_per_network():
    cfg, data, models, masks = _setup(3, torch.float64)
    cfg = cfg.replace(lr=0.05, steps=60, eval_every=5)  # a rate high enough to overfit: minima land at various steps
    ref, got = _compare(cfg, data, models, masks, seeds=[0, 1, 2], dtype=torch.float64)
    assert [g.early_stop_step for g in got] == [r.early_stop_step for r in ref]


def test_unfusable_model_falls_back_with_one_line(capsys):
    cfg, data, _, _ = _setup(1, torch.float32)
    models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 8), torch.nn.BatchNorm1d(8),
                                  torch.nn.Linear(8, 4)) for _ in range(2)]
    masks = [Mask.ones_like(m) for m in models]
    alone = [copy.deepcopy(m) for m in models]
    got = fused.train_fused(models, data, cfg, masks, seeds=[0, 1])
    ref = [train(m, data, cfg, mk, seed=s) for m, mk, s in zip(alone, masks, [0, 1])]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be fused" in err[0] and "one after another" in err[0]
    assert [g.test_accuracy for g in got] == [r.test_accuracy for r in ref]  # the exact unfused result


def test_imp_pack_gives_the_unpacked_results(tmp_path, monkeypatch):
    """--pack 3 trains ticket, reinit and random mask of each level together: same masks, same numbers up to
    float rounding (accuracies within one test sample, early-stop steps equal)."""
    from tests.engine_helpers import strip_times, tiny
    from lottery.drivers.imp import run_imp
    from lottery.storage.rundir import RunDir

    one = run_imp(tiny(tmp_path / "a", levels=2))
    packed_cfg = tiny(tmp_path / "b", levels=2, pack=3)
    passes = []
    real = fused.train_fused
    monkeypatch.setattr(fused, "train_fused",
                        lambda models, *a, **k: passes.append(len(models)) or real(models, *a, **k))
    packed = run_imp(packed_cfg)
    assert passes == [3, 3]  # levels 1 and 2: ticket + reinit + random mask in one pass each
    a, b = strip_times(one), strip_times(packed)
    assert b["config"].pop("pack") == 3 and a["config"].pop("pack") == "auto" and a["config"] == b["config"]
    n_test = 512
    for ea, eb in zip(a["levels"], b["levels"]):
        assert (ea["level"], ea["num_kept"], ea["status"], ea["early_stop_step"]) == \
            (eb["level"], eb["num_kept"], eb["status"], eb["early_stop_step"])
        assert abs(ea["test_accuracy"] - eb["test_accuracy"]) <= 1 / n_test + 1e-12
        assert set(ea["controls"]) == set(eb["controls"]) == ({"reinit", "random_mask"} if ea["level"] else set())
        for c in ea["controls"]:
            assert ea["controls"][c]["early_stop_step"] == eb["controls"][c]["early_stop_step"]
            assert abs(ea["controls"][c]["test_accuracy"] - eb["controls"][c]["test_accuracy"]) <= 1 / n_test + 1e-12
    ra, rb = RunDir.for_config(tiny(tmp_path / "a", levels=2)), RunDir.for_config(packed_cfg)
    for level in range(3):
        assert ra.load_mask(level).iou(rb.load_mask(level)) == 1.0


def test_pack_zero_is_refused():
    from lottery.errors import ConfigError

    with pytest.raises(ConfigError, match="pack must be an integer >= 1"):
        from_dict({"pack": 0})


def test_pack_auto_is_the_default_and_leaves_run_hashes_alone():
    from lottery.config import FIELDS

    cfg = from_dict({})
    assert cfg.pack == "auto" and FIELDS["pack"].metadata["hashed"] is False and "pack" not in cfg.hashed_settings()
    assert cfg.hash() == "d7d15db9c2"  # the default run's pinned hash, the same as when pack defaulted to 1
    assert {from_dict({"pack": p}).hash() for p in (1, 8, "auto")} == {cfg.hash()}
    assert cfg.drift_from({**cfg.to_dict(), "pack": 1}) == []  # a run made under pack = 1 resumes under auto


def test_auto_pack_rule():
    """1 on a CPU; on CUDA the largest power of two <= 32 within 2**23 parameters; 1 for an unfusable model."""
    from lottery.models import build_model

    cuda = torch.device("cuda")  # the rule reads only the device's type: no GPU needed to check it
    lenet = build_model("lenet_300_100", (1, 28, 28), 10)
    assert fused.resolve_pack("auto", lenet) == 1 and fused.resolve_pack(3, lenet) == 3
    assert fused.resolve_pack("auto", lenet, cuda) == 16
    assert fused.resolve_pack("auto", build_model("mlp", (1, 40), 10), cuda) == 32
    assert fused.resolve_pack("auto", build_model("conv4", (3, 32, 32), 10), cuda) == 2
    assert fused.resolve_pack("auto", build_model("vgg16", (3, 32, 32), 10), cuda) == 1
    assert fused.resolve_pack("auto", build_model("resnet20", (3, 32, 32), 10), cuda) == 1  # BatchNorm


@pytest.mark.parametrize("value, ok", [("auto", True), ("4", True), ("0", False), ("-1", False), ("many", False)])
def test_pack_flag(value, ok, tmp_path, capsys):
    from lottery.cli import build_parser, config_from_args
    from lottery.errors import ConfigError

    args = build_parser().parse_args(["run", "--pack", value, "--out", str(tmp_path)])
    if ok:
        assert config_from_args(args).pack == (value if value == "auto" else int(value))
    else:
        with pytest.raises(ConfigError, match="pack must be an integer >= 1 .* or auto"):
            config_from_args(args)


@pytest.mark.slow
def test_imp_pack_killed_mid_pass_resumes_to_the_same_results(tmp_path):
    """A kill during a level's fused pass (ticket and controls in training) loses that pass only; the resumed run
    equals an uninterrupted packed one bit for bit (same machine and thread count)."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from tests.engine_helpers import strip_times

    args = ["run", "--dataset", "synthetic", "--model-options", "hidden=[16]", "--steps", "30", "--eval-every", "10",
            "--batch-size", "32", "--levels", "2", "--lr", "5e-3", "--device", "cpu", "--no-progress", "--pack", "3"]

    def cli(out, crash):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "LOTTERY_CRASH_AT": crash}
        return subprocess.run([sys.executable, "-m", "lottery", *args, "--out", str(out)], env=env,
                              capture_output=True, text=True, timeout=600)

    from lottery.cli import main

    assert main([*args, "--out", str(tmp_path / "a")]) == 0  # the reference and the resume in this process
    assert cli(tmp_path / "b", crash="train:level1#10").returncode == -signal.SIGKILL
    (partial,) = (tmp_path / "b").glob("*/results.json")
    assert [e["level"] for e in json.loads(partial.read_text())["levels"]] == [0]  # level 1 was mid-pass
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    (a,), (b,) = (tmp_path / "a").glob("*/results.json"), (tmp_path / "b").glob("*/results.json")
    ra, rb = (strip_times(json.loads(p.read_text())) for p in (a, b))
    assert ra == rb


def test_early_stop_weights_test_accuracy_and_signal():
    """A rate at which validation loss turns back up before the end: each network's early-stop step is earlier
    than its last, and the test accuracy of its early-stop weights (not the final ones) equals train's."""
    cfg, data, models, masks = _setup(3, torch.float64)
    ref, got = _compare(cfg.replace(lr=0.05, steps=40, eval_every=4), data, models, masks, seeds=[0, 1, 2],
                        dtype=torch.float64)
    assert all(r.early_stop_step < r.steps and r.early_stop_test_accuracy != r.test_accuracy for r in ref)
    assert [g.early_stop_test_accuracy for g in got] == [r.early_stop_test_accuracy for r in ref]


@pytest.mark.parametrize("shared", [True, False])
def test_late_start_and_early_stop_from_match_train(shared):
    """One bookkeeping (lottery.train.Bookkeeping): the fused trainer continues a run from step K with K's data
    order and schedule, and ignores early evaluations for the early-stop step, exactly as ``train`` does."""
    cfg, data, models, masks = _setup(3, torch.float64)
    cfg = cfg.replace(eval_every=4, schedule="cosine")
    seeds = [7, 7, 7] if shared else [1, 2, 3]
    alone = [copy.deepcopy(m) for m in models]
    ref = [train(m, data, cfg, mk, seed=s, start_step=13, early_stop_from=21)
           for m, mk, s in zip(alone, masks, seeds)]
    got = fused.train_fused(models, data, cfg, masks, seeds=seeds, start_step=13, early_stop_from=21)
    for r, g, a, m in zip(ref, got, alone, models):
        assert g.steps == r.steps == 30 - 13
        assert [c[0] for c in g.curve] == [c[0] for c in r.curve] == [13, 16, 20, 24, 28, 30]
        assert g.early_stop_step == r.early_stop_step >= 21
        assert _close(dict(m.named_parameters()), dict(a.named_parameters()), TOL[torch.float64])


def test_a_fused_pass_follows_the_lr_schedule_and_each_networks_seed():
    """Checked on the fused pass itself, not against ``train`` (which shares its bookkeeping and so would share a
    bug): the lr multiplied by 1e-30 after step 2 leaves every weight exactly as it was (each update is far below
    half a float32 ulp of weights of size ~0.1; biases start at 0, so they are left out); identical networks with
    the same seed stay identical, and with another seed they diverge."""
    cfg, data, models, masks = _setup(3, torch.float32)
    frozen = cfg.replace(steps=12, schedule="step", milestones=[2], gamma=1e-30, optimizer="sgd", eval_every=4)
    short = [copy.deepcopy(models[0]) for _ in range(2)]
    fused.train_fused(short, data, frozen.replace(steps=2), [masks[0]] * 2, seeds=[0, 0], method="bmm")
    long = [copy.deepcopy(models[0]) for _ in range(3)]
    fused.train_fused(long, data, frozen, [masks[0]] * 3, seeds=[0, 0, 1], method="bmm")
    weights = [{n: p for n, p in m.named_parameters() if n.endswith("weight")} for m in long]
    assert all(torch.equal(p, dict(short[0].named_parameters())[n]) for n, p in weights[0].items())  # frozen after 2
    assert all(torch.equal(p, weights[1][n]) for n, p in weights[0].items())  # same seed: the same batches
    assert not torch.equal(weights[0]["fc1.weight"], weights[2]["fc1.weight"])  # another seed: other batches
