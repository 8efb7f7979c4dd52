"""Mask transfer driver: the reference row reproduces the source ticket bit for bit, rows and controls, resume,
damaged files, refusals, and the command line."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lottery as lt
from lottery.cli import main
from lottery.reporting.transfer_table import format_table
from lottery.drivers.transfer import (pooled_restored, random_accuracy, reference_row, restored,
                                      restored_interval, transfer_mask)
from lottery.errors import ConfigError, LotteryError
from lottery.imp_engine import random_control
from lottery.pruning import check_structure
from lottery.session import Session
from lottery.storage.rundir import RunDir
from tests.engine_helpers import tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 2-level IMP run (He init, random-mask control): the source of every transfer here. Tests copy it."""
    tmp = tmp_path_factory.mktemp("source")
    cfg = tiny(tmp, levels=2, controls=("random_mask",), init="kaiming_normal", steps=40)
    lt.run_imp(cfg)
    return tmp / "runs" / cfg.run_name()


@pytest.fixture
def run(source, tmp_path):
    return Path(shutil.copytree(source, tmp_path / source.name))


def _rows(stored):
    return {(r["init"], r["seed"], r["align"]): r for r in stored["rows"]}


def _without_times(stored):
    strip = lambda d: {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if k != "wall_time"}  # noqa
    return [strip(r) for r in stored["rows"]]


def test_reference_row_reproduces_the_source_ticket_and_its_control_bit_for_bit(run):
    stored = transfer_mask(run, 2, align=["none", "permute"], match="init")
    source = json.loads((run / "results.json").read_text())["levels"][2]
    rows = _rows(stored)
    ref = rows[("kaiming_normal", 0, "none")]
    assert ref["reference"] and ref["reproduces_source"] is True
    for key in ("test_accuracy", "early_stop_step", "test_loss", "steps"):
        assert ref[key] == source[key], key
    assert ref["controls"]["random_mask"]["test_accuracy"] == source["controls"]["random_mask"]["test_accuracy"]
    assert restored(ref, ref) == 1.0 and ref["density"] == pytest.approx(source["density"])
    # permute matched to the source's own init is the identity: the same start, the same numbers
    same = rows[("kaiming_normal", 0, "permute")]
    assert same["units_moved"] == 0 and same["match"] == "init" and same["test_accuracy"] == ref["test_accuracy"]
    assert json.loads((run / "transfer.json").read_text()) == json.loads(json.dumps(stored))


def test_rows_per_init_seed_and_alignment_with_their_controls(run, monkeypatch):
    drawn = []
    real = Session.fresh_init
    monkeypatch.setattr(Session, "fresh_init", lambda self, seed, cfg=None: drawn.append((cfg.init, seed)) or
                        real(self, seed, cfg))
    stored = transfer_mask(run, 1, inits="kaiming_normal,xavier_normal", seeds=2, align="none,sign,permute")
    rows = _rows(stored)
    assert len(rows) == 2 * 2 * 3  # the reference is the (kaiming_normal, 0, none) row
    assert sorted(set(drawn)) == [("kaiming_normal", 1), ("xavier_normal", 0), ("xavier_normal", 1)]
    assert all(r["status"] == "ok" and "random_mask" in r["controls"] for r in rows.values())
    assert rows[("kaiming_normal", 0, "sign")]["signs_changed"] == 0  # its own signs already
    assert 0.3 < rows[("kaiming_normal", 1, "sign")]["signs_changed"] < 0.7  # another draw: about half
    # He and Glorot scale one N(0, 1) draw: the same signs, and matching finds the units where they are
    assert rows[("xavier_normal", 0, "sign")]["signs_changed"] == 0
    assert rows[("xavier_normal", 0, "permute")]["units_moved"] < rows[("xavier_normal", 1, "permute")]["units_moved"]
    assert rows[("kaiming_normal", 1, "permute")]["match"] == "trained"
    table = format_table(stored, 1)
    assert "reproduces the source ticket bit for bit: yes" in table and "xavier_normal" in table


def test_restored_share_per_row_and_pooled_over_seeds():
    def row(init, acc, rnd, **k):
        return {"init": init, "test_accuracy": acc, "controls": {"random_mask": {"test_accuracy": rnd}}, **k}

    ref = row("he", 0.9, 0.7, reference=True)
    rows = [ref, row("he", 0.8, 0.6), row("he", 0.8, 0.8), row("glorot", 0.5, 0.1)]
    assert restored(rows[1], ref) == pytest.approx(1.0) and restored(rows[2], ref) == 0.0
    # pooled: He's random baseline is (0.7 + 0.6 + 0.8) / 3 = 0.7 for both the group and the reference
    assert pooled_restored(rows[1:3], rows, ref) == pytest.approx((0.8 - 0.7) / (0.9 - 0.7))
    assert pooled_restored(rows[3:], rows, ref) == pytest.approx((0.5 - 0.1) / (0.9 - 0.7))
    assert restored({"init": "he", "test_accuracy": 0.8, "controls": {}}, ref) is None
    assert pooled_restored(rows[1:3], rows, row("he", 0.6, 0.7)) is None  # the ticket does not beat random


