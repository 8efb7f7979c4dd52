"""The science protocol: late rewinding continues level 0's clock, controls start untrained, every random source
is seeded per run, a reused optimizer keeps its schedule, and both accuracies (final, early-stop) are recorded."""
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lottery as lt
import lottery.session as session
from lottery.cli import main
from lottery.errors import ConfigError
from lottery.models import MODELS, register_module
from lottery.drivers.prune_at_init import run_prune_at_init
from lottery.storage.rundir import RunDir
from lottery.train import evaluate, lr_factor, make_optimizer, train
from tests.engine_helpers import strip_times, tiny


class OddParams(nn.Module):
    """A net with parameters no init scheme sets: PReLU slopes and a learnable output scale."""

    def __init__(self, input_shape, num_classes, dropout=0.0):
        super().__init__()
        n = 1
        for d in input_shape:
            n *= d
        self.fc1, self.act, self.drop = nn.Linear(n, 24), nn.PReLU(24, init=0.25), nn.Dropout(dropout)
        self.fc2 = nn.Linear(24, num_classes)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x.flatten(1))))) * self.scale


@pytest.fixture
def odd_model():
    register_module("odd_params", OddParams)
    yield "odd_params"
    MODELS.pop("odd_params")


@pytest.fixture
def spy(monkeypatch):
    """The model's state and the train() keywords at the start of every training run of the drivers."""
    calls = []
    real = session.train  # every driver trains through the session

    def wrapped(model, data, cfg, mask=None, **kw):
        calls.append({"state": lt.snapshot(model), "mask": mask.clone(), **kw})
        return real(model, data, cfg, mask, **kw)

    monkeypatch.setattr(session, "train", wrapped)
    return calls


def _run_dir(cfg):
    return RunDir(os.path.join(cfg.out, cfg.run_name()))


# -- 1. late rewinding -----------------------------------------------------------------------------------------
# 896 training samples / batch 32 = 28 steps per epoch: K = 33 starts mid-epoch 2, inside the warmup, before the
# milestone, and off the evaluation grid.
LATE = dict(rewind="step:33", steps=70, warmup_steps=40, schedule="step", milestones=(55,), gamma=0.5,
            optimizer="sgd", lr=0.05, momentum=0.9, fused=False, levels=1, eval_every=20)


def _continue_by_hand(cfg, start_state, mask, k):
    """Steps k..T of level 0's run, written out: the same model, data order and schedule, a fresh optimizer."""
    data = lt.load_dataset(cfg.dataset, val_size=cfg.val_size)
    model = lt.build_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_options)
    model.load_state_dict(start_state)
    mask.apply(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    x, y = data.train
    per_epoch = len(x) // cfg.batch_size
    order = torch.Generator().manual_seed(cfg.seed)
    params = dict(model.named_parameters())
    for step in range(cfg.steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(x), generator=order)
        if step < k:
            continue
        warm = min(1.0, (step + 1) / cfg.warmup_steps)
        opt.param_groups[0]["lr"] = cfg.lr * warm * (cfg.gamma if step >= cfg.milestones[0] else 1.0)
        idx = perm[(step % per_epoch) * cfg.batch_size: (step % per_epoch + 1) * cfg.batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        for name, m in mask.items():
            params[name].grad.mul_(m.float())
        opt.step()
    return model.state_dict()


def test_late_rewinding_continues_level_0s_schedule_and_data_order(tmp_path, spy):
    cfg = tiny(tmp_path, controls=("reinit", "random_mask"), **LATE)
    results = lt.run_imp(cfg)
    run = _run_dir(cfg)
    rewind_state, mask = run.load_state("rewind.pt"), run.load_mask(1)
    expected = _continue_by_hand(cfg, rewind_state, mask, 33)
    final = run.load_state("level_01/final.pt")
    assert all(torch.equal(final[k], expected[k]) for k in expected), "level 1 is not steps 33..70 of level 0's run"

    dense, ticket = results["levels"]
    assert dense["steps"] == 70 and ticket["steps"] == 70 - 33
    assert [c[0] for c in ticket["curve"]] == [33, 40, 60, 70]  # dense's clock, from the rewind step
    assert 33 <= ticket["early_stop_step"] <= 70
    assert ticket["controls"]["random_mask"]["steps"] == 70 - 33
    assert ticket["controls"]["random_mask"]["curve"][0][0] == 33
    reinit = ticket["controls"]["reinit"]  # a fresh init has no step 33: it trains the whole budget
    assert reinit["steps"] == 70 and reinit["curve"][0][0] == 0
    assert [c.get("start_step", 0) for c in spy] == [0, 33, 0, 33]  # dense, ticket, reinit, random mask


def test_late_start_of_train_matches_the_uninterrupted_run(tmp_path):
    """train(start_step=K) from the step-K weights and optimizer state reproduces an uninterrupted run."""
    cfg = tiny(tmp_path, **{**LATE, "optimizer": "sgd", "momentum": 0.0})  # no momentum: no state to carry over
    data = lt.load_dataset("synthetic")
    whole = lt.build_model("mlp", data.input_shape, data.num_classes, hidden=[32, 16])
    lt.init_weights(whole, "xavier_normal", seed=0)
    start = lt.snapshot(whole)
    r = train(whole, data, cfg, seed=4, snapshot_step=33)
    part = lt.build_model("mlp", data.input_shape, data.num_classes, hidden=[32, 16])
    part.load_state_dict(r.rewind_state)
    late = train(part, data, cfg, seed=4, start_step=33)
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), part.parameters()))
    assert late.steps == 37 and late.curve[1:] == [c for c in r.curve if c[0] > 33]
    assert not torch.equal(start["fc1.weight"], whole.fc1.weight)
    with pytest.raises(ConfigError, match="start_step"):
        train(part, data, cfg, start_step=71)


