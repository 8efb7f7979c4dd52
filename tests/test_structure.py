"""Structures (unstructured, neuron, n:m): exact masks, their random controls, coupling, exhaustion, config."""
import pytest
import torch
from torch import nn

import lottery as lt
from lottery.cli import main
from lottery.config import Config, from_dict
from lottery.errors import ConfigError, LotteryError, StructureCheckError, StructureExhausted
from lottery.pruning import (STRUCTURES, check_structure, parse_structure, prune_structured,
                             random_structured_like)
from lottery.pruning.structure import check_layer_fractions, limit_note
from lottery.pruning.units import unit_groups

SPELLING = {"unstructured": "unstructured", "neuron": "neuron", "n:m": "2:4"}


def convnet_bn() -> nn.Module:
    """conv-bn-relu-pool twice, flatten, two Linear layers: channels feed a flattened Linear."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(12 * 4, 16), nn.ReLU(), nn.Linear(16, 4))


def models():
    torch.manual_seed(0)
    return [lt.build_model("lenet_300_100", (1, 8, 8), 10), convnet_bn()]


def units_kept(t: torch.Tensor) -> int:
    return int(t.reshape(t.shape[0], -1).any(1).sum())


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_every_structure_prunes_exactly_and_its_random_control_matches_per_layer_counts(name):
    for model in models():
        mask = lt.Mask.ones_like(model)
        for level in range(2):
            new = prune_structured(model, mask, 0.2, SPELLING[name], scope="layer")
            assert new.is_subset_of(mask) and new.num_kept < mask.num_kept
            check_structure(model, new, SPELLING[name])
            mask = new
        control = random_structured_like(model, mask, seed=3, structure=SPELLING[name])
        check_structure(model, control, SPELLING[name])
        assert control.layer_kept() == mask.layer_kept() and control != mask
        assert random_structured_like(model, mask, 3, SPELLING[name]) == control  # seeded


def test_neuron_drops_whole_rows_and_the_columns_that_read_them_never_the_classes():
    model = models()[0]  # 64-300-100-10
    mask = prune_structured(model, lt.Mask.ones_like(model), 0.2, "neuron", scope="layer")
    assert [units_kept(mask[k]) for k in mask] == [240, 80, 10]
    dropped = ~mask["fc1.weight"].any(1)
    assert not mask["fc2.weight"][:, dropped].any() and mask["fc2.weight"][mask["fc2.weight"].any(1)][:, ~dropped].all()
    assert mask["fc3.weight"].sum() == 10 * 80
    # the kept units are those of largest L2 norm
    norms = model.fc1.weight.detach().norm(dim=1)
    assert norms[~dropped].min() >= norms[dropped].max()


def test_neuron_l1_and_refill_are_other_masks():
    model = models()[0]
    ones = lt.Mask.ones_like(model)
    with torch.no_grad():
        model.fc1.weight[0] = 0.0
        model.fc1.weight[0, :2] = 10.0  # two large weights: the largest unit under either norm
    l2 = prune_structured(model, ones, 0.5, "neuron", scope="layer")
    l1 = prune_structured(model, ones, 0.5, "neuron", scope="layer", options={"norm": "l1"})
    refill = prune_structured(model, ones, 0.5, "neuron", scope="global", options={"refill": True})
    check_structure(model, refill, "neuron")
    assert l1 != l2 and refill != l2
    assert l1["fc1.weight"][0].all() and l2["fc1.weight"][0].all()


def test_residual_channels_are_dropped_together_with_their_batch_norms():
    model = lt.build_model("resnet20", (3, 8, 8), 10)
    groups = {g.key: g for g in unit_groups(model, list(lt.Mask.ones_like(model)))}
    stem = groups["conv1.weight"]
    assert {"layer1.0.conv2.weight", "layer1.2.conv2.weight"} <= set(stem.producers)
    assert "bn1" in stem.norms and "layer2.0.conv1.weight" in stem.consumers
    assert groups["fc.weight"].frozen  # the classes
    mask = prune_structured(model, lt.Mask.ones_like(model), 0.25, "neuron", scope="layer")
    rows = [mask[w].reshape(16, -1).any(1) for w in stem.producers]
    assert all(torch.equal(r, rows[0]) for r in rows) and int(rows[0].sum()) == 12


def test_nm_keeps_k_of_every_group_of_m_and_ends_below_n():
    model = models()[1]  # conv1's fan-in is 9: not a multiple of 4, so it stays dense
    mask = lt.Mask.ones_like(model)
    ks = []
    with pytest.raises(StructureExhausted, match="below 2:4"):
        for _ in range(5):
            mask = prune_structured(model, mask, 0.2, "2:4")
            ks.append(int(mask["4.weight"].reshape(12, -1, 4).sum(-1).unique()))
    assert ks == [3, 2]
    assert mask["0.weight"].all()
    w, m = model[9].weight.detach().abs().reshape(16, -1, 4), mask["9.weight"].reshape(16, -1, 4)
    assert (w.masked_fill(~m, float("inf")).amin(-1) >= w.masked_fill(m, -1).amax(-1)).all()  # the largest two


def test_the_check_refuses_masks_that_break_the_structure():
    model = models()[0]
    ones = lt.Mask.ones_like(model)
    holey = lt.prune_magnitude(model, ones, 0.2)
    with pytest.raises(StructureCheckError, match="whole units"):
        check_structure(model, holey, "neuron")
    with pytest.raises(StructureCheckError, match="same number in every group"):
        check_structure(model, holey, "2:4")
    check_structure(model, holey, "unstructured")


def test_untraceable_models_and_bad_settings_are_one_line():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(ConfigError, match="torch.fx can trace"):
        prune_structured(Branchy(), lt.Mask.ones_like(Branchy()), 0.2, "neuron")
    for bad, match in [("n:m", "needs numbers"), ("4:2", "1 <= N < M"), ("rows", "unknown structure")]:
        with pytest.raises(LotteryError, match=match):
            parse_structure(bad)
    with pytest.raises(ConfigError, match="no option 'refil'"):
        parse_structure("neuron", {"refil": True})
    with pytest.raises(ConfigError, match="norm must be l1 or l2"):
        parse_structure("neuron", {"norm": "l3"})
    with pytest.raises(ConfigError, match="prunes by magnitude"):
        Config(structure="neuron", strategy="snip").replace()


@pytest.mark.parametrize("argv, needle", [
    (["run", "--structure", "2:1"], "1 <= N < M"),
    (["run", "--structure", "neuron", "--structure-options", "width=3"], "no option 'width'"),
    (["run", "--structure", "2:4", "--min-kept-per-layer", "2"], "min_kept_per_layer to 0"),
])
def test_bad_structure_flags_are_one_line_exit_2(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_only_a_non_default_structure_enters_the_hash():
    assert Config(structure="unstructured").hash() == Config().hash()
    assert "structure" not in Config().hashed_settings()
    assert len({Config().hash(), Config(structure="neuron").hash(), Config(structure="2:4").hash(),
                Config(structure="neuron", structure_options={"refill": True}).hash()}) == 4


def test_structures_are_listed_and_public(capsys):
    assert main(["list"]) == 0
    assert "structures (N:M, e.g. 2:4): n:m, neuron, unstructured" in capsys.readouterr().out
    assert lt.prune_structured is prune_structured and lt.STRUCTURES is STRUCTURES


def test_default_structure_options_are_one_run_and_runs_without_options_keep_their_hash():
    plain = Config(structure="neuron")
    assert plain.hashed_settings() == {**Config().hashed_settings(), "structure": "neuron"}  # as it always was
    spellings = [{}, {"norm": "l2"}, {"norm": "l2", "refill": False}, {"refill": False}]
    hashes = {from_dict({"structure": "neuron", "structure_options": o}).hash() for o in spellings}
    assert hashes == {plain.hash()}
    l1 = from_dict({"structure": "neuron", "structure_options": {"norm": "l1", "refill": False}})
    assert l1.structure_options == {"norm": "l1"} and l1.hash() != plain.hash()
    assert main(["run", "--structure", "neuron", "--structure-options", "norm=l3", "--levels", "0"]) == 2


def test_a_layer_fraction_that_cannot_act_under_a_structure_is_refused(tmp_path):
    from tests.engine_helpers import tiny

    frozen = tiny(tmp_path, structure="neuron", scope="layer", layer_fractions={"fc3.weight": 0.9}, levels=1)
    with pytest.raises(ConfigError, match=r"layer_fractions\['fc3.weight'\] cannot act under structure neuron.*"
                                          r"model's outputs") as e:
        lt.run_imp(frozen)
    assert "\n" not in str(e.value) and not list(tmp_path.rglob("init.pt"))
    model = models()[1]
    with pytest.raises(ConfigError, match=r"'0.weight'\] cannot act under structure 2:4: its fan-in"):
        check_layer_fractions(model, "2:4", {}, {"0.weight": 0.5})
    check_layer_fractions(model, "2:4", {}, {"4.weight": 0.5})  # fan-in 72 splits into groups of 4
    check_layer_fractions(model, "neuron", {}, {"4.weight": 0.5})


def test_an_nm_level_past_the_limit_stops_at_it_and_says_so():
    model = models()[1]
    ones = lt.Mask.ones_like(model)
    mask = prune_structured(model, ones, 0.75, "2:4")  # 4 -> 1 of every 4 wanted: 2 is the limit
    assert int(mask["4.weight"].reshape(12, -1, 4).sum(-1).unique()) == 2
    note = limit_note(ones, 0.75, "2:4")
    assert "kept 2 of every 4 weights, the limit of 2:4" in note and "would keep 1 of 4" in note
    assert limit_note(ones, 0.5, "2:4") is None and limit_note(ones, 0.9, "neuron") is None
    with pytest.raises(StructureExhausted, match="below 2:4"):
        prune_structured(model, mask, 0.75, "2:4")


def test_run_imp_nm_past_the_limit_trains_one_level_at_it_then_stops(tmp_path):
    from tests.engine_helpers import tiny

    results = lt.run_imp(tiny(tmp_path, structure="2:4", prune_fraction=0.75, levels=3, controls=(), steps=20))
    assert [round(e["density"], 3) for e in results["levels"]] == [1.0, 0.5]
    assert "limit of 2:4" in results["levels"][1]["limited"] and "limited" not in results["levels"][0]
    assert results["status"] == "exhausted" and "below 2:4" in results["exhausted"]
