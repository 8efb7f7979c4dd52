"""The whole-process benchmark's table: best against best, every round shown, the target judged on the best."""
from benchmarks.bench_process import report


def test_report_shows_every_round_and_judges_the_best():
    times = {"imp": {"hand loop": [137.5, 145.7], "lottery run": [31.9, 43.3], "fixed cost": [4.4]},
             "grid": {"one at a time": [129.7, 108.0], "packed": [71.8, 67.6], "fixed cost": [5.1]}}
    text = report(times, (0.7, 1.8), "python benchmarks/bench_process.py", {"imp": 5000, "grid": 500})
    imp = next(line for line in text.splitlines() if line.startswith("| IMP"))
    grid = next(line for line in text.splitlines() if line.startswith("| compare-inits"))
    assert "| 137.5 | 31.9 | 4.31x | >= 4.5x | **no** | 4.4 |" in imp
    assert imp.endswith("| 137.5, 145.7 / 31.9, 43.3 |")
    assert "| 108.0 | 67.6 | 1.60x | >= 2.5x | **no** |" in grid
    assert grid.endswith("| 129.7, 108.0 / 71.8, 67.6 |")
    assert "load average 0.7 at the start and 1.8 at the end" in text
