"""Atomic writes, in-process: each file is written whole to a temp file beside it and renamed, so a kill at any
moment leaves the old version or the new one (the SIGKILL tests in test_faults.py show it end to end)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import lottery as lt
import lottery.storage.atomic as atomic
from lottery.errors import CorruptFileError


def _watching(path: Path, seen: list):
    """A ``write`` for atomic_write that records what the target and the temp file hold while it writes."""
    def write(tmp: str) -> None:
        seen.append((Path(tmp), path.read_bytes()))
        Path(tmp).write_bytes(b"new")
    return write


def test_the_target_keeps_its_old_bytes_until_the_rename(tmp_path):
    path = tmp_path / "results.json"
    path.write_bytes(b"old")
    seen = []
    atomic.atomic_write(path, _watching(path, seen))
    ((tmp, during),) = seen
    assert during == b"old"  # not opened (and truncated) in place
    assert tmp.parent == path.parent and tmp.name.startswith(".results.json.") and tmp.name.endswith(".tmp")
    assert path.read_bytes() == b"new" and not tmp.exists()


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "final.pt"
    path.write_bytes(b"old")

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise KeyboardInterrupt  # Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(path, write)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["final.pt"]


@pytest.mark.parametrize("kind", ["json", "tensors", "mask"])
def test_every_writer_renames_a_complete_temp_file_onto_the_target(tmp_path, monkeypatch, kind):
    renames = []
    real = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda src, dst: renames.append((Path(src), Path(dst), Path(src)
                                                                               .read_bytes())) or real(src, dst))
    path = tmp_path / {"json": "results.json", "tensors": "init.pt", "mask": "mask.npz"}[kind]
    if kind == "json":
        atomic.save_json(path, {"levels": [], "loss": float("nan")})
        loaded = atomic.load_json(path)
        assert loaded["levels"] == [] and loaded["loss"] != loaded["loss"]  # NaN survives: a diverged curve
    elif kind == "tensors":
        atomic.save_tensors(path, {"w": torch.arange(3.0)})
        assert torch.equal(atomic.load_tensors(path)["w"], torch.arange(3.0))
    else:
        mask = lt.Mask({"w": torch.tensor([True, False])})
        mask.save(path)
        assert lt.Mask.load(path) == mask
    ((src, dst, data),) = renames
    assert dst == path and src.parent == path.parent and src != path
    assert data == path.read_bytes() and len(data) > 0


def test_a_planted_pickle_in_a_tensor_file_is_refused_unrun(tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "w"))

    torch.save({"w": Payload()}, tmp_path / "init.pt")
    with pytest.raises(CorruptFileError, match="pickled code"):
        atomic.load_tensors(tmp_path / "init.pt")
    assert not (tmp_path / "ran").exists()


def test_the_two_results_readers_say_how_strict_they_are(tmp_path):
    """RunDir.load_results_strict refuses a bad entry in one line; read_results_lenient leaves it out and says so;
    the earlier names are the same methods."""
    from lottery.storage.rundir import RunDir

    run = RunDir(tmp_path)
    good = {"level": 0, "density": 1.0, "test_accuracy": 0.5, "early_stop_step": 10, "status": "ok", "controls": {}}
    run.save_results({"status": "running", "levels": [good, {**good, "level": 1, "density": "most"}]})
    with pytest.raises(CorruptFileError, match="level 1"):
        run.load_results_strict()
    notes = []
    assert [e["level"] for e in run.read_results_lenient(notes.append)["levels"]] == [0]
    assert len(notes) == 1 and "skipped" in notes[0]
    assert RunDir.load_results is RunDir.load_results_strict and RunDir.read_results is RunDir.read_results_lenient
