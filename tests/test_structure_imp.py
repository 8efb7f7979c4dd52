"""Structured IMP end to end: run_imp and find_tickets keep the structure at every level, in the ticket and its
random control, rewind as before, and an n:m run ends ``exhausted`` saying why."""
import pytest
import torch

import lottery as lt
from lottery.pruning import check_structure
from lottery.storage.rundir import RunDir
from tests.ticket_helpers import Loop, make_model

TINY = {"dataset": "synthetic", "model_options": {"hidden": [16, 8]}, "steps": 30, "eval_every": 10,
        "batch_size": 32, "levels": 2, "scope": "layer", "progress": False, "device": "cpu",
        "controls": ["random_mask"]}


def _model(cfg):
    data = lt.load_dataset(cfg.dataset)
    return lt.build_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_options)


@pytest.mark.slow
def test_run_imp_neuron_keeps_whole_units_in_ticket_and_control(tmp_path):
    results = lt.run_imp({**TINY, "structure": "neuron", "out": str(tmp_path)})
    run = RunDir(next(tmp_path.iterdir()))
    model = _model(run.config())
    assert results["status"] == "complete" and results["config"]["structure"] == "neuron"
    for level in (1, 2):
        mask = run.load_mask(level)
        check_structure(model, mask, "neuron")
        assert int(mask["fc1.weight"].any(1).sum()) == [16, 13, 10][level]
    assert [e["level"] for e in results["levels"]] == [0, 1, 2]
    assert all(e["controls"]["random_mask"]["status"] == "ok" for e in results["levels"][1:])


def test_run_imp_nm_ends_exhausted_saying_why(tmp_path):
    results = lt.run_imp({**TINY, "structure": "2:4", "levels": 5, "controls": [], "out": str(tmp_path)})
    assert results["status"] == "exhausted" and "below 2:4" in results["exhausted"]
    assert [round(e["density"], 3) for e in results["levels"]][:3] == [1.0, 0.75, 0.5]
    assert len(results["levels"]) == 3


def test_find_tickets_under_a_structure(tmp_path):
    loop = Loop()
    out = lt.find_tickets(make_model(), loop, out=str(tmp_path), levels=5, progress=False, structure="2:4",
                          controls=["random_mask"])
    assert out["status"] == "exhausted" and "below 2:4" in out["exhausted"]
    for call in loop.calls:
        check_structure(make_model(), call["mask"], "2:4")
    controls = [c["mask"] for c in loop.calls if c["arm"] == "random_mask"]
    tickets = {c["level"]: c["mask"] for c in loop.calls if c["arm"] == "ticket"}
    assert controls and all(m.layer_kept() == tickets[c["level"]].layer_kept()
                            for m, c in zip(controls, [c for c in loop.calls if c["arm"] == "random_mask"]))
    neuron = lt.find_tickets(make_model(), Loop(), out=str(tmp_path), levels=1, progress=False, structure="neuron",
                             structure_options={"norm": "l1"}, controls=[])
    assert neuron["run_dir"] != out["run_dir"] and neuron["levels"][1]["layer_density"]["fc1.weight"] == 13 / 16
    mask = RunDir(neuron["run_dir"]).load_mask(1)
    check_structure(make_model(), mask, "neuron")
    assert torch.equal(mask["fc2.weight"].any(0), mask["fc1.weight"].any(1))  # fc2 reads only kept units


def test_the_study_script_tables_each_structure_with_its_latency(tmp_path, capsys):
    """experiments/structured_tickets.py over one run per structure: a row per (structure, level) with weights kept,
    ticket and random-mask accuracy and the CPU latency of the network the ticket runs as (a neuron ticket's
    physical export is faster than the dense network it came from; a 2:4 ticket runs dense)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "structured_tickets", Path(__file__).resolve().parents[1] / "experiments" / "structured_tickets.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    wide = {**TINY, "model_options": {"hidden": [256, 128]}, "levels": 2, "out": str(tmp_path / "runs")}
    for structure in ("neuron", "2:4"):
        assert lt.run_imp({**wide, "structure": structure})["status"] == "complete"
    assert script.main([str(tmp_path / "runs"), "--batches", "64", "--seconds", "0.02",
                        "--figure", str(tmp_path / "f.png")]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| 2:4") or
            line.startswith("| neuron")]
    assert [(r[0], r[1]) for r in rows] == [("| 2:4", l) for l in "012"] + [("| neuron", l) for l in "012"]
    ms = {(r[0][2:], int(r[1])): float(r[-1].rstrip(" |")) for r in rows}
    assert ms[("2:4", 2)] == ms[("2:4", 0)] > 0  # the same dense network, timed once
    neuron_run = next(p.parent for p in (tmp_path / "runs").glob("*/results.json")
                      if RunDir(p.parent).config().structure == "neuron")
    sizes = [sum(t.numel() for t in script.network(neuron_run, level, "neuron")[0].parameters()) for level in (0, 2)]
    assert sizes[1] < 0.7 * sizes[0]  # what level 2 is timed as: the physical export, 64 % of the hidden units
    assert rows[3][4] != "-" and rows[4][5] != "-"  # ticket and random-mask accuracy filled in
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
