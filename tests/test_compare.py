"""compare-inits end to end on the synthetic data set: summary fields, table, reuse of finished runs, divergence."""
import json
import os
import shutil

import pytest

import lottery.drivers.imp
from lottery.cli import main
from lottery.drivers.compare_inits import (
    InitVariant, comparison_dir, compare_inits, format_summary, mean_std, parse_init_variant, parse_inits, parse_seeds,
    summarize,
)
from lottery.errors import ConfigError, LotteryError
from tests.engine_helpers import tiny

FAST = dict(model_options={"hidden": [8]}, steps=20, eval_every=10, levels=1)


FLAGS = ["--dataset", "synthetic", "--model-options", "hidden=[8]", "--steps", "20", "--eval-every", "10",
         "--batch-size", "32", "--levels", "1", "--lr", "0.005", "--no-progress", "--device", "cpu"]


@pytest.mark.parametrize("text, scheme, options, scale", [
    ("normal", "normal", {}, None),
    ("normal:std=0.001", "normal", {"std": 0.001}, None),
    ("normal:std=0.01:bias=1", "normal", {"std": 0.01, "bias": 1}, None),
    ("xavier_normal*0.01", "xavier_normal", {}, 0.01),
    ("xavier_normal:scale=0.01", "xavier_normal", {}, 0.01),
    ("kaiming_normal:mode=fan_out*2", "kaiming_normal", {"mode": "fan_out"}, 2.0),
])
def test_init_variant_syntax(text, scheme, options, scale):
    v = parse_init_variant(text)
    assert (v.label, v.scheme, v.options, v.scale) == (text, scheme, options, scale)


@pytest.mark.parametrize("text, needle", [
    ("nosuch", "nosuch"), ("normal*abc", "not a number"), ("normal*0", "> 0"), ("normal:std", "key=value"),
    ("normal:scale=2*3", "twice"), ("", "at least one"),
])
def test_init_variant_errors_name_the_fix(text, needle):
    with pytest.raises(LotteryError, match=needle):
        parse_inits(text)


def test_seeds_and_duplicates():
    assert parse_seeds(3, base_seed=5) == [5, 6, 7]
    assert parse_seeds("2") == [0, 1] and parse_seeds("0,4") == [0, 4]
    with pytest.raises(ConfigError):
        parse_seeds("0,0")
    with pytest.raises(ConfigError, match="twice"):
        parse_inits("normal,normal")
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5), "n": 2}
    assert mean_std([None]) == {"mean": None, "std": None, "n": 0}