def test_finished_rows_are_read_back_and_a_damaged_file_is_recomputed(run, monkeypatch, capsys):
    first = transfer_mask(run, 1, seeds=[1], align="none,sign")
    monkeypatch.setattr(Session, "train_from", lambda *a, **k: pytest.fail("a finished row was retrained"))
    again = transfer_mask(run, 1, seeds=[1], align="sign,none")
    assert again == first
    monkeypatch.undo()
    (run / "transfer.json").write_text('{"rows": [{"level": 1, "init": 3}]}')
    recomputed = transfer_mask(run, 1, seeds=[1], align="none,sign")
    assert "damaged" in capsys.readouterr().err and (run / "transfer.json.damaged").exists()
    assert _without_times(recomputed) == _without_times(first)  # deterministic: the same rows again


def test_fused_rows_match_them_one_at_a_time(run, tmp_path):
    other = Path(shutil.copytree(run, tmp_path / "other"))
    alone = _rows(transfer_mask(run, 1, seeds=[1], align="none,sign"))
    fused = _rows(transfer_mask(other, 1, seeds=[1], align="none,sign", pack=4))
    assert fused.keys() == alone.keys()
    ref = ("kaiming_normal", 0, "none")
    assert fused[ref]["test_accuracy"] == alone[ref]["test_accuracy"]  # the reference trains alone
    for k in alone:
        assert abs(fused[k]["test_accuracy"] - alone[k]["test_accuracy"]) <= 2 / 256 + 1e-12


def test_both_trained_matches_the_trained_target_once_per_target(run, monkeypatch):
    trained = []
    real = Session.train_from
    monkeypatch.setattr(Session, "train_from", lambda self, start, mask, desc, **k: trained.append(desc) or
                        real(self, start, mask, desc, **k))
    first = transfer_mask(run, 1, seeds=[0, 1], align="permute", match="both_trained", controls=False)
    assert [d for d in trained if "dense" in d] == ["transfer dense kaiming_normal_s1"]  # s0 is the source: level 0
    assert (run / "transfer_dense" / "kaiming_normal_s1.pt").is_file()
    assert 0 < first["dense"]["kaiming_normal s1"]["test_accuracy"] <= 1
    own = _rows(first)[("kaiming_normal", 0, "permute")]
    assert own["units_moved"] == 0 and own["test_accuracy"] == _rows(first)[("kaiming_normal", 0, "none")]["test_accuracy"]
    trained.clear()
    second = transfer_mask(run, 2, seeds=[1], align="permute", match="both_trained", controls=False)
    assert not [d for d in trained if "dense" in d]  # read back from transfer_dense/
    rows = {(r["level"], r["seed"]): r for r in second["rows"] if r["align"] == "permute"}
    assert rows[(1, 1)]["units_moved"] == rows[(2, 1)]["units_moved"] > 0.5  # one permutation per target