# -- 2. controls start untrained ------------------------------------------------------------------------------
def test_reinit_control_takes_unset_parameters_from_init_not_training(tmp_path, spy, odd_model):
    cfg = tiny(tmp_path, model=odd_model, model_options={}, levels=1, controls=("reinit",), rewind="step:10",
               steps=40)
    lt.run_imp(cfg)
    run = _run_dir(cfg)
    init, trained = run.load_state("init.pt"), run.load_state("level_01/final.pt")
    ticket, reinit = spy[1]["state"], spy[2]["state"]
    for name in ("act.weight", "scale"):
        assert not torch.equal(trained[name], init[name]), f"{name} did not train: the test would prove nothing"
        assert torch.equal(reinit[name], init[name]), f"reinit inherited trained values of {name}"
    assert not torch.equal(reinit["fc1.weight"], ticket["fc1.weight"])  # the scheme's own weights: a fresh draw


def test_prune_at_init_reinit_ablation_starts_untrained(tmp_path, spy, odd_model):
    cfg = tiny(tmp_path, model=odd_model, model_options={}, levels=1, controls=(), steps=40)
    run_prune_at_init(cfg, strategies=("magnitude_init",), densities=(0.5,), ablations=("reinit",))
    init = _run_dir(cfg).load_state("init.pt")
    dense, subnet, reinit = spy
    assert dense.get("start_step", 0) == 0 and subnet["mask"] == reinit["mask"]
    for name in ("act.weight", "scale"):
        assert torch.equal(reinit["state"][name], init[name]), f"reinit ablation inherited trained {name}"
    assert not torch.equal(reinit["state"]["fc1.weight"][reinit["mask"]["fc1.weight"]],
                           init["fc1.weight"][reinit["mask"]["fc1.weight"]])


