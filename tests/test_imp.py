"""The IMP driver: rewinding verified at every level, exact densities, controls, determinism, resume."""
import json
import os

import pytest
import torch

import lottery as lt
import lottery.session as session
from lottery.errors import ConfigError
from lottery.storage.rundir import RunDir
from tests.engine_helpers import strip_times, tiny


@pytest.fixture
def spy(monkeypatch):
    """Record the model's weights and the mask at the start of every training run."""
    calls = []
    real = session.train  # every driver trains through the session

    def wrapped(model, data, cfg, mask=None, **kw):
        calls.append({"state": lt.snapshot(model), "mask": mask.clone()})
        return real(model, data, cfg, mask, **kw)

    monkeypatch.setattr(session, "train", wrapped)
    return calls


def _run_dir(cfg):
    return RunDir(os.path.join(cfg.out, cfg.run_name()))


def test_rewind_to_init_is_bit_exact_at_every_level(tmp_path, spy):
    cfg = tiny(tmp_path, controls=())
    results = lt.run_imp(cfg)
    run = _run_dir(cfg)
    init = run.load_state("init.pt")
    assert len(spy) == cfg.levels + 1 and results["status"] == "complete"
    for level, call in enumerate(spy):
        assert call["mask"] == run.load_mask(level)
        for name, value in call["state"].items():
            expected = torch.where(call["mask"][name], init[name], 0.0) if name in call["mask"] else init[name]
            assert torch.equal(value, expected), (level, name)
            if name in call["mask"]:
                assert torch.count_nonzero(value[~call["mask"][name]]) == 0


def test_global_densities_follow_0_8_power_and_masks_nest(tmp_path):
    cfg = tiny(tmp_path, controls=(), levels=4)
    results = lt.run_imp(cfg)
    run = _run_dir(cfg)
    total = run.load_mask(0).num_total
    kept = total
    for e in results["levels"]:
        assert e["num_kept"] == kept
        kept -= round(0.2 * kept)
    assert [round(e["density"], 2) for e in results["levels"]] == [1.0, 0.8, 0.64, 0.51, 0.41]
    masks = [run.load_mask(level) for level in range(5)]
    assert all(masks[i + 1].is_subset_of(masks[i]) for i in range(4))


def test_layer_scope_with_output_layer_override(tmp_path):
    cfg = tiny(tmp_path, controls=(), levels=2, scope="layer", layer_fractions={"fc3.weight": 0.1})
    lt.run_imp(cfg)
    run = _run_dir(cfg)
    for level in (1, 2):
        before, after = run.load_mask(level - 1).layer_kept(), run.load_mask(level).layer_kept()
        for name, n in before.items():
            rate = 0.1 if name == "fc3.weight" else 0.2
            assert after[name] == n - round(rate * n), (level, name)


def test_controls_have_the_ticket_densities(tmp_path, spy):
    cfg = tiny(tmp_path, levels=2)
    results = lt.run_imp(cfg)
    init = _run_dir(cfg).load_state("init.pt")
    # order per level >= 1: ticket, reinit, random_mask
    for level in (1, 2):
        ticket, reinit, random = spy[3 * level - 2: 3 * level + 1]
        assert reinit["mask"] == ticket["mask"]
        assert not torch.equal(reinit["state"]["fc1.weight"], ticket["state"]["fc1.weight"])  # fresh draw
        assert random["mask"].layer_kept() == ticket["mask"].layer_kept()
        assert random["mask"] != ticket["mask"]
        m = random["mask"]["fc1.weight"]
        assert torch.equal(random["state"]["fc1.weight"], torch.where(m, init["fc1.weight"], 0.0))  # same init
        assert set(results["levels"][level]["controls"]) == {"reinit", "random_mask"}


def test_rewind_to_step_k_and_lr_rewinding(tmp_path, spy):
    cfg = tiny(tmp_path, controls=(), levels=1, rewind="step:7")
    lt.run_imp(cfg)
    run = _run_dir(cfg)
    rewind_state = run.load_state("rewind.pt")
    m = spy[1]["mask"]["fc1.weight"]
    assert torch.equal(spy[1]["state"]["fc1.weight"], torch.where(m, rewind_state["fc1.weight"], 0.0))
    assert not torch.equal(rewind_state["fc1.weight"], run.load_state("init.pt")["fc1.weight"])
    spy.clear()
    cfg = tiny(tmp_path, controls=(), levels=1, rewind="lr")
    lt.run_imp(cfg)
    final0 = _run_dir(cfg).load_state("level_00/final.pt")
    m = spy[1]["mask"]["fc1.weight"]
    assert torch.equal(spy[1]["state"]["fc1.weight"], torch.where(m, final0["fc1.weight"], 0.0))


def test_same_seed_same_masks_and_accuracies(tmp_path):
    a = lt.run_imp(tiny(tmp_path / "a", levels=2))
    b = lt.run_imp(tiny(tmp_path / "b", levels=2))
    assert strip_times(a) == strip_times(b)
    c = lt.run_imp(tiny(tmp_path / "c", levels=2, seed=1))
    assert strip_times(c)["levels"] != strip_times(a)["levels"]


def test_finished_levels_are_skipped_on_restart(tmp_path, spy):
    cfg = tiny(tmp_path, levels=2)
    first = lt.run_imp(cfg)
    n = len(spy)
    again = lt.run_imp(cfg)
    assert len(spy) == n and again == first
    more = lt.run_imp(cfg.replace(levels=3))  # more levels = other hash = a new directory
    assert len(more["levels"]) == 4


def test_divergence_is_recorded(tmp_path):
    results = lt.run_imp(tiny(tmp_path, optimizer="sgd", lr=1e8, momentum=0.0))
    assert results["status"] == "diverged"
    assert results["levels"][0]["status"] == "diverged" and len(results["levels"]) == 1


def test_same_hash_different_stored_config_is_refused(tmp_path):
    cfg = tiny(tmp_path, levels=1, controls=())
    lt.run_imp(cfg)
    path = os.path.join(cfg.out, cfg.run_name(), "config.json")
    with open(path) as f:
        stored = json.load(f)
    stored["hashed"]["lr"] = 0.5
    with open(path, "w") as f:
        json.dump(stored, f)
    with pytest.raises(ConfigError, match="different experiment"):
        lt.run_imp(cfg)


def test_hash_covers_only_non_default_result_settings(tmp_path):
    base = lt.Config()
    # defaults hash to {"xavier_gain": 1} (0.2 made xavier_* Glorot's gain 1); pinned so it cannot drift
    assert base.hash() == "d7d15db9c2"
    assert base.replace(init="kaiming_normal").hash() != base.replace(init="kaiming_normal", lr=1e-3).hash()
    assert base.replace(init_options={"gain": "auto"}).hash() != base.hash()  # the pre-0.2 Xavier is another run
    assert base.replace(lr=1e-3).hash() == "bbc4a2c616"  # pinned: changing it orphans every existing run directory
    assert base.replace(device="cpu", out="elsewhere", progress=False).hash() == base.hash()
    assert base.replace(lr=1e-3).hash() != base.hash()


