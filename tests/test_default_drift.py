"""Run names say what ran, and a changed default never resumes an old run under new settings silently."""
import json
import re

import pytest

from lottery.cli import main
from lottery.config import from_dict
from lottery.errors import ConfigError
from lottery.storage.rundir import RunDir

from tests.engine_helpers import tiny


def test_default_name_is_model_and_dataset_and_a_given_name_wins():
    cfg = from_dict({"model": "lenet_300_100", "dataset": "fashion_mnist"})
    assert cfg.run_name() == f"lenet_300_100-fashion_mnist-{cfg.hash()}"
    assert from_dict({}).run_name() == f"mlp-mnist1d-{from_dict({}).hash()}"  # the `lottery run` default
    named = from_dict({"model": "lenet_300_100", "dataset": "fashion_mnist", "name": "mine"})
    assert named.run_name() == f"mine-{cfg.hash()}"  # the name is not part of the hash
    assert from_dict({"name": "default"}).run_name() == f"default-{from_dict({}).hash()}"  # older runs' directories


def _stored(run: RunDir) -> dict:
    return json.loads((run.path / "config.json").read_text())


def _as_if_made_under_other_defaults(run: RunDir, **old) -> None:
    """config.json as an older version would have written it: same hashed (non-default) settings, but the
    full config records other values for settings that were defaults then."""
    stored = _stored(run)
    stored["config"].update(old)
    (run.path / "config.json").write_text(json.dumps(stored))


def test_resume_with_unchanged_defaults_is_allowed(tmp_path):
    cfg = tiny(tmp_path)
    run = RunDir.for_config(cfg)
    assert _stored(run)["config"] == cfg.to_dict()  # the full config is recorded, not only the hashed part
    assert RunDir.for_config(cfg.replace(device="cpu", progress=True)).path == run.path  # unhashed: no drift


@pytest.mark.parametrize("setting, old", [("momentum", 0.5), ("controls", ["reinit"]), ("warmup_steps", 5)])
def test_a_changed_default_is_refused_naming_the_setting(tmp_path, setting, old):
    cfg = tiny(tmp_path)
    run = RunDir.for_config(cfg)
    _as_if_made_under_other_defaults(run, **{setting: old})
    before = sorted(p.name for p in run.path.iterdir())
    with pytest.raises(ConfigError, match=re.escape(f"made with {setting} = {old!r}") + ".*a default changed"):
        RunDir.for_config(cfg)
    assert sorted(p.name for p in run.path.iterdir()) == before


def test_a_setting_the_old_run_predates_is_not_drift(tmp_path):
    cfg = tiny(tmp_path)
    run = RunDir.for_config(cfg)
    stored = _stored(run)
    del stored["config"]["fused"]  # an option added after the run was made (default: no change in results)
    (run.path / "config.json").write_text(json.dumps(stored))
    assert RunDir.for_config(cfg).path == run.path


def test_cli_refuses_a_drifted_run_with_one_line(tmp_path, capsys):
    argv = ["run", "--dataset", "synthetic", "--model-options", "hidden=[16]", "--steps", "20", "--levels", "0",
            "--controls", "none", "--no-progress", "--device", "cpu", "--out", str(tmp_path)]
    assert main(argv) == 0
    run = RunDir(next(tmp_path.iterdir()))
    assert run.path.name.startswith("mlp-synthetic-")
    results = (run.path / "results.json").read_bytes()
    _as_if_made_under_other_defaults(run, weight_decay=0.01)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weight_decay = 0.01" in err and "a default changed" in err, err
    assert (run.path / "results.json").read_bytes() == results