def test_refusals_are_one_line(run, tmp_path):
    cases = [
        (dict(level=0), "level 0 is the dense network"),
        (dict(level=5), "no finished level 5"),
        (dict(level=1, align="none,rotate"), "unknown alignment 'rotate'"),
        (dict(level=1, match="final"), "match must be one of"),
        (dict(level=1, inits="no_such_scheme"), "no_such_scheme"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LotteryError, match=message) as e:
            transfer_mask(run, **kwargs)
        assert "\n" not in str(e.value)
    late = tiny(tmp_path, levels=1, controls=(), rewind="step:10", steps=30)
    lt.run_imp(late)
    with pytest.raises(ConfigError, match="--rewind init"):
        transfer_mask(tmp_path / "runs" / late.run_name(), 1)
    conv = tiny(tmp_path, levels=1, controls=(), model="deep_conv", dataset="synthetic",
                dataset_options={"input_shape": [1, 8, 8]}, model_options={"depth": 2, "width": 4}, steps=20)
    lt.run_imp(conv)
    conv_run = tmp_path / "runs" / conv.run_name()
    with pytest.raises(ConfigError, match="plain chain of Linear layers"):
        transfer_mask(conv_run, 1, align="permute")
    assert not (conv_run / "transfer.json").exists() or not json.loads((conv_run / "transfer.json").read_text())["rows"]
    assert transfer_mask(conv_run, 1, align="none,sign")["rows"]  # the other alignments need no unit structure


@pytest.mark.slow  # ~10 s: the figures
def test_cli_prints_the_table_writes_the_figures_and_refuses_in_one_line(run, capsys):
    assert main(["transfer", str(run), "--level", "1", "--inits", "kaiming_normal,xavier_normal", "--seeds", "1",
                 "--align", "none,sign,permute", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "restored" in out and "xavier_normal" in out and "bit for bit: yes" in out
    for name in ("transfer_level_01.png", "transfer_accuracy.png"):
        assert (run / name).read_bytes().startswith(b"\x89PNG")
    assert main(["transfer", str(run), "--level", "1", "--align", "none", "--no-plot"]) == 0  # 'none' alone
    assert "kaiming_normal" in capsys.readouterr().out
    assert main(["transfer", str(run), "--level", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--level must be an integer >= 1" in err
    assert main(["transfer", str(run)]) == 2
    assert "--level N" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_transfer_resumes_to_the_same_rows(run, tmp_path):
    reference = _without_times(transfer_mask(Path(shutil.copytree(run, tmp_path / "ref")), 1, seeds=2,
                                             inits="kaiming_normal,xavier_normal", align="none,sign,permute"))
    argv = [sys.executable, "-m", "lottery", "transfer", str(run), "--level", "1", "--seeds", "2", "--inits",
            "kaiming_normal,xavier_normal", "--no-plot", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOTTERY_CRASH_AT": "write:transfer.json#4"}
    killed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    rows = json.loads((run / "transfer.json").read_text())["rows"]  # 3 runs written, the 4th killed:
    assert [bool(r["controls"]) for r in rows] == [True, False]  # a row whose control is still to train
    env.pop("LOTTERY_CRASH_AT")
    assert subprocess.run(argv, env=env, capture_output=True, timeout=300, cwd=ROOT).returncode == 0
    assert _without_times(json.loads((run / "transfer.json").read_text())) == reference
    assert not list(run.glob(".transfer.json.*.tmp"))


@pytest.mark.slow  # ~4 s: 14 short runs
def test_the_study_script_tables_several_sources(run, tmp_path):
    """experiments/mask_transfer.py: one line per (source, target scheme, draw, alignment), the same draw apart."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mask_transfer", ROOT / "experiments" / "mask_transfer.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    stored = transfer_mask(run, 1, inits="kaiming_normal,xavier_normal", seeds=2, align="none,sign")
    lines = study.draws_table([stored], 1).splitlines()
    assert lines[1].split()[:3] == ["kaiming_normal", "s0", "(own"]
    body = [line.split() for line in lines[2:]]
    assert [b[:3] for b in body] == [["kaiming_normal", "same", "sign"], ["kaiming_normal", "new", "none"],
                                     ["kaiming_normal", "new", "sign"], ["xavier_normal", "same", "none"],
                                     ["xavier_normal", "same", "sign"], ["xavier_normal", "new", "none"],
                                     ["xavier_normal", "new", "sign"]]
    assert all(b[3] == "1" for b in body)  # seeds 0, 1: one row each, the source's seed 0 its own ("same") line
    assert body[0][4].split("±")[0] == lines[1].split()[6]  # its own signs: the reference ticket again


def test_a_structured_sources_reference_control_is_the_engines_structured_draw(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, levels=1, controls=("random_mask",), structure="neuron", scope="layer", steps=40)
    lt.run_imp(cfg)
    run = tmp_path / "runs" / cfg.run_name()
    masks = []
    real = Session.train_many
    monkeypatch.setattr(Session, "train_many", lambda self, runs, done: masks.extend(m for _, m, *_ in runs) or
                        real(self, runs, done))
    stored = transfer_mask(run, 1, seeds=[0], align="none")
    source = json.loads((run / "results.json").read_text())["levels"][1]
    ref = _rows(stored)[(cfg.init, 0, "none")]
    for key in ("test_accuracy", "test_loss", "early_stop_step"):  # the source's control, bit for bit
        assert ref["controls"]["random_mask"][key] == source["controls"]["random_mask"][key], key
    session = Session(cfg, RunDir(run))
    check_structure(session.model, masks[-1], "neuron")  # whole units, as IMP's control keeps them
    want = random_control(session.model, RunDir(run).load_mask(1), cfg.seed, 1, "neuron")
    assert all(torch.equal(masks[-1][k].cpu(), want[k]) for k in want)


def test_rows_are_keyed_by_the_parsed_init_and_the_sources_own_draw_is_not_pooled(run, monkeypatch):
    drawn = []
    real = Session.fresh_init
    monkeypatch.setattr(Session, "fresh_init", lambda self, seed, cfg=None: drawn.append((cfg.init, seed)) or
                        real(self, seed, cfg))
    stored = transfer_mask(run, 1, inits="normal:std=0.05*2,normal:std=0.050*2.0,kaiming_normal", seeds=2,
                           align="none,sign", controls=False)
    labels = {r["init"] for r in stored["rows"]}
    assert labels == {"kaiming_normal", "normal:std=0.05*2"} and drawn.count(("normal", 1)) == 2  # none, sign
    rows = _rows(stored)
    own = rows[("kaiming_normal", 0, "sign")]
    assert own["same_draw"] and own["signs_changed"] == 0 and not rows[("kaiming_normal", 1, "sign")]["same_draw"]
    table = format_table(stored, 1)
    pooled = next(line for line in table.splitlines() if line.split()[:2] == ["kaiming_normal", "sign"])
    assert pooled.split()[2] == "1"  # seed 1 alone: seed 0's sign row is the source ticket again
    assert "sign (same draw)" in table and "the source's own draw under another alignment" in table


def test_several_control_draws_trained_signs_and_paired_restored_intervals(run):
    stored = transfer_mask(run, 1, seeds=3, align="none,trained_sign", control_draws=2)
    rows = _rows(stored)
    ref = rows[("kaiming_normal", 0, "none")]
    assert set(ref["controls"]) == {"random_mask", "random_mask_1"}
    assert ref["controls"]["random_mask"]["test_accuracy"] == json.loads(
        (run / "results.json").read_text())["levels"][1]["controls"]["random_mask"]["test_accuracy"]
    assert random_accuracy(ref) == pytest.approx(sum(c["test_accuracy"] for c in ref["controls"].values()) / 2)
    trained = rows[("kaiming_normal", 1, "trained_sign")]
    assert 0.2 < trained["signs_changed"] < 0.8
    assert 0 < rows[("kaiming_normal", 0, "trained_sign")]["signs_changed"] < 0.5  # training flips a few signs
    group = [rows[("kaiming_normal", s, "none")] for s in (1, 2)]
    share = restored_interval(group, ref)
    advantage = ref["test_accuracy"] - random_accuracy(ref)
    diffs = [r["test_accuracy"] - random_accuracy(r) for r in group]
    assert share["n"] == 2 and share["mean"] == pytest.approx(sum(diffs) / 2 / advantage)
    assert share["lo"] < share["mean"] < share["hi"]
    assert "restored [95 % interval]" in format_table(stored, 1) and "mean of 2 random" in format_table(stored, 1)


def test_both_trained_records_the_dense_barrier_before_and_after_matching(run):
    stored = transfer_mask(run, 1, seeds=[0, 1], align="permute", match="both_trained", controls=False)
    row = _rows(stored)[("kaiming_normal", 1, "permute")]
    assert 0 <= row["barrier_after"] <= 1 and row["barrier_before"] == stored["dense"]["kaiming_normal s1"][
        "barrier_before"]
    assert row["barrier_after"] < row["barrier_before"]  # aligned units lower the barrier between the two
    assert "barrier_before" not in _rows(stored)[("kaiming_normal", 0, "permute")]  # the source's own: no line
    assert " -> " in format_table(stored, 1)


def test_the_reference_trains_on_the_sources_thread_count_and_says_why_not_otherwise(run, monkeypatch):
    source = json.loads((run / "results.json").read_text())
    assert source["levels"][1]["threads"] == torch.get_num_threads()  # IMP records it with every level
    seen = []
    real = Session.train_from
    monkeypatch.setattr(Session, "train_from", lambda self, *a, **k: seen.append(torch.get_num_threads()) or
                        real(self, *a, **k))
    source["levels"][1]["threads"] = 2  # as if the source trained on 2 threads
    (run / "results.json").write_text(json.dumps(source))
    stored = transfer_mask(run, 1, seeds=[0], align="none", controls=False)
    ref = reference_row(stored, 1)
    assert seen == [2] and torch.get_num_threads() == 1 and ref["threads"] == 2 and ref["source_threads"] == 2
    old = {**ref, "reproduces_source": False, "source_threads": None, "threads": 1}
    stored["rows"] = [old]
    assert "did not record its thread count; the reference trained on 1 threads" in format_table(stored, 1)
