"""Pruning at init: exact counts for every strategy and scope, the scores that define SNIP / GraSP / SynFlow, layer
collapse, and the prune-at-init experiment with its ablations."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lottery as lt
from lottery.errors import ConfigError
from lottery.cli import main
from lottery.pruning import PRUNERS, collapsed_layers
from lottery.drivers.prune_at_init import format_table, run_prune_at_init
from lottery.pruning import grasp_scores, kept_counts, prune_iteratively, snip_scores, synflow_scores

from tests.engine_helpers import tiny


def _mlp(seed=0, widths=(12, 16, 8, 3)):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b), nn.ReLU()] if i < len(widths) - 2 else [nn.Linear(a, b)]
    return nn.Sequential(*layers)


def _data(n=64, d=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_strategy_keeps_exact_counts(name, scope):
    model, data = _mlp(), _data()
    full = lt.Mask.ones_like(model)
    once = PRUNERS.get(name)(model, full, 0.9, scope=scope, seed=3, data=data)
    expected = kept_counts(full, 0.9, scope)
    assert {g: sum(once.layer_kept()[k] for k in g) for g in expected} == expected
    # a second step ranks only the survivors, again exactly, and nests inside the first mask
    twice = PRUNERS.get(name)(model, once, 0.5, scope=scope, seed=4, data=data)
    assert twice.num_kept == sum(kept_counts(once, 0.5, scope).values()) and twice.is_subset_of(once)


def test_layer_fractions_are_honoured_by_the_iterative_pruner():
    model = _mlp()
    full = lt.Mask.ones_like(model)
    out = PRUNERS["synflow"](model, full, 0.8, scope="global", layer_fractions={"4.weight": 0.1}, data=None)
    assert out.layer_kept()["4.weight"] == 24 - round(0.1 * 24)
    assert out["0.weight"].sum() + out["2.weight"].sum() == 320 - round(0.8 * 320)


def test_snip_scores_are_abs_grad_times_weight_on_a_hand_checked_case():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([0])
    # by hand: z = W x = (-3, 6.5); dL/dz = softmax(z) - onehot(y); dL/dW = dL/dz ⊗ x
    p = torch.softmax(torch.tensor([-3.0, 6.5]), 0)
    dz = p - torch.tensor([1.0, 0.0])
    grad = torch.outer(dz, torch.tensor([1.0, 2.0]))
    scores = snip_scores(model, lt.Mask.ones_like(model), (x, y))
    torch.testing.assert_close(scores["weight"], (grad * model.weight).abs().detach())
    assert model.weight.grad is None  # scoring never touches the model


def test_grasp_score_is_minus_w_times_hessian_gradient_product():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2, bias=False))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    T = 2.0
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    flat = torch.cat([w1.reshape(-1), w2.reshape(-1)])

    def loss(theta):
        a, b = theta[:12].view(4, 3), theta[12:].view(2, 4)
        return F.cross_entropy(torch.tanh(x @ a.T) @ b.T / T, y)

    H = torch.autograd.functional.hessian(loss, flat)  # the full Hessian, an independent route
    g = torch.func.grad(loss)(flat)
    expected = -flat * (H @ g)
    got = grasp_scores(model, lt.Mask.ones_like(model), (x, y), temperature=T, batch_size=8)
    torch.testing.assert_close(torch.cat([got["0.weight"].reshape(-1), got["2.weight"].reshape(-1)]), expected,
                               rtol=1e-4, atol=1e-7)
    # GraSP removes the weights with the highest score
    mask = PRUNERS["grasp"](model, lt.Mask.ones_like(model), 0.25, data=(x, y))
    s = grasp_scores(model, lt.Mask.ones_like(model), (x, y), seed=0)
    kept = torch.cat([s[k][mask[k]] for k in mask])
    removed = torch.cat([s[k][~mask[k]] for k in mask])
    assert removed.min() >= kept.max()


def test_synflow_scores_are_the_path_sums_of_a_two_layer_linear_net():
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [-1.0, 1.0, 3.0]]))
        model[2].weight.copy_(torch.tensor([[2.0, -0.5]]))
    s = synflow_scores(model, lt.Mask.ones_like(model))  # data-free: shape from the first Linear
    w1, w2 = model[0].weight.detach().double().abs(), model[2].weight.detach().double().abs()
    torch.testing.assert_close(s["0.weight"], w1 * w2.T)  # |w1_ij| * |w2_i| * input 1
    torch.testing.assert_close(s["2.weight"], w2 * w1.sum(1))
    assert s["0.weight"].dtype == torch.float64 and model[0].weight.dtype == torch.float32


def test_synflow_runs_without_data_and_avoids_the_collapse_snip_suffers():
    torch.manual_seed(0)
    # a wide first layer (40 000 weights) and a narrow one: at 99.8 % sparsity global SNIP empties the wide layer
    model = nn.Sequential(nn.Linear(100, 400), nn.ReLU(), nn.Linear(400, 10), nn.ReLU(), nn.Linear(10, 4))
    x, y = torch.randn(256, 100), torch.randint(0, 4, (256,))
    full = lt.Mask.ones_like(model)
    snip = PRUNERS["snip"](model, full, 0.998, data=(x, y))
    synflow = PRUNERS["synflow"](model, full, 0.998, data=None)
    assert collapsed_layers(snip) == ["0.weight"]
    assert collapsed_layers(synflow) == [] and synflow.num_kept == snip.num_kept


def test_synflow_handles_batchnorm_and_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(16, 1, 8, 8)
    mask = PRUNERS["synflow"](model, lt.Mask.ones_like(model), 0.9, data=(x, torch.zeros(16, dtype=torch.long)))
    assert mask.num_kept == 36 + 432 - round(0.9 * 468)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="input shape"):
        PRUNERS["synflow"](model, lt.Mask.ones_like(model), 0.9, data=None)


def test_data_strategies_explain_missing_data():
    with pytest.raises(ValueError, match="pass data"):
        PRUNERS["snip"](_mlp(), lt.Mask.ones_like(_mlp()), 0.5)


def test_iterative_pruning_with_one_round_equals_one_shot():
    model, data = _mlp(), _data()
    full = lt.Mask.ones_like(model)
    scores = snip_scores(model, full, data)
    one = prune_iteratively(lambda m: scores, full, 0.7, "layer", rounds=1)
    assert one == lt.prune_by_scores(scores, full, 0.7, "layer")


def test_collapsed_layers():
    mask = lt.Mask({"a": torch.zeros(3, dtype=torch.bool), "b": torch.tensor([True, False])})
    assert collapsed_layers(mask) == ["a"]


def test_prune_at_init_experiment_trains_ablations_and_resumes(tmp_path):
    cfg = tiny(tmp_path)
    results = run_prune_at_init(cfg, ["snip", "synflow"], [0.2])
    assert results["status"] == "complete" and results["dense"]["density"] == 1.0
    assert [(e["strategy"], e["target_density"]) for e in results["entries"]] == [("snip", 0.2), ("synflow", 0.2)]
    for e in results["entries"]:
        assert set(e["controls"]) == {"shuffled", "reinit"} and e["collapsed_layers"] == []
        assert abs(e["density"] - 0.2) < 1e-3 and e["status"] == "ok"
    run = tmp_path / "runs" / cfg.run_name()
    stored = json.loads((run / "prune_at_init.json").read_text())
    again = run_prune_at_init(cfg, ["snip", "synflow"], [0.2])  # every entry is finished: nothing retrains
    assert again["entries"] == stored["entries"]
    table = format_table(again)
    assert "shuffled" in table and "synflow" in table and "dense" in table


def test_shuffled_ablation_keeps_per_layer_counts():
    model = _mlp()
    mask = PRUNERS["snip"](model, lt.Mask.ones_like(model), 0.9, data=_data())
    shuffled = lt.random_mask_like(mask, seed=1)
    assert shuffled.layer_kept() == mask.layer_kept() and shuffled != mask


def test_cli_prune_at_init(tmp_path, capsys):
    argv = ["prune-at-init", "--strategies", "grasp,random", "--densities", "0.3", "--ablations", "shuffled",
            "--dataset", "synthetic", "--model-options", "hidden=[16]", "--steps", "30", "--eval-every", "10",
            "--batch-size", "32", "--no-progress", "--device", "cpu", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "grasp" in out and "random" in out and "shuffled %" in out
    assert main(argv[:2] + ["nope"] + argv[3:]) == 2


@pytest.mark.parametrize("strategy", ["snip", "synflow"])
def test_at_init_strategies_drive_imp_too(tmp_path, strategy):
    results = lt.run_imp(tiny(tmp_path, strategy=strategy, levels=2, controls=()))
    assert [round(e["density"], 2) for e in results["levels"]] == [1.0, 0.8, 0.64]


def test_prune_at_init_with_pack_equals_one_at_a_time(tmp_path, monkeypatch):
    """--pack 3: the 2 strategies x 2 densities x (subnetwork + 2 ablations) = 12 runs train in 4 fused passes of 3
    (one shared batch per step); statuses, masks and early-stop steps are those of the runs one at a time,
    accuracies within one test sample; a resumed packed run retrains nothing."""
    import lottery.fused as fused

    alone = run_prune_at_init(tiny(tmp_path / "a"), ["snip", "random"], [0.2, 0.5])
    passes = []
    real = fused.train_fused
    monkeypatch.setattr(fused, "train_fused", lambda models, *a, **k: passes.append(len(models)) or real(models, *a, **k))
    cfg = tiny(tmp_path / "b").replace(pack=3)
    packed = run_prune_at_init(cfg, ["snip", "random"], [0.2, 0.5])
    assert passes == [3, 3, 3, 3]
    n_test = len(lt.load_dataset("synthetic").test[1])
    assert [e["strategy"] for e in packed["entries"]] == ["snip", "snip", "random", "random"]
    for a, b in zip(alone["entries"], packed["entries"]):
        assert (a["strategy"], a["target_density"], a["num_kept"]) == (b["strategy"], b["target_density"], b["num_kept"])
        for x, y in [(a, b)] + [(a["controls"][c], b["controls"][c]) for c in ("shuffled", "reinit")]:
            assert (x["status"], x["early_stop_step"]) == (y["status"], y["early_stop_step"])
            assert abs(x["test_accuracy"] - y["test_accuracy"]) <= 1 / n_test + 1e-12
    passes.clear()
    assert run_prune_at_init(cfg, ["snip", "random"], [0.2, 0.5])["entries"] == packed["entries"] and passes == []
