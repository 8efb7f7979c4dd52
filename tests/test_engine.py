"""The one IMP engine under both entry points (``run_imp``, ``find_tickets``): damaged masks, careless train
functions, controls that start untrained, exhaustion, metrics checked when they are returned."""
import math

import pytest
import torch
from torch import nn

import lottery as lt
from lottery.cli import main
from lottery.drivers.find_tickets import TrainFnError
from lottery.storage.rundir import RunDir
from tests.engine_helpers import strip_times, tiny
from tests.ticket_helpers import Loop, make_model


def _find(tmp_path, loop, model=None, **kw):
    kw = {"out": str(tmp_path / "runs"), "levels": 2, "progress": False, **kw}
    return lt.find_tickets(model if model is not None else make_model(), loop, **kw)


def _imp(tmp_path):
    cfg = tiny(tmp_path, levels=2, controls=(), steps=20, eval_every=10)
    return lt.run_imp(cfg), RunDir(tmp_path / "runs" / cfg.run_name()), lambda: lt.run_imp(cfg)


def _tickets(tmp_path):
    loop = Loop(steps=10)
    results = _find(tmp_path, loop, controls=())
    return results, RunDir(results["run_dir"]), lambda: _find(tmp_path, loop, controls=())


# -- one engine, both entry points ----------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", [_imp, _tickets], ids=["run_imp", "find_tickets"])
def test_a_mask_keeping_the_wrong_number_of_weights_is_set_aside_and_recomputed(tmp_path, entry):
    results, run, again = entry(tmp_path)
    right = run.load_mask(1)
    run.load_mask(2).save(run.level_dir(1) / "mask.npz")  # a valid mask file, but another level's
    resumed = again()
    assert (run.level_dir(1) / "mask.npz.wrong").is_file()
    assert run.load_mask(1) == right
    assert strip_times(resumed)["levels"] == strip_times(results)["levels"]


def test_find_tickets_exhausts_as_run_imp_does(tmp_path):
    """A 20-8-3 net at 0.5 per level runs out of weights to prune long before 25 levels: status ``exhausted``."""
    model = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 3))

    def train_fn(model, mask, run):
        return {"test_accuracy": 0.5}

    results = _find(tmp_path, train_fn, model, levels=25, prune_fraction=0.5, scope="layer", controls=())
    assert results["status"] == "exhausted" and "would prune nothing" in results["exhausted"]
    kept = [e["num_kept"] for e in results["levels"]]
    assert kept[-1] == 2 and len(set(kept)) == len(kept) < 26  # no level that pruned nothing was trained
    collapsed = _find(tmp_path, train_fn, model, levels=25, prune_fraction=0.5, controls=())  # global: 0.weight empties
    assert collapsed["status"] == "exhausted" and "layer collapse" in collapsed["exhausted"]


# -- a train function that edits what it is given ------------------------------------------------------------------
def _writes_into_the_mask(model, mask, run):
    for t in mask.values():
        t.fill_(True)


def _replaces_a_parameter(model, mask, run):
    model.fc1.weight = nn.Parameter(torch.randn_like(model.fc1.weight))


def _swaps_a_submodule(model, mask, run):
    model.fc1 = nn.Linear(12, 16)


@pytest.mark.parametrize("edit", [_writes_into_the_mask, _replaces_a_parameter, _swaps_a_submodule])
def test_a_train_fn_that_unmasks_by_editing_what_it_was_given_is_caught(tmp_path, edit):
    loop = Loop(steps=5)

    def train_fn(model, mask, run):
        if run.level == 1:
            edit(model, mask, run)
        return loop(model, mask, run)

    with pytest.raises(TrainFnError, match=r"^level 1 ticket: train_fn left \d+ pruned weights of 'fc1.weight' "
                                           r"non-zero") as info:
        _find(tmp_path, train_fn, controls=())
    assert "\n" not in str(info.value)
    run = RunDir(next((tmp_path / "runs").iterdir()))
    assert [e["level"] for e in run.load_results()["levels"]] == [0]  # nothing recorded as ok
    assert run.load_mask(1).density == pytest.approx(0.8, abs=0.01)  # the driver's mask is untouched


