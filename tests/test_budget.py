"""`lottery budget`: the smallest matching ticket within a budget (or down to a target density), the cost it
spent and the verdict; bad input is one line and exit 2."""
from __future__ import annotations

import pytest

from lottery.cli import main
from lottery.drivers.budget import ticket_entry, ticket_verdict
from tests.test_adaptive import entry
from tests.test_cli import _one_line_error

TINY = ["--dataset", "synthetic", "--model-options", "hidden=[16]", "--steps", "60", "--eval-every", "10",
        "--batch-size", "32", "--levels", "4", "--lr", "5e-3", "--no-progress", "--device", "cpu",
        "--early-bird", "--early-bird-window", "2"]


def test_budget_prints_the_ticket_its_cost_and_the_verdict(tmp_path, capsys):
    assert main(["budget", *TINY, "--budget", "2.5", "--seeds", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "within a budget of 2.5 dense trainings" in out and "verdict: " in out
    costs = [float(line.split("cost ")[1].split()[0]) for line in out.splitlines() if line.startswith("  seed ")]
    assert len(costs) == 2 and all(1 < c <= 2.5 for c in costs)


def test_the_ticket_is_the_deepest_fully_trained_level_and_the_verdict_is_on_it():
    runs = {s: {"levels": [entry(0, 1.0, 0.90 + d), entry(1, 0.8, 0.9, search=True, steps=30),
                           entry(2, 0.64, 0.9, search=True, steps=30), entry(3, 0.64, 0.905 + d, 0.0, parent=2)]}
            for s, d in ((0, 0.0), (1, 0.002), (2, -0.001))}
    assert ticket_entry(runs[0])["level"] == 3
    out = ticket_verdict(runs)
    assert out["verdict"] == "beats" and out["cost"]["mean"] == pytest.approx(2.6)
    assert out["density"]["mean"] == pytest.approx(0.64)


@pytest.mark.parametrize("flags, needle", [([], "--budget B"), (["--budget", "1"], "budget must be"),
                                           (["--target-density", "1.2"], "target_density must be in (0, 1)")])
def test_bad_budget_input_is_one_line_and_exit_2(tmp_path, capsys, flags, needle):
    _one_line_error(capsys, ["budget", *TINY, "--out", str(tmp_path), *flags], needle)