# -- 3. checkpoint init has no reinit control --------------------------------------------------------------------
def test_checkpoint_init_refuses_the_reinit_control(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--controls random_mask"):
        tiny(tmp_path, init="checkpoint", init_options={"path": "w.pt"})
    tiny(tmp_path, init="checkpoint", init_options={"path": "w.pt"}, controls=("random_mask",))  # accepted
    assert main(["run", "--dataset", "synthetic", "--init", "checkpoint", "--init-options", "path=w.pt",
                 "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--controls random_mask" in err
    assert not list(tmp_path.rglob("*.pt"))
    cfg = tiny(tmp_path, init="checkpoint", init_options={"path": "w.pt"}, controls=())
    with pytest.raises(ConfigError, match="--ablations shuffled"):
        run_prune_at_init(cfg, strategies=("random",), densities=(0.5,))


# -- 4. stochastic layers are seeded per run ----------------------------------------------------------------------
def test_dropout_runs_are_reproducible_and_leave_the_global_rng_alone(tmp_path, odd_model):
    cfg = tiny(tmp_path, model=odd_model, model_options={"dropout": 0.5}, levels=1, steps=30)
    data = lt.load_dataset("synthetic")
    runs = []
    for _ in range(2):
        model = lt.build_model(odd_model, data.input_shape, data.num_classes, dropout=0.5)
        lt.init_weights(model, "xavier_normal", seed=0)
        torch.rand(3)  # the global RNG moves between the runs, as it does in any program
        before = torch.get_rng_state()
        r = train(model, data, cfg, seed=1)
        runs.append((r.curve, r.test_accuracy, lt.snapshot(model), torch.equal(torch.get_rng_state(), before)))
    assert runs[0][:2] == runs[1][:2]
    assert all(torch.equal(runs[0][2][k], runs[1][2][k]) for k in runs[0][2])
    assert runs[0][3] and runs[1][3], "train() changed the caller's global RNG state"
    a = lt.run_imp(cfg.replace(out=str(tmp_path / "a")))
    torch.rand(5)
    b = lt.run_imp(cfg.replace(out=str(tmp_path / "b")))
    assert strip_times(a)["levels"] == strip_times(b)["levels"]


# -- 6. a reused optimizer keeps its schedule --------------------------------------------------------------------
class _LrLog:
    """A progress bar that records the learning rate each update used."""

    def __init__(self, opt):
        self.opt, self.lrs = opt, []

    def update(self, n=1):
        self.lrs.append(self.opt.param_groups[0]["lr"])

    def set_postfix(self, **kw):
        pass


def test_reusing_an_optimizer_does_not_compound_the_schedule(tmp_path):
    cfg = tiny(tmp_path, steps=20, warmup_steps=5, schedule="step", milestones=(12,), gamma=0.1)
    data = lt.load_dataset("synthetic")
    model = lt.build_model("mlp", data.input_shape, data.num_classes, hidden=[32, 16])
    opt = make_optimizer(model, cfg)
    logs = [_LrLog(opt), _LrLog(opt)]
    for log in logs:
        train(model, data, cfg, optimizer=opt, progress=log)
    expected = [cfg.lr * lr_factor(cfg, s, 20) for s in range(20)]
    assert logs[0].lrs == expected and logs[1].lrs == expected


# -- 7. both accuracies --------------------------------------------------------------------------------------------
def test_early_stop_test_accuracy_is_that_of_the_early_stop_weights(tmp_path):
    # SGD at a high constant rate on a small set: validation loss bottoms out before the end
    cfg = tiny(tmp_path, optimizer="sgd", lr=0.5, momentum=0.9, steps=200, eval_every=10)
    data = lt.load_dataset("synthetic")

    def fresh():
        model = lt.build_model("mlp", data.input_shape, data.num_classes, hidden=[32, 16])
        lt.init_weights(model, "xavier_normal", seed=0)
        return model

    model = fresh()
    r = train(model, data, cfg)
    assert r.status == "ok" and 0 < r.early_stop_step < 200, "the early stop must fall inside the run"
    assert evaluate(model, *data.test)[1] == r.test_accuracy  # the final weights are back in the model
    at_stop = fresh()
    train(at_stop, data, cfg.replace(steps=r.early_stop_step), seed=0)  # a constant rate: the same first steps
    assert r.early_stop_test_accuracy == evaluate(at_stop, *data.test)[1]
    assert r.summary()["early_stop_test_accuracy"] == r.early_stop_test_accuracy


def test_results_and_report_name_both_accuracies(tmp_path):
    cfg = tiny(tmp_path, levels=1, controls=("random_mask",), steps=40)
    results = lt.run_imp(cfg)
    for e in results["levels"]:
        for r in [e, *e["controls"].values()]:
            assert 0 <= r["early_stop_test_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1
    assert _run_dir(cfg).load_results() == results  # the results schema's validator accepts the new field
    from lottery.reporting.tables import format_table

    table = format_table(results)  # the header names the accuracy the table shows, and how to pick the other
    assert "early-stop step" in table and "--metric early_stop" in table
    assert "weights at the final step" in format_table(results, metric="final")
