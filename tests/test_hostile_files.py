"""Hostile and damaged files in a run directory: nothing executes, only the damaged level is recomputed, and what
cannot be recomputed (init.pt, config.json, results.json) stops the run with one line naming the file.

Each test copies one finished reference run, plants or damages a file, and resumes. A planted pickle's payload
creates a marker file when unpickled; ``test_the_payload_is_live`` proves it does, so every "marker absent" below
fails if safe loading (``weights_only=True``, ``allow_pickle=False``) is removed.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
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
    loaded = torch.load(tmp_path / "x.pt", weights_only=False)  # what an unsafe loader would do
    loaded["fc1.weight"].close()  # the payload's open file
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
        assert len(err.splitlines()) == 1 and "results.json" in err and needle in err and "delete" not in err, err
    assert _files(run_dir) == before and (run_dir / "results.json").read_text() == text


@pytest.mark.parametrize("entry", [
    "1", '{"level": "0"}', '{"level": 0, "density": 1, "status": "ok", "controls": {}, "test_accuracy": "x"}',
    '{"level": 0, "density": 1, "status": "ok", "controls": {"reinit": 5}}',
    '{"level": 0, "density": 1, "status": "ok", "controls": {}, "curve": "x"}',
])
def test_a_damaged_results_entry_stops_a_resume_and_is_skipped_by_report(run, capsys, entry):
    """One bad entry: resuming (which builds on every entry) stops with one line naming it and never advises
    deleting the file; report reads the rest, with one warning line naming what it skipped."""
    out, run_dir, _ = run
    text = '{"status": "complete", "levels": [' + entry + "]}"
    (run_dir / "results.json").write_text(text)
    before = _files(run_dir)
    assert main(["run", *ARGS, "--out", str(out)]) == 2
    _one_line(capsys.readouterr().err, "results.json", "is not valid")
    assert main(["report", str(run_dir)]) == 0
    err = capsys.readouterr().err
    _one_line(err, "results.json", "skipped")
    assert "delete" not in err
    assert _files(run_dir, skip=(".png",)) == {k: v for k, v in before.items() if k.suffix != ".png"}
    assert (run_dir / "results.json").read_text() == text


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


# -- symlinks and special files: nothing outside the run directory is written, truncated or deleted --------------
def _one_line(err: str, *needles: str) -> None:
    err = err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and all(n in err for n in needles), err


def test_a_lock_symlink_truncates_nothing_outside(run, tmp_path, capsys):
    out, run_dir, _ = run
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    (run_dir / ".lock").unlink(missing_ok=True)
    (run_dir / ".lock").symlink_to(victim)
    assert main(["run", *ARGS, "--out", str(out)]) == 2
    _one_line(capsys.readouterr().err, ".lock", "symbolic link")
    assert victim.read_text() == "precious data\n"


def test_a_symlinked_level_directory_is_refused_and_nothing_outside_is_deleted(run, tmp_path, capsys):
    out, run_dir, _ = run
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run_dir / "level_02", elsewhere)
    (run_dir / "level_02").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / ".final.pt.x.tmp").write_bytes(b"someone else's temp file")  # the lock holder's cleanup target
    before = {p: p.read_bytes() for p in elsewhere.iterdir()}
    assert main(["run", *ARGS, "--out", str(out)]) == 2
    _one_line(capsys.readouterr().err, "level_02", "symbolic link")
    assert {p: p.read_bytes() for p in elsewhere.iterdir()} == before


@pytest.mark.parametrize("fifo", ["results.json", pytest.param("level_01/mask.npz", marks=pytest.mark.slow),
                                  pytest.param("level_01/final.pt", marks=pytest.mark.slow)])
def test_a_fifo_where_a_file_should_be_is_refused_without_blocking(run, fifo):
    out, run_dir, _ = run
    (run_dir / fifo).unlink()
    os.mkfifo(run_dir / fifo)
    proc = subprocess.run([sys.executable, "-m", "lottery", "export", str(run_dir), "--level", "1", "--no-report"],
                          capture_output=True, text=True, timeout=60)  # a blocking read would hang here
    assert proc.returncode == 2
    _one_line(proc.stderr, fifo.split("/")[-1], "not a regular file")


# -- forged array headers and zip bombs in mask.npz ---------------------------------------------------------------
def _rewrite_member(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members[name] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in members.items():
            z.writestr(n, d)


def _npy_header(shape: tuple, dtype=np.uint8) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.slow
def test_a_forged_shape_is_refused_before_anything_is_allocated(tmp_path):
    """A few hundred bytes that declare 2**45 bytes of bits: refused from the header, in a process whose address
    space is capped at 2 GiB above what it holds (numpy's allocation would fail there with a MemoryError
    traceback, or hang a machine that overcommits)."""
    path = tmp_path / "mask.npz"
    lt.Mask({"w": torch.ones(4, 4, dtype=torch.bool)}).save(path)
    header = json.dumps({"format": "lottery-mask/1", "names": ["w"], "shapes": [[2 ** 48]]}).encode()
    _rewrite_member(path, "header.npy", _npy_header((len(header),)) + header)
    _rewrite_member(path, "bits_0.npy", _npy_header((2 ** 45,)) + b"\xff" * 8)
    assert path.stat().st_size < 1024
    code = ("import os, resource; from lottery.masks import Mask; from lottery.errors import CorruptFileError\n"
            "cap = int(open('/proc/self/statm').read().split()[0]) * os.sysconf('SC_PAGE_SIZE') + (2 << 30)\n"
            "resource.setrlimit(resource.RLIMIT_AS, (cap, cap))\n"
            f"try:\n    Mask.load({str(path)!r})\nexcept CorruptFileError as e:\n    print('refused:', e)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("refused:") and "promises" in proc.stdout, proc


def test_a_member_longer_than_its_header_promises_is_refused(tmp_path):
    """A zip bomb: the right array header, then megabytes more than it declares (they compress to almost
    nothing). numpy reads the promised bytes and ignores the rest; the loader refuses the member."""
    path = tmp_path / "mask.npz"
    mask = lt.Mask({"w": torch.ones(4, 4, dtype=torch.bool)})
    mask.save(path)
    _rewrite_member(path, "bits_0.npy", _npy_header((2,)) + b"\xff\xff" + bytes(8 << 20))
    assert path.stat().st_size < 64 << 10
    with pytest.raises(CorruptFileError, match="promises"):
        lt.Mask.load(path)


def test_a_mask_of_another_model_is_refused_before_its_bits_are_read(tmp_path):
    path = tmp_path / "mask.npz"
    lt.Mask({"fc1.weight": torch.ones(4, 4, dtype=torch.bool)}).save(path)
    model = lt.build_model("mlp", (8,), 2, hidden=[4])
    with pytest.raises(CorruptFileError, match="fc1.weight"):
        lt.Mask.load(path, like=model)


def test_mask_load_never_prints_numpys_allow_pickle_advice(tmp_path):
    path = tmp_path / "mask.npz"
    _plant_raw_pickle(path, tmp_path / "marker")
    with pytest.raises(CorruptFileError) as e:
        lt.Mask.load(path)
    assert "allow_pickle" not in str(e.value) and "pickle.load" not in str(e.value) and "trust" not in str(e.value)


# -- bad encodings and values ----------------------------------------------------------------------------------
BAD_TEXT = {"non-utf8": b'{"levels": [\xff\xfe]}', "deeply-nested": b"[" * 100_000 + b"]" * 100_000}


@pytest.mark.parametrize("name", ["config.json", "results.json"])
@pytest.mark.parametrize("kind", BAD_TEXT)
def test_undecodable_run_files_are_one_line_naming_them(run, capsys, name, kind):
    out, run_dir, _ = run
    (run_dir / name).write_bytes(BAD_TEXT[kind])
    assert main(["report", str(run_dir)]) == 2
    _one_line(capsys.readouterr().err, name)


def _level(**changes):
    entry = {"level": 0, "density": 1.0, "status": "ok", "test_accuracy": 0.5, "early_stop_step": 10,
             "curve": [[0, 1.0, 0.5]], "controls": {}}
    return {**entry, **changes}


@pytest.mark.parametrize("entry", [
    _level(test_accuracy=float("nan")), _level(test_accuracy=float("inf")), _level(test_accuracy=1.5),
    _level(density=-0.1), _level(density=2.0), _level(early_stop_step=-5), _level(curve=[[0, 1.0, 7.0]]),
    _level(curve=[[-1, 1.0, 0.5]]), _level(layer_density={"fc1.weight": float("nan")}),
    _level(controls={"reinit": {"status": "ok", "test_accuracy": -0.2, "early_stop_step": 1}}),
], ids=["nan-acc", "inf-acc", "acc>1", "density<0", "density>1", "neg-step", "curve-acc>1", "neg-curve-step",
        "nan-layer-density", "neg-control-acc"])
def test_out_of_range_values_are_refused_by_the_validator(run, capsys, entry):
    out, run_dir, _ = run
    (run_dir / "results.json").write_text(json.dumps({"status": "complete", "levels": [entry]}))
    assert main(["run", *ARGS, "--out", str(out)]) == 2
    _one_line(capsys.readouterr().err, "results.json", "level 0", "is not valid")
    assert main(["report", str(run_dir)]) == 0  # the rest is read; what was left out is named
    _one_line(capsys.readouterr().err, "results.json", "skipped", "level 0")


def test_a_diverged_levels_nan_curve_is_still_valid(run, capsys):
    out, run_dir, _ = run
    entry = _level(status="diverged", test_accuracy=None, curve=[[0, float("nan"), float("nan")]])
    (run_dir / "results.json").write_text(json.dumps({"status": "diverged", "levels": [entry]}))
    assert main(["report", str(run_dir)]) == 0


@pytest.mark.parametrize("kind", BAD_TEXT)
def test_undecodable_driver_files_are_one_line_naming_them(run, capsys, kind):
    from lottery.drivers import gradual, prune_at_init

    out, run_dir, _ = run
    for module in (gradual, prune_at_init):
        (run_dir / module.RESULTS_FILE).write_bytes(BAD_TEXT[kind])
        with pytest.raises(CorruptFileError, match=module.RESULTS_FILE.replace(".", r"\.")):
            module.load_results(run_dir)
    _stability_sets_aside(run_dir, BAD_TEXT[kind], capsys)
    compare_dir = out / "compare-x"
    compare_dir.mkdir()
    (compare_dir / "summary.json").write_bytes(BAD_TEXT[kind])
    assert main(["report", str(compare_dir)]) == 2
    _one_line(capsys.readouterr().err, "summary.json")


def test_out_of_range_values_in_driver_files_are_refused(run, capsys):
    from lottery.drivers import gradual, prune_at_init

    out, run_dir, _ = run
    (run_dir / gradual.RESULTS_FILE).write_text(json.dumps({"levels": [_level(test_accuracy=3.0)]}))
    with pytest.raises(CorruptFileError, match="gradual.json"):
        gradual.load_results(run_dir)
    bad = {**_level(density=0.1, test_accuracy=float("nan")), "strategy": "snip", "target_density": 0.1}
    (run_dir / prune_at_init.RESULTS_FILE).write_text(json.dumps({"dense": None, "entries": [bad]}))
    with pytest.raises(CorruptFileError, match="prune_at_init.json"):
        prune_at_init.load_results(run_dir)
    stored = {"entries": [{"level": 0, "k": 0, "seeds": [1, 2], "points": 21, "alphas": [0, 1],
                           "errors": [0.1, float("inf")], "instability": 0.0}]}
    _stability_sets_aside(run_dir, json.dumps(stored).encode(), capsys)


def _stability_sets_aside(run_dir, content: bytes, capsys) -> None:
    """A driver reading its own damaged results file keeps it as NAME.damaged, says so in one line, recomputes."""
    (run_dir / "stability.json").write_bytes(content)
    assert main(["stability", str(run_dir), "--level", "0", "--points", "3", "--no-progress"]) == 0
    _one_line(capsys.readouterr().err, "stability.json.damaged")
    assert (run_dir / "stability.json.damaged").read_bytes() == content
    assert json.loads((run_dir / "stability.json").read_text())["entries"][0]["points"] == 3
    (run_dir / "stability.json").write_bytes(content + b"again")  # damaged twice: the first copy is kept too
    assert main(["stability", str(run_dir), "--level", "0", "--points", "3", "--no-progress"]) == 0
    _one_line(capsys.readouterr().err, "stability.json.damaged.1")
    assert (run_dir / "stability.json.damaged").read_bytes() == content
    assert (run_dir / "stability.json.damaged.1").read_bytes() == content + b"again"
    (run_dir / "stability.json.damaged").unlink()
    (run_dir / "stability.json.damaged.1").unlink()
