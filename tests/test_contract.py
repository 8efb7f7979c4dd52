"""The run contract is written once (lottery/contract.py) and applied by the engine to both trainers: init.pt is
drawn once and then only checked, and every recorded run is checked to have kept its pruned weights at zero."""
import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import lottery as lt
from lottery.errors import CorruptFileError, RewindCheckError
from lottery.storage.rundir import RunDir
from tests.engine_helpers import tiny

ROOT = Path(__file__).resolve().parents[1]


def _calls(name: str) -> list[str]:
    """Modules of lottery/ that call or define ``name``."""
    out = set()
    for path in (ROOT / "lottery").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == name:
                out.add(f"def {path.relative_to(ROOT)}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "save_state" \
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == name:
                out.add(f"write {path.relative_to(ROOT)}")
    return sorted(out)


def test_one_writer_of_init_pt_and_one_pruned_zero_check():
    assert _calls("init.pt") == ["write lottery/contract.py"]
    assert _calls("check_pruned_zero") == ["def lottery/contract.py"]
    assert _calls("load_init") == ["def lottery/contract.py"]


def _leak_at_level_one(monkeypatch):
    import lottery.session as session_module

    real = session_module.train

    def leaky(model, data, cfg, mask=None, **kw):
        result = real(model, data, cfg, mask, **kw)
        if mask is not None and mask.density < 1:
            with torch.no_grad():
                model.fc1.weight[~mask["fc1.weight"]] = 0.5
        return result

    monkeypatch.setattr(session_module, "train", leaky)


def test_the_engine_checks_what_the_built_in_trainer_left(tmp_path, monkeypatch):
    """``Experiment.train`` no longer checks zeros itself: the engine does, before anything is recorded."""
    _leak_at_level_one(monkeypatch)
    cfg = tiny(tmp_path, levels=1, controls=())
    with pytest.raises(RewindCheckError, match=r"^level 1 ticket: a pruned weight became non-zero during training"):
        lt.run_imp(cfg)
    assert [e["level"] for e in RunDir.for_config(cfg).load_results()["levels"]] == [0]


def test_the_engine_checks_runs_trained_ahead_in_fused_passes(tmp_path, monkeypatch):
    import lottery.fused as fused_module

    real = fused_module._train_stacked

    def leaky(models, data, cfg, masks, *rest):
        results = real(models, data, cfg, masks, *rest)
        with torch.no_grad():
            for model, mask in zip(models, masks):
                model.fc1.weight[~mask["fc1.weight"]] = 0.5
        return results

    monkeypatch.setattr(fused_module, "_train_stacked", leaky)
    cfg = tiny(tmp_path, levels=1, pack=3)
    with pytest.raises(RewindCheckError, match=r"^level 1 ticket: a pruned weight became non-zero"):
        lt.run_imp(cfg)


@pytest.mark.parametrize("entry", ["run", "find_tickets"])
def test_a_damaged_init_pt_reads_the_same_under_both_entry_points(tmp_path, entry):
    if entry == "run":
        cfg = tiny(tmp_path, levels=0, controls=())
        lt.run_imp(cfg)
        path = RunDir.for_config(cfg).path / "init.pt"
        again = lambda: lt.run_imp(cfg)  # noqa: E731
    else:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        found = lt.find_tickets(model, lambda m, mask, run: {"test_accuracy": 0.5}, out=str(tmp_path), levels=0,
                                progress=False)
        path = Path(found["run_dir"]) / "init.pt"
        again = lambda: lt.find_tickets(model, lambda m, mask, run: {"test_accuracy": 0.5},  # noqa: E731
                                        out=str(tmp_path), levels=0, progress=False)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match=r"init.pt \(the init every level rewinds to\) is damaged or not this "
                                               r"model's: .*restore init.pt from a copy"):
        again()
    path.unlink()
    with pytest.raises(CorruptFileError, match="is missing but levels are finished"):
        again()
