"""Outputs never land on a run's own files: `report --csv`, `export --out` naming a file the run owns (its
measurements, weights, masks, config, a driver's results) are refused in one line before anything is written."""
from __future__ import annotations

import pytest

from lottery.cli import main
from lottery.errors import ConfigError
from lottery.storage.rundir import refuse_run_file

TINY = ["--dataset", "synthetic", "--model-options", "hidden=[8]", "--steps", "5", "--eval-every", "5",
        "--batch-size", "32", "--levels", "1", "--controls", "none", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", *TINY, "--out", str(out)]) == 0
    (path,) = [p for p in out.iterdir() if p.is_dir()]
    return path


def _snapshot(run_dir):
    return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.suffix != ".png"}


def _refused(capsys, argv, run_dir, before):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "belongs to the run" in err and "Traceback" not in err, err
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize("target", ["results.json", "config.json", "init.pt", "level_01/final.pt",
                                    "level_01/mask.npz", "stability.json"])
def test_report_csv_onto_a_run_file_is_refused_before_writing(run_dir, capsys, target):
    before = _snapshot(run_dir)
    _refused(capsys, ["report", str(run_dir), "--csv", str(run_dir / target)], run_dir, before)


def test_export_out_onto_the_trained_weights_is_refused(run_dir, capsys):
    before = _snapshot(run_dir)
    _refused(capsys, ["export", str(run_dir), "--level", "1", "--no-report", "--out",
                      str(run_dir / "level_01" / "final.pt")], run_dir, before)


def test_a_link_or_a_dotted_path_onto_a_run_file_is_refused(run_dir, tmp_path, capsys):
    before = _snapshot(run_dir)
    link = tmp_path / "table.csv"
    link.symlink_to(run_dir / "results.json")
    _refused(capsys, ["report", str(run_dir), "--csv", str(link)], run_dir, before)
    dotted = run_dir / "level_01" / ".." / "results.json"
    _refused(capsys, ["report", str(run_dir), "--csv", str(dotted)], run_dir, before)


@pytest.mark.slow
def test_new_files_inside_a_run_and_the_default_export_are_fine(run_dir, capsys):
    assert main(["report", str(run_dir), "--csv", str(run_dir / "table.csv")]) == 0
    assert (run_dir / "table.csv").read_text().startswith("run,")
    assert main(["export", str(run_dir), "--level", "1", "--no-report"]) == 0
    assert main(["export", str(run_dir), "--level", "1", "--no-report"]) == 0  # a second export replaces the first
    assert (run_dir / "level_01" / "ticket-csr.safetensors").is_file()


def test_the_helper_covers_compare_directories_and_tracker_folders(tmp_path):
    compare = tmp_path / "compare-x"
    compare.mkdir()
    (compare / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match="belongs to the run"):
        refuse_run_file(compare / "summary.json", "--csv")
    run = tmp_path / "r"
    (run / "mlruns" / "0").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="belongs to the run"):
        refuse_run_file(run / "mlruns" / "0" / "meta.yaml", "--csv")
    refuse_run_file(tmp_path / "elsewhere.csv", "--csv")  # outside any run: fine
