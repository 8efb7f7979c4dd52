"""Reading a run back: one bad entry of results.json is flagged and skipped, never the whole file; find_tickets
runs (no early-stop step, several seeds) are reported like any other."""
from __future__ import annotations

import json

import pytest

import lottery as lt
from lottery.cli import main
from lottery.storage.rundir import RunDir
from tests.ticket_helpers import Loop, make_model


def _find(out, seed=0, loop=None, levels=1):
    return lt.find_tickets(make_model(seed), loop or Loop(steps=5), out=str(out), levels=levels, seed=seed,
                           controls=("random_mask",), progress=False)


class NoEarlyStop(Loop):
    """The README's find_tickets example: a loop that returns no early_stop_step."""

    def __call__(self, model, mask, run):
        out = super().__call__(model, mask, run)
        return {"test_accuracy": out["test_accuracy"]}


@pytest.fixture
def finished(tmp_path):
    results = _find(tmp_path / "runs", levels=2)
    return RunDir(results["run_dir"])


def _edit(run: RunDir, change) -> None:
    results = json.loads((run.path / "results.json").read_text())
    change(results)
    (run.path / "results.json").write_text(json.dumps(results))


def _warning(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), err
    assert "delete" not in lines[0], err  # never advise throwing the other measurements away


@pytest.mark.parametrize("field, value", [("early_stop_step", -1), ("steps", -1), ("test_accuracy", 93.0)])
def test_one_bad_level_is_skipped_with_one_line_the_rest_read(finished, capsys, field, value):
    _edit(finished, lambda r: r["levels"][1].update({field: value}))
    df = lt.load_results(finished.path)
    _warning(capsys.readouterr().err, "results.json", "level 1", field)
    assert sorted(set(df.level)) == [0, 2]
    assert main(["report", str(finished.path)]) == 0
    captured = capsys.readouterr()
    _warning(captured.err, "results.json", "level 1")
    assert "status: complete" in captured.out


def test_one_bad_control_is_skipped_its_level_kept(finished, capsys):
    _edit(finished, lambda r: r["levels"][2]["controls"]["random_mask"].update(early_stop_step=-3))
    df = lt.load_results(finished.path)
    _warning(capsys.readouterr().err, "level 2", "random_mask")
    assert set(df[df.level == 2].arm) == {"ticket"} and len(df[df.level == 1]) == 2


def test_a_curve_in_percent_loses_only_the_curve(finished, capsys):
    _edit(finished, lambda r: r["levels"][1].update(curve=[[0, 1.0, 55.0]]))
    df = lt.load_results(finished.path)
    _warning(capsys.readouterr().err, "level 1", "curve")
    assert sorted(set(df.level)) == [0, 1, 2]


def test_a_diverged_run_with_nan_accuracy_and_curve_reads_fine(finished, capsys):
    nan = float("nan")
    _edit(finished, lambda r: r["levels"][2].update(status="diverged", test_accuracy=nan, early_stop_step=None,
                                                     curve=[[0, nan, nan], [10, float("inf"), 0.1]]))
    df = lt.load_results(finished.path)
    assert capsys.readouterr().err == ""
    assert set(df[df.level == 2].status) >= {"diverged"}
    assert main(["report", str(finished.path)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_results_file_that_is_no_results_file_is_still_refused(finished, capsys):
    (finished.path / "results.json").write_text('{"levels": 3}')
    assert main(["report", str(finished.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a lottery results file" in err and "delete" not in err


def test_resume_refuses_a_bad_entry_naming_it_without_advising_deletion(tmp_path, capsys):
    results = _find(tmp_path / "runs", levels=1)
    _edit(RunDir(results["run_dir"]), lambda r: r["levels"][1].update(early_stop_step=-1))
    with pytest.raises(lt.errors.CorruptFileError) as e:
        _find(tmp_path / "runs", levels=1)
    assert "level 1" in str(e.value) and "early_stop_step" in str(e.value) and "delete" not in str(e.value)


def test_report_of_a_run_without_early_stop_steps_prints_table_and_plots(tmp_path, capsys):
    results = _find(tmp_path / "runs", loop=NoEarlyStop(steps=5), levels=1)
    assert main(["report", results["run_dir"]]) == 0
    captured = capsys.readouterr()
    assert "early_stop_vs_density.png" in captured.out and "Traceback" not in captured.err


def test_two_seeds_of_a_find_tickets_run_are_reported_together(tmp_path, capsys):
    a, b = (_find(tmp_path / "runs", seed=s, levels=1, loop=NoEarlyStop(steps=5)) for s in (0, 1))
    assert main(["report", a["run_dir"], b["run_dir"], "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "no lottery config" not in captured.err, captured.err
    assert "±" in captured.out and (tmp_path / "seeds_accuracy_vs_density.png").is_file()
    assert main(["report", a["run_dir"], a["run_dir"]]) == 2  # the same run twice is still refused
    assert "same run" in capsys.readouterr().err
