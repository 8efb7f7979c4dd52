"""Supermasks: each criterion keeps what it should on hand-made init/final tensors, signed constants, and the
run-directory entry point."""
import json
import types

import pytest
import torch

import lottery as lt
from lottery.drivers.supermask import (CRITERIA, evaluate_supermasks, format_table, masked_untrained, supermask,
                                       supermask_run)
from lottery.cli import main
from tests.engine_helpers import tiny

W_I = {"w": torch.tensor([[0.1, -0.5, 0.3, -0.2]])}
W_F = {"w": torch.tensor([[0.4, 0.6, -0.1, -0.9]])}
# |wf| = .4 .6 .1 .9; |wi| = .1 .5 .3 .2; |wf|-|wi| = .3 .1 -.2 .7; |wf-wi| = .3 1.1 .4 .7; signs agree at 0 and 3


def _kept(criterion, density):
    return supermask(W_I, W_F, density, criterion)["w"][0].nonzero().squeeze(1).tolist()


@pytest.mark.parametrize("criterion, density, expected", [
    ("large_final", 0.5, [1, 3]),
    ("large_init", 0.5, [1, 2]),
    ("magnitude_increase", 0.5, [0, 3]),
    ("movement", 0.5, [1, 3]),
    ("large_final_same_sign", 0.5, [0, 3]),
    ("large_init_same_sign", 0.5, [0, 3]),
    ("large_final_same_sign", 0.25, [3]),
    ("large_init_same_sign", 0.25, [3]),
    ("movement_same_sign", 0.25, [3]),
    ("magnitude_increase_same_sign", 0.25, [3]),
    ("large_final_same_sign", 0.75, [0, 1, 3]),  # only two agree in sign: the third is the best of the rest
    ("large_init_same_sign", 0.75, [0, 1, 3]),
])
def test_criteria_select_what_they_should(criterion, density, expected):
    assert _kept(criterion, density) == expected


def test_every_criterion_keeps_an_exact_count_and_random_is_seeded():
    init = {"a.weight": torch.randn(20, 10), "b.weight": torch.randn(5, 20)}
    final = {k: v + torch.randn_like(v) for k, v in init.items()}
    for name in CRITERIA:
        m = supermask(init, final, 0.3, name)
        assert m.layer_kept() == {"a.weight": 60, "b.weight": 30}
    assert supermask(init, final, 0.3, "random", seed=1) == supermask(init, final, 0.3, "random", seed=1)
    assert supermask(init, final, 0.3, "random", seed=1) != supermask(init, final, 0.3, "random", seed=2)


def test_signed_constant_sets_sign_times_layer_std():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    mask = lt.Mask({"weight": torch.rand(4, 6) > 0.5})
    masked_untrained(model, init, mask, "signed_constant")
    w = model.weight.detach()
    expected = torch.where(mask["weight"], torch.sign(init["weight"]) * init["weight"].std(), torch.zeros(()))
    torch.testing.assert_close(w, expected)
    assert torch.equal(model.bias.detach(), init["bias"])  # biases keep their init
    masked_untrained(model, init, mask, "init")
    assert torch.equal(model.weight.detach(), torch.where(mask["weight"], init["weight"], torch.zeros(())))


def test_supermask_run_and_cli(tmp_path, capsys):
    cfg = tiny(tmp_path, levels=0, controls=())
    lt.run_imp(cfg)
    run = tmp_path / "runs" / cfg.run_name()
    results = supermask_run(run, densities=[0.5, 0.1], criteria=["large_final_same_sign", "random"])
    assert [(r["criterion"], r["target_density"]) for r in results["rows"]] == [
        ("large_final_same_sign", 0.5), ("large_final_same_sign", 0.1), ("random", 0.5), ("random", 0.1)]
    assert json.loads((run / "supermask.json").read_text()) == json.loads(json.dumps(results))
    assert "signed const" in format_table(results)
    assert main(["supermask", str(run), "--densities", "0.2", "--criteria", "movement"]) == 0
    out, err = capsys.readouterr()
    assert "movement" in out and "supermasks: " in err  # the table, and a progress bar
    assert main(["supermask", str(run), "--densities", "0.2", "--criteria", "movement", "--no-progress"]) == 0
    assert "supermasks: " not in capsys.readouterr().err


def test_masked_untrained_accuracy_on_a_constructed_case():
    """A 2-input, 2-class linear net whose logits are the columns of W: input e_j is right when W[j, j] is the
    largest entry of column j. large_final keeps the diagonal (the largest |w_final|), and the untrained net with
    its init values there classifies everything; large_init keeps row 0, which gets class 1 wrong."""
    model = torch.nn.Linear(2, 2, bias=False)
    init = {"weight": torch.tensor([[0.5, 0.4], [0.3, 0.2]])}  # unmasked: e_1 -> 0.4 > 0.2, wrong
    final = {"weight": torch.tensor([[0.9, 0.1], [-0.1, 0.8]])}
    x = torch.eye(2).repeat(5, 1)
    data = types.SimpleNamespace(test=(x, torch.tensor([0, 1]).repeat(5)))
    rows = evaluate_supermasks(model, init, final, data, densities=[0.5], criteria=["large_final", "large_init"])
    acc = {r["criterion"]: (r["init"]["test_accuracy"], r["signed_constant"]["test_accuracy"]) for r in rows}
    assert acc == {"large_final": (1.0, 1.0), "large_init": (0.5, 0.5)}
    assert supermask(init, final, 0.5, "large_final")["weight"].tolist() == [[True, False], [False, True]]
