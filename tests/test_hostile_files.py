"""Hostile and damaged files in a run directory: nothing executes, only the damaged level is recomputed, and what
cannot be recomputed (init.pt, config.json, results.json) stops the run with one line naming the file.

Each test copies one finished reference run, plants or damages a file, and resumes. A planted pickle's payload
creates a marker file when unpickled; ``test_the_payload_is_live`` proves it does, so every "marker absent" below
fails if safe loading (``weights_only=True``, ``allow_pickle=False``) is removed.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import lottery as lt
from lottery.cli import build_parser, config_from_args, main
from lottery.errors import CorruptFileError
from tests.engine_helpers import strip_times

ARGS = ["--dataset", "synthetic", "--model", "mlp", "--model-options", "hidden=[16]", "--steps", "30",
        "--eval-every", "10", "--batch-size", "32", "--levels", "3", "--lr", "5e-3", "--rewind", "step:5",
        "--controls", "none", "--device", "cpu", "--no-progress", "--name", "h"]


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears iff the pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _cfg(out: Path, *extra: str):
    return config_from_args(build_parser().parse_args(["run", *ARGS, *extra, "--out", str(out)]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    results = lt.run_imp(_cfg(out))
    assert results["status"] == "complete"
    return out, strip_times(results)


@pytest.fixture
def run(tmp_path, reference):
    """A copy of the finished reference run (mtimes kept), and its results for comparison."""
    src, ref = reference
    out = tmp_path / "runs"
    shutil.copytree(src, out)
    return out, out / _cfg(out).run_name(), ref


def _files(run_dir: Path, skip: tuple = ()) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in ("results.json", ".lock") and not any(s in str(p) for s in skip)}


def _plant_torch_pickle(path: Path, marker: Path) -> None:
    torch.save({"fc1.weight": Payload(marker)}, path)


def _plant_raw_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(marker)))


def _plant_npz_object_array(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        np.savez(f, header=np.array([Payload(marker)], dtype=object), bits_0=np.zeros(4, np.uint8))


def _truncate(path: Path, marker: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path, marker: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path, marker: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


def _wrong_shapes(path: Path, marker: Path) -> None:
    torch.save({k: torch.zeros(3) for k in torch.load(path, weights_only=True)}, path)


def _other_level_mask(path: Path, marker: Path) -> None:  # a valid mask file, but not this level's
    shutil.copy(path.parent.parent / "level_03" / "mask.npz", path)


def test_the_payload_is_live(tmp_path):
    marker = tmp_path / "marker"
    _plant_torch_pickle(tmp_path / "x.pt", marker)
    torch.load(tmp_path / "x.pt", weights_only=False)  # what an unsafe loader would do
    assert marker.exists()


@pytest.mark.parametrize("damage, target", [
    (_plant_torch_pickle, "level_01/final.pt"),
    (_plant_raw_pickle, "level_02/final.pt"),
    (_plant_raw_pickle, "level_02/mask.npz"),
    (_plant_npz_object_array, "level_01/mask.npz"),
    (_truncate, "level_02/final.pt"),
    (_truncate, "level_01/mask.npz"),
    (_empty, "level_03/final.pt"),
    (_garbage, "level_03/mask.npz"),
    (_wrong_shapes, "level_01/final.pt"),
    (_other_level_mask, "level_01/mask.npz"),
    (_plant_torch_pickle, "level_00/final.pt"),
    (_garbage, "rewind.pt"),
], ids=lambda v: v if isinstance(v, str) else v.__name__.strip("_"))
def test_damaged_level_file_recomputes_only_that_level(run, tmp_path, damage, target):
    out, run_dir, ref = run
    marker = tmp_path / "marker"
    level_dir = "level_00" if target == "rewind.pt" else target.split("/")[0]  # rewind.pt comes from level 0
    damage(run_dir / target, marker)
    others = _files(run_dir, skip=(level_dir, "rewind.pt"))

    results = lt.run_imp(_cfg(out))

    assert not marker.exists(), "a planted pickle was executed"
    assert strip_times(results) == ref
    assert _files(run_dir, skip=(level_dir, "rewind.pt")) == others, "an intact level was rewritten"
    lt.Mask.load(run_dir / "level_01" / "mask.npz")  # what was damaged is whole again
    torch.load(run_dir / target, weights_only=True) if target.endswith(".pt") else lt.Mask.load(run_dir / target)


def test_damaged_final_weights_under_lr_rewinding_recompute_later_levels_too(tmp_path):
    """With lr rewinding a level starts from the previous level's final weights: those levels follow it."""
    ref = strip_times(lt.run_imp(_cfg(tmp_path / "ref", "--rewind", "lr", "--levels", "2")))
    out = tmp_path / "runs"
    cfg = _cfg(out, "--rewind", "lr", "--levels", "2")
    lt.run_imp(cfg)
    run_dir = out / cfg.run_name()
    level0 = _files(run_dir / "level_00")
    before = (run_dir / "level_02" / "final.pt").stat().st_mtime_ns
    _truncate(run_dir / "level_01" / "final.pt", None)
    assert strip_times(lt.run_imp(cfg)) == ref
    assert _files(run_dir / "level_00") == level0
    assert (run_dir / "level_02" / "final.pt").stat().st_mtime_ns != before  # level 2 was retrained


@pytest.mark.parametrize("damage", [_plant_torch_pickle, _plant_raw_pickle, _truncate, _wrong_shapes],
                         ids=lambda f: f.__name__.strip("_"))
