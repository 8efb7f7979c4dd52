"""The trainer's speed work changes nothing but speed: it matches a plain PyTorch loop written out here.

With ``fused=False`` the trainer must give bit-identical weights, the same test accuracy and the same next pruning
mask as the loop most users write (default ``torch.optim`` optimizer, one ``mask`` multiply per gradient, a seeded
permutation per epoch, contiguous batches). With the default ``fused=True`` the update is the same formula with
different float rounding: in float64 both paths agree to ~1e-15 after hundreds of steps, and in float32 they reach
the same accuracy.
"""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import lottery as lt
from lottery.config import from_dict
from lottery.train import make_optimizer, train

STEPS = 300


@pytest.fixture(scope="module")
def data():
    return lt.load_dataset("synthetic", n_train=1024, n_test=512)


def _config(**overrides):
    settings = dict(dataset="synthetic", model="mlp", steps=STEPS, batch_size=60, eval_every=50, lr=2e-3,
                    progress=False, device="cpu", fused=False)
    settings.update(overrides)
    return from_dict(settings)


def _masked_model(data, dtype=torch.float32):
    model = lt.build_model("mlp", data.input_shape, data.num_classes, hidden=[64, 32]).to(dtype)
    lt.init_weights(model, "xavier_normal", seed=0)
    mask = lt.prune_random(lt.Mask.ones_like(model), 0.8, seed=1)  # 20 % density, as in the benchmark
    mask.apply(model)
    return model, mask


def _lr_factor(step):
    """The SGD case's schedule, written out: 20 warmup steps, then x0.1 from step 150."""
    return min(1.0, (step + 1) / 20) * 0.1 ** (step >= 150)


def plain_loop(model, data, cfg, mask, seed, dtype=torch.float32, fused=None):
    """The reference: what a careful user writes by hand, with none of the trainer's speed work."""
    x, y = data.train
    x = x.to(dtype)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              fused=fused)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    per_epoch = len(x) // cfg.batch_size
    for step in range(cfg.steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(x), generator=gen)
            xs, ys = x[perm], y[perm]
        i = (step % per_epoch) * cfg.batch_size
        if cfg.schedule == "step":
            for g in opt.param_groups:
                g["lr"] = cfg.lr * _lr_factor(step)
        opt.zero_grad()
        F.cross_entropy(model(xs[i : i + cfg.batch_size]), ys[i : i + cfg.batch_size]).backward()
        for name, m in mask.items():
            params[name].grad.mul_(m.to(params[name].dtype))
        opt.step()
    with torch.no_grad():
        xt, yt = data.test
        return (model(xt.to(dtype)).argmax(1) == yt).float().mean().item()


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


CASES = {
    "adam": dict(optimizer="adam"),
    "sgd": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, schedule="step", milestones=[150],
                gamma=0.1, warmup_steps=20),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_path_is_bit_identical_to_a_plain_loop(data, case):
    cfg = _config(**CASES[case])
    model, mask = _masked_model(data)
    result = train(model, data, cfg, mask, seed=7)
    ref_model, _ = _masked_model(data)
    ref_acc = plain_loop(ref_model, data, cfg, mask, seed=7)

    assert result.status == "ok" and result.steps == STEPS
    assert all(torch.equal(a, b) for a, b in zip(_weights(model), _weights(ref_model))), "weights differ"
    assert math.isclose(result.test_accuracy, ref_acc, abs_tol=1e-9)
    # the mask IMP would draw next is the same, and the pruned weights are still exactly zero in both
    nxt, ref_nxt = lt.prune_magnitude(model, mask, 0.2), lt.prune_magnitude(ref_model, mask, 0.2)
    assert all(torch.equal(nxt[k], ref_nxt[k]) for k in nxt)
    params = dict(model.named_parameters())
    assert all(torch.count_nonzero(params[k][~m]) == 0 for k, m in mask.items())


@pytest.mark.parametrize("case", sorted(CASES))
def test_default_path_is_bit_identical_to_a_plain_loop_with_the_fused_kernel(data, case):
    """Everything but the optimizer kernel (batching, grads set to None, one fused mask multiply) is exact."""
    cfg = _config(**CASES[case], fused=True)
    model, mask = _masked_model(data)
    result = train(model, data, cfg, mask, seed=7)
    ref_model, _ = _masked_model(data)
    ref_acc = plain_loop(ref_model, data, cfg, mask, seed=7, fused=True)
    assert all(torch.equal(a, b) for a, b in zip(_weights(model), _weights(ref_model))), "weights differ"
    assert math.isclose(result.test_accuracy, ref_acc, abs_tol=1e-9)


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_kernel_differs_only_in_rounding(data, case):
    """In float64 rounding is ~1e-16, so a different formula would show; the fused path must agree to ~1e-12."""
    double = dataclasses.replace(data, **{s: (getattr(data, s)[0].double(), getattr(data, s)[1])
                                          for s in ("train", "val", "test")})
    cfg = _config(**CASES[case], fused=True)
    model, mask = _masked_model(data, torch.float64)
    opt = make_optimizer(model, cfg)
    assert opt.defaults.get("fused"), "the fused kernel was not used on this CPU"
    train(model, double, cfg, mask, seed=7, optimizer=opt)
    ref_model, _ = _masked_model(data, torch.float64)
    plain_loop(ref_model, data, cfg, mask, seed=7, dtype=torch.float64)
    for a, b in zip(_weights(model), _weights(ref_model)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), f"max |diff| {(a - b).abs().max():.3g}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_default_reaches_the_plain_loops_accuracy(data, case):
    cfg = _config(**CASES[case], fused=True)
    model, mask = _masked_model(data)
    result = train(model, data, cfg, mask, seed=7)
    ref_model, _ = _masked_model(data)
    ref_acc = plain_loop(ref_model, data, cfg, mask, seed=7)
    assert abs(result.test_accuracy - ref_acc) <= 0.01  # 512 test samples: 0.01 is five of them (measured: 0)
    params = {k: p.detach() for k, p in model.named_parameters()}
    assert all(torch.count_nonzero(params[k][~m]) == 0 for k, m in mask.items())
    ref = {k: p.detach() for k, p in ref_model.named_parameters()}
    diff = max(float((params[k] - ref[k]).abs().max() / ref[k].abs().max()) for k in params)
    assert diff < 1e-4, f"fused and plain weights drifted apart by {diff:.3g} (relative; measured ~2e-7)"


def test_fused_is_the_default_and_can_be_turned_off(data):
    model, _ = _masked_model(data)
    assert make_optimizer(model, from_dict({"progress": False})).defaults.get("fused")
    assert not make_optimizer(model, _config()).defaults.get("fused")
