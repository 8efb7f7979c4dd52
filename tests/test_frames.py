"""lt.load_results: one tidy row per run × level × arm, from run_imp and find_tickets runs; `report --csv`."""
import sys

import pytest

import lottery as lt
from lottery.cli import main
from lottery.errors import LotteryError
from tests.engine_helpers import tiny
from tests.ticket_helpers import Loop, make_model

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    imp = lt.run_imp(tiny(out, levels=2, steps=20, controls=("random_mask",)))
    mine = lt.find_tickets(make_model(), Loop(steps=5), out=str(out / "runs"), levels=1, dataset="blobs",
                           progress=False)
    return out / "runs", imp, mine


def test_one_row_per_run_level_arm(runs):
    out, imp, mine = runs
    df = lt.load_results(out)
    from lottery.reporting.frames import COLUMNS

    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert len(df) == (1 + 2 * 2) + (1 + 3)  # run_imp: 3 levels, 1 control; find_tickets: 2 levels, 2 controls
    ours = df[df.run == mine["run_dir"].rsplit("/", 1)[1]]
    assert set(ours.arm) == {"ticket", "reinit", "random_mask"} and set(ours.dataset) == {"blobs"}
    assert set(ours.model) == {"Net"} and "final_loss" in df.columns  # the loop's own metric is a column
    theirs = df[df.model == "mlp"]
    assert set(theirs.init) == {"xavier_normal"} and set(theirs.hash) == {imp["hash"]}
    row = theirs[(theirs.level == 2) & (theirs.arm == "random_mask")].iloc[0]
    entry = imp["levels"][2]
    assert row.test_accuracy == entry["controls"]["random_mask"]["test_accuracy"]
    assert row.density == entry["density"] and row.seed == 0
    assert len(lt.load_results([mine["run_dir"]])) == 4


def test_report_csv(runs, tmp_path, capsys):
    _, _, mine = runs
    path = tmp_path / "t.csv"
    assert main(["report", mine["run_dir"], "--csv", str(path)]) == 0
    df = pd.read_csv(path)
    assert len(df) == 4 and set(df.arm) == {"ticket", "reinit", "random_mask"}


def test_not_a_run_and_missing_pandas(tmp_path, monkeypatch):
    with pytest.raises(LotteryError, match="neither a run directory nor a directory of runs"):
        lt.load_results(tmp_path)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(LotteryError, match="load_results needs pandas: pip install pandas"):
        lt.load_results(tmp_path)