class Scaled(nn.Module):
    """A hidden layer with a free per-unit scale that ``reset_parameters()`` does not redraw."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 3)
        self.scale = nn.Parameter(torch.ones(16))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)) * self.scale)


def test_the_reinit_control_starts_from_the_init_and_resumes_bit_identical(tmp_path):
    torch.manual_seed(0)
    reference_loop = Loop(steps=20)
    reference = _find(tmp_path / "ref", reference_loop, Scaled(), controls=("reinit",))
    for call in reference_loop.calls:
        if call["arm"] == "reinit":  # the ticket trained scale away from 1; the control starts untrained
            assert torch.equal(call["state"]["scale"], torch.ones(16))
    loop, armed = Loop(steps=20), {"on": True}

    def killed_before_reinit(model, mask, run):
        if run.arm == "reinit" and run.level == 2 and armed.pop("on", False):
            raise KeyboardInterrupt
        return loop(model, mask, run)

    torch.manual_seed(0)
    model = Scaled()
    with pytest.raises(KeyboardInterrupt):
        _find(tmp_path, killed_before_reinit, model, controls=("reinit",))
    resumed = _find(tmp_path, killed_before_reinit, model, controls=("reinit",))
    assert strip_times(resumed)["levels"] == strip_times(reference)["levels"]


# -- a train function that changes the model ------------------------------------------------------------------------
def _adds_a_module(model):
    model.extra = nn.Linear(3, 3)


def _doubles(model):
    model.double()


@pytest.mark.parametrize("change", [_adds_a_module, _doubles])
def test_a_train_fn_that_changes_the_model_and_raises_leaves_it_as_it_was(tmp_path, change):
    model = make_model()
    before = lt.snapshot(model)
    weight = model.fc1.weight

    def train_fn(model, mask, run):
        change(model)
        raise ValueError("the user's own error")

    with pytest.raises(ValueError) as info:
        _find(tmp_path, train_fn, model)
    assert str(info.value) == "the user's own error"  # unchanged (a note says how to resume)
    after = model.state_dict()
    assert after.keys() == before.keys() and not hasattr(model, "extra") and model.fc1.weight is weight
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("change, message", [(_adds_a_module, "'extra.weight' added"),
                                             (_doubles, "'fc1.weight' now torch.float64")])
def test_a_train_fn_that_changes_the_model_and_returns_is_refused(tmp_path, change, message):
    model = make_model()
    before = lt.snapshot(model)

    def train_fn(model, mask, run):
        change(model)
        return {"test_accuracy": 0.5}

    with pytest.raises(TrainFnError, match=f"^level 0 ticket: train_fn changed the model \\({message}"):
        _find(tmp_path, train_fn, model)
    assert not hasattr(model, "extra")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


# -- metrics, checked when they are returned ------------------------------------------------------------------------
def _diverging_curve(tmp_path):
    loop = Loop(steps=5)

    def train_fn(model, mask, run):
        out = loop(model, mask, run)
        if run.level == 1:
            out["curve"] = [[0, 1.1, 0.4], [10, math.nan, math.nan], [20, math.inf, 0.1]]
        return out

    return _find(tmp_path, train_fn, controls=())


def test_a_curve_from_a_diverged_run_is_recorded_as_diverged_and_stays_readable(tmp_path):
    results = _diverging_curve(tmp_path)
    assert results["status"] == "diverged" and results["levels"][1]["status"] == "diverged"
    assert len(results["levels"]) == 2  # pruning stops at a diverged ticket
    frame = lt.load_results(results["run_dir"])
    assert frame.status.tolist() == ["ok", "diverged"]


@pytest.mark.slow
def test_lottery_report_reads_a_find_tickets_run_with_a_diverged_curve(tmp_path, capsys):
    results = _diverging_curve(tmp_path)
    assert main(["report", results["run_dir"]]) == 0
    assert "status: diverged" in capsys.readouterr().out


# -- save_rewind_state ----------------------------------------------------------------------------------------------
def test_save_rewind_state_records_its_step_and_refuses_a_second_call(tmp_path):
    def saving(at_every_step=False, step=None):
        loop = Loop(steps=10)

        def train_fn(model, mask, run):
            if at_every_step:
                for _ in range(3):
                    run.save_rewind_state(model)
            else:
                run.save_rewind_state(model, step=step)
            return loop(model, mask, run)
        return train_fn

    results = _find(tmp_path / "a", saving(step=7), levels=1, controls=(), rewind="step:7")
    assert results["levels"][0]["rewind_state_step"] == 7
    with pytest.raises(TrainFnError, match=r"^level 0 ticket: run.save_rewind_state was called a second time in "
                                           r"one training run; call it once, at step 7$"):
        _find(tmp_path / "b", saving(at_every_step=True), levels=1, controls=(), rewind="step:7")
    with pytest.raises(TrainFnError, match=r"called at step 3, but rewind='step:7' keeps the weights of step 7"):
        _find(tmp_path / "c", saving(step=3), levels=1, controls=(), rewind="step:7")