def test_damaged_init_is_a_clear_error_and_changes_nothing(run, tmp_path, capsys, damage):
    """init.pt is what every level rewinds to: it is never redrawn behind the user's back."""
    out, run_dir, _ = run
    marker = tmp_path / "marker"
    damage(run_dir / "init.pt", marker)
    before = _files(run_dir)
    with pytest.raises(CorruptFileError, match=r"init\.pt.*restore init\.pt from a copy, or delete the run dir"):
        lt.run_imp(_cfg(out))
    assert not marker.exists()
    assert _files(run_dir) == before
    assert main(["run", *ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "init.pt" in err and "Traceback" not in err, err


def test_missing_init_with_finished_levels_is_a_clear_error(run):
    out, run_dir, _ = run
    (run_dir / "init.pt").unlink()
    with pytest.raises(CorruptFileError, match=r"init\.pt.*missing but levels are finished"):
        lt.run_imp(_cfg(out))
    assert not (run_dir / "init.pt").exists()


@pytest.mark.parametrize("text, needle", [
    ('{"hashed": {', "not valid JSON"),
    ("[1, 2]", "not a lottery run config"),
    ('{"hashed": 3}', "not a lottery run config"),
    ("", "not valid JSON"),
])
def test_damaged_config_json_is_one_line_naming_it(run, capsys, text, needle):
    out, run_dir, _ = run
    (run_dir / "config.json").write_text(text)
    before = _files(run_dir)
    assert main(["run", *ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json" in err and needle in err and "Traceback" not in err, err
    assert _files(run_dir) == before
    if needle != "not a lottery run config" or text == "[1, 2]":
        assert main(["report", str(run_dir)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "config.json" in err, err


@pytest.mark.parametrize("text, needle", [
    ('{"levels": [', "not valid JSON"),
    ('{"levels": 3}', "not a lottery results file"),
    ('{"levels": [1, 2]}', "not a lottery results file"),
    ('{"levels": [{"level": "0"}]}', "not a lottery results file"),
    ('{"levels": [{"level": 0, "density": 1, "status": "ok", "controls": {}, "test_accuracy": "x"}]}',
     "not a lottery results file"),
    ('{"levels": [{"level": 0, "density": 1, "status": "ok", "controls": {"reinit": 5}}]}',
     "not a lottery results file"),
    ('{"levels": [{"level": 0, "density": 1, "status": "ok", "controls": {}, "curve": "x"}]}',
     "not a lottery results file"),
    ("null", "not a lottery results file"),
])
def test_damaged_results_json_is_refused_with_one_line(run, capsys, text, needle):
    """results.json holds the only copy of the measured accuracies: refused, never silently rebuilt."""
    out, run_dir, _ = run
    (run_dir / "results.json").write_text(text)
    before = _files(run_dir)
    for argv in (["run", *ARGS, "--out", str(out)], ["report", str(run_dir)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "results.json" in err and needle in err, err
    assert _files(run_dir) == before and (run_dir / "results.json").read_text() == text


def test_planted_pickle_as_checkpoint_init_never_runs(tmp_path, capsys):
    marker = tmp_path / "marker"
    for plant in (_plant_torch_pickle, _plant_raw_pickle):
        evil = tmp_path / f"{plant.__name__}.pt"
        plant(evil, marker)
        with pytest.raises(CorruptFileError, match=str(evil)):
            lt.run_imp(_cfg(tmp_path / "runs", "--init", "checkpoint", "--init-options", f"path={evil}"))
        assert main(["run", *ARGS, "--out", str(tmp_path / "runs"), "--init", "checkpoint",
                     "--init-options", f"path={evil}"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(evil) in err, err
    assert not marker.exists()


def test_checkpoint_init_of_another_model_is_refused(tmp_path):
    other = tmp_path / "other.pt"
    torch.save(lt.build_model("mlp", (1, 12, 12), 4, hidden=[8]).state_dict(), other)
    with pytest.raises(lt.ConfigError if hasattr(lt, "ConfigError") else ValueError, match="does not fit"):
        lt.run_imp(_cfg(tmp_path / "runs", "--init", "checkpoint", "--init-options", f"path={other}"))


def test_planted_pickle_in_a_cifar_folder_never_runs(tmp_path):
    """CIFAR's files are pickles: torchvision checks each one's md5 before unpickling, so a planted one is refused."""
    import torchvision

    marker = tmp_path / "marker"
    tv = torchvision.datasets.CIFAR10
    folder = tmp_path / tv.base_folder
    folder.mkdir()
    for name, _ in tv.train_list + tv.test_list + [(tv.meta["filename"], None)]:
        _plant_raw_pickle(folder / name, marker)
    with pytest.raises(CorruptFileError, match="damaged or not the official ones"):
        lt.load_dataset("cifar10", root=str(tmp_path))
    assert not marker.exists()


@pytest.mark.parametrize("plant", [_plant_torch_pickle, _plant_raw_pickle, _plant_npz_object_array, _garbage, _empty])
def test_mask_load_refuses_anything_but_a_mask_file(tmp_path, plant):
    marker = tmp_path / "marker"
    path = tmp_path / "mask.npz"
    plant(path, marker)
    with pytest.raises(CorruptFileError, match="not a lottery mask file"):
        lt.Mask.load(path)
    assert not marker.exists()


def test_stale_temp_files_are_removed_by_the_next_run_and_never_read(run):
    out, run_dir, ref = run
    stale = [run_dir / ".results.json.x1.tmp", run_dir / "level_01" / ".final.pt.x2.tmp",
             run_dir / "level_02" / ".mask.npz.x3.tmp"]
    for p in stale:
        p.write_bytes(b"garbage from a killed writer")
    assert strip_times(lt.run_imp(_cfg(out))) == ref
    assert not any(p.exists() for p in stale)
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"