def test_one_seed_alone_is_a_list_with_a_trailing_comma(tmp_path, capsys):
    """--seeds 4 is a count (seeds 0..3); --seeds 4, is seed 4 alone (transfer's same-draw row of a seed-4 source)."""
    from lottery.cli import build_parser
    from lottery.drivers.compare_inits import read_seeds

    assert parse_seeds(read_seeds("4")) == [0, 1, 2, 3] and parse_seeds(read_seeds("4,")) == [4]
    assert parse_seeds(read_seeds("4,7,")) == [4, 7]
    for cmd in ("compare-inits", "transfer"):
        args = build_parser().parse_args([cmd, *(["run_dir"] if cmd == "transfer" else []), "--seeds", "4,"])
        assert args.seeds == (4,)
    from lottery.cli import main

    assert main(["compare-inits", "--inits", "normal", "--seeds", ",", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seeds" in err[0], err


def _results(accs, dense_status="ok", controls=None):
    """Fake results.json: level L has ticket accuracy accs[L]."""
    levels = []
    for level, acc in enumerate(accs):
        ok = dense_status == "ok" or level > 0
        levels.append({"level": level, "density": 0.8 ** level, "test_accuracy": acc if ok else None,
                       "early_stop_test_accuracy": acc if ok else None, "early_stop_step": 10 * level, "status": "ok" if ok else "diverged",
                       "controls": controls or {}, "curve": [[0, 1.0, 0.1], [10, 0.5, acc or 0.1]]})
    return {"status": "complete", "levels": levels}


def test_matching_rule_is_the_paired_verdict_and_contiguous():
    # Three seeds; ticket - dense by seed: level 1 +1.0/+1.2/+1.1 points (beats), level 2 -0.5/-0.3/-0.4 (matches
    # within one point), level 3 about -5 (below), level 4 matches again but "smallest matching" stops at level 3.
    dense = [0.80, 0.82, 0.81]
    offsets = [[0.010, 0.012, 0.011], [-0.005, -0.003, -0.004], [-0.050, -0.052, -0.048], [0.0, 0.0, 0.001]]
    runs = {("a", s): {"results": _results([dense[s]] + [dense[s] + o[s] for o in offsets]), "run_dir": f"r{s}"}
            for s in range(3)}
    s = summarize([InitVariant("a", "normal")], [0, 1, 2], runs, chance=0.25)
    (a,) = s["schemes"]
    assert [r["verdict"] for r in a["levels"]] == ["dense", "beats", "matches", "below", "matches"]
    assert [r.get("matches_dense") for r in a["levels"]] == [None, True, True, False, True]
    assert a["smallest_matching_density"] == pytest.approx(0.8 ** 2)
    assert a["levels"][1]["ticket_minus_dense"]["mean"] == pytest.approx(0.011)
    assert "smallest matching density: 64.00 % (3 seeds" in format_summary(s)
    # the old rule (within one std of dense) is gone: a noisy dense no longer widens the tolerance
    assert a["match_tolerance_used"] == pytest.approx(0.01)
    # one seed: no interval, so no verdict and no smallest matching density; the table says how to get one
    one = summarize([InitVariant("a", "normal")], [0], {("a", 0): runs[("a", 0)]}, chance=0.25, match_tolerance=0.2)
    assert one["schemes"][0]["smallest_matching_density"] is None
    assert {r["verdict"] for r in one["schemes"][0]["levels"][1:]} == {"one seed"}
    assert "--seeds 3" in format_summary(one)


def test_stalled_scheme_has_no_matching_density():
    runs = {("zeros", 0): {"results": _results([0.25, 0.25]), "run_dir": "r"}}
    (z,) = summarize([InitVariant("zeros", "zeros")], [0], runs, chance=0.25)["schemes"]
    assert z["status"] == "stalled" and z["runs"][0]["status"] == "stalled"
    assert z["smallest_matching_density"] is None


def test_later_divergence_marks_the_run_and_stops_the_match():
    late = _results([0.80, 0.81, 0.80])
    late["levels"][2].update(status="diverged", test_accuracy=None)
    late["status"] = "diverged"
    runs = {("a", 0): {"results": _results([0.80, 0.81, 0.80]), "run_dir": "r0"},
            ("a", 1): {"results": late, "run_dir": "r1"}}
    s = summarize([InitVariant("a", "normal")], [0, 1], runs, chance=0.1)
    (a,) = s["schemes"]
    assert a["status"] == "ok" and a["diverged_runs"] == [{"seed": 1, "level": 2}]
    assert a["runs"][1]["status"] == "diverged" and a["levels"][2]["diverged"] == 1
    assert a["levels"][2]["matches_dense"] is False and a["smallest_matching_density"] == pytest.approx(0.8)
    assert "1 run diverged" in format_summary(s) and "diverged (1 of 2 seeds)" in format_summary(s)


def test_comparison_dir_hash_is_pinned(tmp_path):
    """Renaming the directory of existing comparisons would orphan their summaries: the hash is part of the contract."""
    base = tiny(tmp_path, **FAST)
    path = comparison_dir(base, parse_inits("xavier_normal,zeros"), [0, 1])
    assert path.parent == tmp_path / "runs" and path.name == "compare-t-b9641cfc2f"
    # seeds, variants and shared settings all change it; the base init and seed do not
    assert comparison_dir(base, parse_inits("xavier_normal,zeros"), [0]) != path
    assert comparison_dir(base, parse_inits("zeros,xavier_normal"), [0, 1]) != path
    assert comparison_dir(base.replace(lr=1e-3), parse_inits("xavier_normal,zeros"), [0, 1]) != path
    assert comparison_dir(base.replace(init="zeros", seed=5), parse_inits("xavier_normal,zeros"), [0, 1]) == path


def test_compare_inits_end_to_end_and_reuse(tmp_path, monkeypatch, capsys):
    base = tiny(tmp_path, **FAST)
    summary = compare_inits(base, "xavier_normal,zeros", seeds=2, log=None)
    out_dir = comparison_dir(base, parse_inits("xavier_normal,zeros"), [0, 1])
    assert summary["comparison_dir"] == str(out_dir)
    stored = json.loads((out_dir / "summary.json").read_text())
    assert stored["inits"] == ["xavier_normal", "zeros"] and stored["seeds"] == [0, 1]
    assert stored["chance_accuracy"] == pytest.approx(0.25)
    xav, zeros = stored["schemes"]
    assert xav["status"] == "ok" and zeros["status"] == "stalled"
    for key in ("dense", "smallest_matching_density", "levels", "runs", "diverged_runs", "dense_curve"):
        assert key in xav
    assert xav["dense"]["test_accuracy"]["n"] == 2 and xav["dense"]["test_accuracy"]["mean"] > 0.4
    assert xav["dense"]["early_stop_step"]["mean"] is not None
    level1 = xav["levels"][1]
    assert 0.79 < level1["density"] < 0.81
    for key in ("ticket", "reinit", "random_mask", "ticket_minus_dense", "ticket_minus_control", "verdict"):
        assert key in level1, key
    assert level1["best_control"] in ("reinit", "random_mask") and level1["ticket"]["lo"] is not None
    assert isinstance(level1["matches_dense"], bool)
    assert len({r["run_dir"] for s in stored["schemes"] for r in s["runs"]}) == 4
    for name in ("compare_accuracy_vs_density.png", "compare_controls_vs_density.png",
                 "compare_early_stop_vs_density.png", "compare_training_curves.png", "compare_relative_to_dense.png"):
        assert (out_dir / name).read_bytes().startswith(b"\x89PNG")

    table = format_summary(stored)
    assert "xavier_normal" in table and "stalled" in table and "smallest match" in table and "random %" in table

    # a second call trains nothing: run_imp is never called and no results.json is rewritten
    results_files = sorted((tmp_path / "runs").glob("*/results.json"))
    assert len(results_files) == 4
    mtimes = [p.stat().st_mtime_ns for p in results_files]
    monkeypatch.setattr(lottery.drivers.imp, "run_imp", lambda cfg: pytest.fail(f"retrained {cfg.run_name()}"))
    again = compare_inits(base, "xavier_normal,zeros", seeds=2, log=None, plots=False)
    assert [p.stat().st_mtime_ns for p in results_files] == mtimes
    assert again["schemes"] == summary["schemes"]


def test_cli_compare_inits_marks_diverged_run(tmp_path, capsys):
    # weights of std 1e20 overflow float32 in the second layer: the dense run diverges at once
    code = main(["compare-inits", "--inits", "normal:std=1e20,normal*100", *FLAGS, "--controls", "none",
                 "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "normal:std=1e20" in captured.out and "diverged" in captured.out
    assert "running IMP" in captured.err
    (summary_path,) = tmp_path.glob("compare-*/summary.json")
    big, scaled = json.loads(summary_path.read_text())["schemes"]
    assert big["status"] == "diverged" and big["diverged_runs"] == [{"seed": 0, "level": 0}]
    assert big["smallest_matching_density"] is None and big["runs"][0]["status"] == "diverged"
    assert scaled["init_scale"] == 100.0
    for png in summary_path.parent.glob("*.png"):
        png.unlink()
    assert main(["report", str(summary_path.parent)]) == 0  # report redraws a comparison from its summary
    assert "normal:std=1e20" in capsys.readouterr().out
    assert len(list(summary_path.parent.glob("*.png"))) == 5  # COMPARE_FILES, the relative panel included
    assert json.loads(next(tmp_path.glob("mlp-synthetic-*/config.json")).read_text())["config"]["init"] == "normal"


def test_cli_compare_inits_bad_variant_is_one_line_error(tmp_path, capsys):
    assert main(["compare-inits", "--inits", "normal,bogus", *FLAGS, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bogus" in err


def test_help_texts_render(capsys):
    for cmd in ("run", "compare-inits"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "--seed" in capsys.readouterr().out


def test_cli_compare_inits_reads_inits_and_seeds_from_the_config_file(tmp_path, capsys):
    toml = tmp_path / "inits.toml"
    toml.write_text('dataset = "synthetic"\nsteps = 20\neval_every = 10\nbatch_size = 32\nlevels = 1\n'
                    'controls = "none"\ninits = ["xavier_normal", "normal*2"]\nseeds = 1\n'
                    '[model_options]\nhidden = [8]\n')
    assert main(["compare-inits", "--config", str(toml), "--no-progress", "--out", str(tmp_path / "o")]) == 0
    (summary_path,) = (tmp_path / "o").glob("compare-*/summary.json")
    assert json.loads(summary_path.read_text())["inits"] == ["xavier_normal", "normal*2"]
    capsys.readouterr()
    assert main(["compare-inits", *FLAGS, "--out", str(tmp_path)]) == 2
    assert "--inits" in capsys.readouterr().err


def test_a_long_variant_label_gets_its_own_line_and_the_columns_stay_aligned():
    long = "checkpoint:path=runs/some_source-0123456789/level_00/final.pt:exclude=fc13"
    scheme = {"label": long, "status": "diverged", "diverged_runs": [], "smallest_matching_density": None,
              "dense": {"test_accuracy": {"mean": None, "std": None}, "early_stop_step": {"mean": None, "std": None}},
              "match_tolerance_used": 0.01, "levels": []}
    short = {**scheme, "label": "zeros"}
    table = format_summary({"seeds": [0], "chance_accuracy": 0.1, "schemes": [short, scheme], "match_rule": "r"})
    rows = table.splitlines()
    assert rows[4] == long
    assert rows[5].index("diverged") == rows[3].index("diverged") == rows[1].index("status")


# -- summary.json: run paths relative to it; a moved copy reads its own runs; damage is one line ----------------
@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A finished comparison made from a working directory with a relative --out (as a user types it)."""
    root = tmp_path_factory.mktemp("cmp")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        summary = compare_inits(tiny(root, **FAST).replace(out="runs"), "xavier_normal", seeds=1, plots=False,
                                log=None)
    finally:
        os.chdir(cwd)
    return root, root / summary["comparison_dir"]


def _set_accuracy(run_dir, value):
    path = run_dir / "results.json"
    results = json.loads(path.read_text())
    results["levels"][0]["test_accuracy"] = value
    path.write_text(json.dumps(results))


def test_a_moved_comparison_reads_its_own_runs_from_any_directory(compared, tmp_path, monkeypatch):
    import lottery as lt

    root, compare_dir = compared
    copy = tmp_path / "elsewhere" / "runs"
    shutil.copytree(root / "runs", copy)
    (run,) = [p for p in copy.iterdir() if (p / "config.json").is_file()]
    _set_accuracy(run, 0.123)  # the copy's own measurement, unlike the original's
    monkeypatch.chdir(tmp_path)
    df = lt.load_results(copy / compare_dir.name)
    assert df[(df.level == 0) & (df.arm == "ticket")].test_accuracy.tolist() == [0.123]
    stored = json.loads((compare_dir / "summary.json").read_text())
    assert not any(os.path.isabs(r["run_dir"]) for s in stored["schemes"] for r in s["runs"])
    assert main(["report", str(copy / compare_dir.name)]) == 0
    from lottery.analysis.overlap import overlap_across_schemes

    assert overlap_across_schemes(copy / compare_dir.name, level=1).labels == ["xavier_normal"]


def test_an_old_summary_with_absolute_run_paths_still_reads(compared, tmp_path):
    import lottery as lt

    root, compare_dir = compared
    old = tmp_path / "old"
    shutil.copytree(compare_dir, old)
    stored = json.loads((old / "summary.json").read_text())
    stored.pop("run_dir_base")
    for s in stored["schemes"]:
        for r in s["runs"]:
            r["run_dir"] = str((compare_dir / r["run_dir"]).resolve())
    (old / "summary.json").write_text(json.dumps(stored))
    assert len(lt.load_results(old)) == 4  # dense; level 1 ticket, reinit, random mask: the original run


@pytest.mark.parametrize("damage", [
    lambda s: s.update(schemes=[5]), lambda s: s.update(schemes="x"), lambda s: s["schemes"][0].pop("runs"),
    lambda s: s["schemes"][0]["runs"][0].update(run_dir=3), lambda s: s["schemes"][0].update(label=None),
    lambda s: s.update(chance_accuracy=7.0), lambda s: s.pop("seeds"),
], ids=["scheme-not-dict", "schemes-str", "no-runs", "run-dir-int", "label-none", "chance>1", "no-seeds"])
def test_a_damaged_summary_is_one_line_everywhere(compared, tmp_path, capsys, damage):
    import lottery as lt
    from lottery.errors import CorruptFileError

    root, compare_dir = compared
    bad = tmp_path / "bad"
    shutil.copytree(compare_dir, bad)
    stored = json.loads((bad / "summary.json").read_text())
    damage(stored)
    (bad / "summary.json").write_text(json.dumps(stored))
    with pytest.raises(CorruptFileError, match="summary.json is not a compare-inits summary"):
        lt.load_results(bad)
    for argv in (["report", str(bad), "--csv", str(tmp_path / "t.csv")], ["report", str(bad)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "summary.json" in err and "Traceback" not in err, err
