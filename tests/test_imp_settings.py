"""IMP's settings are the config's pruning section under both entry points: one defaults table, one validation, one
rewind grammar and one run-name hash for `lottery run` and `find_tickets`, and the same masks from the same
weights. find_tickets hashes its user model's fingerprints where `lottery run` hashes the data, model, init and
training sections; the IMP part of the two hashes (``Config.imp_settings``) is the same dict."""
import json
import shutil

import pytest
import torch

import lottery as lt
from lottery.config import from_dict, parse_rewind, run_hash
from lottery.data import load_dataset
from lottery.drivers.find_tickets import imp_config
from lottery.errors import ConfigError
from lottery.imp_engine import ImpSettings
from lottery.models import build_model
from lottery.storage.rundir import RunDir
from tests.ticket_helpers import Loop, make_model

IMP = {"levels": 2, "prune_fraction": 0.3, "controls": (), "seed": 3}


def _hashed(run_dir) -> dict:
    return json.loads((RunDir(run_dir).path / "config.json").read_text())["hashed"]


def test_the_rewind_grammar_is_read_in_one_place():
    assert [parse_rewind(r) for r in ("init", "lr", "step:0", "step:12")] == [None, None, 0, 12]
    for bad in ("step:", "step:-1", "init ", "sometime", 3):
        with pytest.raises(ConfigError, match="rewind must be init, lr or step:K"):
            parse_rewind(bad)
    assert ImpSettings.from_config(from_dict({"rewind": "step:7"})).rewind_step == 7
    assert from_dict({"rewind": "step:7"}).rewind_step() == 7


def test_find_tickets_validates_with_the_config():
    """The config's checks and messages; find_tickets' own function defaults (levels 5) are just values."""
    assert imp_config(levels=5).imp_settings() == {"levels": 5}
    assert imp_config(levels=15, controls=None).imp_settings() == {"controls": []}
    with pytest.raises(ConfigError, match="levels must be an integer >= 0"):
        imp_config(levels=-1)
    with pytest.raises(ConfigError, match="early_bird_epsilon and early_bird_window are early-bird settings"):
        imp_config(early_bird_window=3)


def test_find_tickets_run_names_are_pinned(tmp_path):
    """Changing one orphans every find_tickets run directory (as tests/test_imp.py pins `lottery run`'s)."""
    names = {
        "default": lt.find_tickets(make_model(), Loop(steps=2), out=tmp_path / "a", levels=5, progress=False),
        "one level": lt.find_tickets(make_model(), Loop(steps=2), out=tmp_path / "b", levels=1, progress=False),
        "settings": lt.find_tickets(make_model(), Loop(steps=2), out=tmp_path / "c", levels=1, prune_fraction=0.3,
                                    seed=3, controls=("random_mask",), progress=False),
    }
    assert {k: RunDir(r["run_dir"]).path.name for k, r in names.items()} == {
        "default": "Net-2bf91f2478", "one level": "Net-d4221b2b55", "settings": "Net-dd0036a3ee"}
    assert run_hash(_hashed(names["one level"]["run_dir"])) == "d4221b2b55"


def test_a_directory_named_by_the_earlier_defaults_still_resumes(tmp_path):
    """Before find_tickets hashed the config's pruning section it hashed against its own defaults (levels 5 was
    not in the hash): such a directory is found and resumed, and no second one is made."""
    first = lt.find_tickets(make_model(), Loop(steps=2), out=tmp_path, levels=5, progress=False)
    legacy = tmp_path / "Net-083fececf0"  # that version's name for these arguments
    shutil.move(first["run_dir"], legacy)
    stored = json.loads((legacy / "config.json").read_text())
    stored["hashed"] = {k: v for k, v in stored["hashed"].items() if k != "levels"}
    (legacy / "config.json").write_text(json.dumps(stored))

    def untouched(model, mask, run):
        raise AssertionError("a finished run was trained again")

    again = lt.find_tickets(make_model(), untouched, out=tmp_path, levels=5, progress=False)
    assert RunDir(again["run_dir"]).path == legacy and [p.name for p in tmp_path.iterdir()] == [legacy.name]
    assert again["levels"] == first["levels"]


def test_the_same_imp_settings_hash_the_same_and_give_the_same_masks(tmp_path):
    """`lottery run` trains; find_tickets, around the same model from the same init.pt, replays the weights each
    training of that run ended with: the IMP part of both hashes is one dict, and every level's mask is equal."""
    cfg = from_dict(dict(dataset="synthetic", model="mlp", model_options={"hidden": [16]}, steps=20, eval_every=10,
                         batch_size=32, device="cpu", progress=False, out=str(tmp_path / "run"), **IMP))
    results = lt.run_imp(cfg)
    run = RunDir(RunDir.path_for(cfg))
    data = load_dataset("synthetic")
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[16])

    def replay(model, mask, ticket):
        model.load_state_dict(run.load_state(f"level_{ticket.level:02d}/final.pt"))
        return {"test_accuracy": results["levels"][ticket.level]["test_accuracy"]}

    found = lt.find_tickets(model, replay, out=tmp_path / "ft", init=run.load_state("init.pt"), progress=False,
                            **IMP)
    ours = {k: v for k, v in _hashed(found["run_dir"]).items() if k not in ("architecture", "init")}
    assert ours == cfg.imp_settings() == {"levels": 2, "prune_fraction": 0.3, "controls": [], "seed": 3}
    assert cfg.imp_settings().items() <= cfg.hashed_settings().items()
    for level in (1, 2):
        theirs, mine = run.load_mask(level), RunDir(found["run_dir"]).load_mask(level)
        assert theirs.density < 1 and all(torch.equal(theirs[k], mine[k]) for k in theirs)
    assert [e["density"] for e in found["levels"]] == [e["density"] for e in results["levels"]]
