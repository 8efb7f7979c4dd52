"""find_tickets: IMP around the user's own model and loop — rewinds, controls, resume, run directory, bad input."""
import json
import math

import pytest
import torch
from torch import nn

import lottery as lt
from lottery.cli import main
from lottery.errors import ConfigError, LotteryError, MaskMismatchError
from lottery.storage.rundir import RunDir
from lottery.drivers.find_tickets import TrainFnError
from tests.engine_helpers import strip_times
from tests.ticket_helpers import Loop, make_model


def _find(tmp_path, loop, model=None, **kw):
    kw = {"out": str(tmp_path / "runs"), "levels": 2, "progress": False, **kw}
    return lt.find_tickets(model if model is not None else make_model(), loop, **kw)


def test_every_call_starts_from_the_init_under_the_stored_mask(tmp_path):
    loop, model = Loop(), make_model()
    init = lt.snapshot(model)
    results = _find(tmp_path, loop, model, levels=3, controls=())
    run = RunDir(results["run_dir"])
    assert [c["level"] for c in loop.calls] == [0, 1, 2, 3] and results["status"] == "complete"
    assert [round(e["density"], 2) for e in results["levels"]] == [1.0, 0.8, 0.64, 0.51]
    for call in loop.calls:
        mask = run.load_mask(call["level"])
        assert call["mask"] == mask
        for name, value in call["state"].items():
            expected = torch.where(mask[name], init[name], 0.0) if name in mask else init[name]
            assert torch.equal(value, expected), (call["level"], name)
    masks = [run.load_mask(level) for level in range(4)]
    assert all(masks[i + 1].is_subset_of(masks[i]) for i in range(3))
    for level in range(4):  # the trained ticket's weights, saved before the next rewind
        assert run.load_state(f"level_{level:02d}/final.pt").keys() == init.keys()
    assert all(torch.equal(v, init[k]) for k, v in model.state_dict().items())  # the model holds its init again
    entry = results["levels"][1]
    assert entry["final_loss"] > 0 and entry["early_stop_step"] == 30 and len(entry["curve"]) == 3  # user metrics


def test_controls_reinit_and_random_mask(tmp_path):
    loop = Loop()
    results = _find(tmp_path, loop)
    run = RunDir(results["run_dir"])
    init = run.load_state("init.pt")
    assert [(c["level"], c["arm"]) for c in loop.calls] == [
        (0, "ticket"), (1, "ticket"), (1, "reinit"), (1, "random_mask"), (2, "ticket"), (2, "reinit"),
        (2, "random_mask")]
    for level in (1, 2):
        ticket, reinit, random = loop.calls[3 * level - 2: 3 * level + 1]
        assert reinit["mask"] == ticket["mask"]
        assert not torch.equal(reinit["state"]["fc1.weight"], ticket["state"]["fc1.weight"])  # redrawn
        assert not torch.equal(reinit["state"]["fc1.bias"], init["fc1.bias"])  # reset_parameters redraws biases too
        assert random["mask"].layer_kept() == ticket["mask"].layer_kept() and random["mask"] != ticket["mask"]
        m = random["mask"]["fc1.weight"]
        assert torch.equal(random["state"]["fc1.weight"], torch.where(m, init["fc1.weight"], 0.0))
        assert set(results["levels"][level]["controls"]) == {"reinit", "random_mask"}
    again = _find(tmp_path / "b", Loop())  # the reinit draws are seeded: a second run repeats the numbers
    assert strip_times(again)["levels"] == strip_times(results)["levels"]


def test_reinit_callable_receives_a_derived_seed(tmp_path):
    seeds = []

    def reinit(model, seed):
        seeds.append(seed)
        for p in model.parameters():
            nn.init.normal_(p, std=0.1)

    _find(tmp_path, Loop(), reinit=reinit, controls=("reinit",))
    assert len(seeds) == 2 and seeds[0] != seeds[1]


def test_rewind_to_step_k_and_lr(tmp_path):
    loop = Loop(rewind_at=7)
    results = _find(tmp_path, loop, levels=1, controls=(), rewind="step:7")
    run = RunDir(results["run_dir"])
    state = run.load_state("rewind.pt")
    m = loop.calls[1]["mask"]["fc1.weight"]
    assert torch.equal(loop.calls[1]["state"]["fc1.weight"], torch.where(m, state["fc1.weight"], 0.0))
    assert not torch.equal(state["fc1.weight"], run.load_state("init.pt")["fc1.weight"])
    with pytest.raises(TrainFnError, match=r"call run.save_rewind_state\(model\) at step 5 of level 0"):
        _find(tmp_path, Loop(), levels=1, controls=(), rewind="step:5")
    loop = Loop()
    results = _find(tmp_path, loop, levels=1, controls=(), rewind="lr")
    final0 = RunDir(results["run_dir"]).load_state("level_00/final.pt")
    m = loop.calls[1]["mask"]["fc1.weight"]
    assert torch.equal(loop.calls[1]["state"]["fc1.weight"], torch.where(m, final0["fc1.weight"], 0.0))


def test_init_state_dict(tmp_path):
    other = lt.snapshot(make_model(seed=5))
    loop = Loop()
    _find(tmp_path, loop, levels=0, init=other)
    assert all(torch.equal(loop.calls[0]["state"][k], v) for k, v in other.items())
    with pytest.raises(ConfigError, match="init= does not fit the model"):
        _find(tmp_path, Loop(), init={"fc1.weight": torch.zeros(3)})


def test_a_crash_resumes_without_training_finished_work_again(tmp_path):
    reference = _find(tmp_path / "ref", Loop(), levels=3)
    loop = Loop()
    fail = {"armed": True}

    def flaky(model, mask, run):
        if run.level == 2 and fail["armed"]:
            fail["armed"] = False
            raise RuntimeError("out of memory")
        return loop(model, mask, run)

    model = make_model()
    with pytest.raises(RuntimeError, match="out of memory") as info:
        _find(tmp_path, flaky, model, levels=3)
    assert any("finished level(s) are saved" in n for n in info.value.__notes__)
    assert [(c["level"], c["arm"]) for c in loop.calls][-1] == (1, "random_mask")
    n_before = len(loop.calls)
    resumed = _find(tmp_path, flaky, model, levels=3)  # the same model object: it holds its init again
    assert {c["level"] for c in loop.calls[n_before:]} == {2, 3}
    assert strip_times(resumed)["levels"] == strip_times(reference)["levels"]
    n_done = len(loop.calls)
    assert strip_times(_find(tmp_path, flaky, make_model(), levels=3)) == strip_times(resumed)  # a new process
    assert len(loop.calls) == n_done  # nothing trained again


def test_the_hash_covers_settings_architecture_and_init(tmp_path):
    dirs = {
        "base": _find(tmp_path, Loop(), levels=0)["run_dir"],
        "same": _find(tmp_path, Loop(), levels=0)["run_dir"],
        "other init": _find(tmp_path, Loop(), make_model(seed=1), levels=0)["run_dir"],
        "wider": _find(tmp_path, Loop(), make_model(hidden=8), levels=0)["run_dir"],
        "other fraction": _find(tmp_path, Loop(), levels=0, prune_fraction=0.3)["run_dir"],
        "named": _find(tmp_path, Loop(), levels=0, name="mine")["run_dir"],
    }
    assert dirs["base"] == dirs["same"]
    assert len(set(dirs.values())) == 5
    assert "/mine-" in dirs["named"] and "/Net-" in dirs["base"]


@pytest.mark.parametrize("returned, message", [
    ({"loss": 0.3}, "returned no 'test_accuracy'"),
    ({"test_accuracy": math.nan}, "test_accuracy nan; it must be a fraction in"),
    ({"test_accuracy": 93.0}, "looks like a percentage"),
    ({"test_accuracy": torch.tensor(-0.1)}, "must be a fraction in"),
    (0.93, "returned float; return a dict"),
    ({"test_accuracy": 0.5, "density": 1.0}, "'density', a name find_tickets or lt.load_results sets itself"),
    ({"test_accuracy": 0.5, "net": object()}, "metric 'net' as object"),
    ({"test_accuracy": 0.5, "curve": [1, 2]}, "'curve' that is not a list of"),
    ({"test_accuracy": 0.5, "early_stop_step": -1}, "returned early_stop_step -1; return a step number >= 0"),
    ({"test_accuracy": 0.5, "steps": -1}, "returned steps -1; return a step number >= 0"),
    ({"test_accuracy": 0.5, "curve": [[0, 1.0, 45.0]]}, "'curve' val_accuracy 45.0; .* looks like a percentage"),
    ({"test_accuracy": 0.5, "curve": [[-5, 1.0, 0.5]]}, "'curve' step -5; steps are numbers >= 0"),
    ({"test_accuracy": 0.5, "signal": 0.7}, "'signal', a name find_tickets or lt.load_results sets itself"),
    ({"test_accuracy": 0.5, "arm": "x"}, "'arm', a name find_tickets or lt.load_results sets itself"),
    ({"test_accuracy": 0.5, "seed": 3}, "'seed', a name find_tickets or lt.load_results sets itself"),
    ({"test_accuracy": 0.5, "model": "mlp"}, "'model', a name find_tickets or lt.load_results sets itself"),
])
def test_bad_metrics_are_one_line_and_keep_finished_levels(tmp_path, returned, message):
    loop = Loop(steps=5)

    def train_fn(model, mask, run):
        out = loop(model, mask, run)
        return out if run.level == 0 else returned

    with pytest.raises(TrainFnError, match=message) as info:
        _find(tmp_path, train_fn, controls=())
    assert "\n" not in str(info.value) and str(info.value).startswith("level 1 ticket: ")
    stored = RunDir(next((tmp_path / "runs").iterdir())).load_results()
    assert [e["level"] for e in stored["levels"]] == [0]


def test_tensor_metrics_are_stored_as_numbers(tmp_path):
    def train_fn(model, mask, run):
        return {"test_accuracy": torch.tensor(0.75), "val_loss": torch.tensor(1.5), "top5": [0.9, math.inf]}

    entry = _find(tmp_path, train_fn, levels=0)["levels"][0]
    assert (entry["test_accuracy"], entry["val_loss"], entry["top5"]) == (0.75, 1.5, [0.9, None])


def test_a_loop_that_unmasks_weights_is_caught_naming_the_layer(tmp_path):
    def unmasking(model, mask, run):
        with torch.no_grad():
            model.fc2.weight.add_(1.0)  # every weight of fc2, pruned or not
        return {"test_accuracy": 0.5}

    with pytest.raises(TrainFnError, match=r"level 1 ticket: train_fn left \d+ pruned weights of 'fc2.weight'"):
        _find(tmp_path, unmasking, controls=(), scope="layer")


def test_diverged_ticket_stops_pruning(tmp_path):
    def exploding(model, mask, run):
        with torch.no_grad():
            model.fc1.weight.fill_(math.nan)
        return {"test_accuracy": 0.1}

    results = _find(tmp_path, exploding, levels=3)
    assert results["status"] == "diverged" and len(results["levels"]) == 1
    assert results["levels"][0]["status"] == "diverged"


def test_no_prunable_weights_and_bad_settings(tmp_path):
    with pytest.raises(MaskMismatchError, match="no prunable weights"):
        _find(tmp_path, Loop(), nn.Sequential(nn.ReLU(), nn.LayerNorm(4)))
    with pytest.raises(ConfigError, match="prune_fraction must be in"):
        _find(tmp_path, Loop(), prune_fraction=1.5)
    with pytest.raises(ConfigError, match="rewind must be init, lr or step:K"):
        _find(tmp_path, Loop(), rewind="step:x")
    with pytest.raises(ConfigError, match="unknown control 'shuffle'"):
        _find(tmp_path, Loop(), controls=("shuffle",))
    with pytest.raises(LotteryError, match="unknown tracker 'wandb'|tracker 'wandb'"):
        _find(tmp_path, Loop(), log="wandb")

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Module()
            self.inner.weight = nn.Parameter(torch.randn(3, 3))

    with pytest.raises(ConfigError, match="cannot redraw 'inner.weight'.*no reset_parameters"):
        _find(tmp_path, Loop(), Custom(), include=lambda n, p: n == "inner.weight")


def test_a_resumed_run_whose_model_no_longer_fits_its_masks(tmp_path):
    results = _find(tmp_path, Loop(), levels=1, controls=())
    # a directory holding another model's masks (copied over, or an edited architecture with the same hash)
    other = make_model(hidden=8)
    lt.Mask.ones_like(other).save(RunDir(results["run_dir"]).level_dir(1) / "mask.npz")
    with pytest.raises(MaskMismatchError, match=r"level_01/mask.npz does not fit this model .*pass the model this "
                                                r"run was started with"):
        _find(tmp_path, Loop(), levels=1, controls=())


def test_report_reads_a_find_tickets_run(tmp_path, capsys):
    results = _find(tmp_path, Loop(), levels=1)
    assert main(["report", results["run_dir"]]) == 0
    out = capsys.readouterr().out
    assert "status: complete" in out and "accuracy_vs_density.png" in out
    assert json.loads((tmp_path / results["run_dir"] / "config.json").read_text())["driver"] == "find_tickets"
    assert main(["export", results["run_dir"], "--level", "1"]) == 2  # needs a config to rebuild the model
    assert "made by find_tickets" in capsys.readouterr().err


def test_mask_gradients_keeps_pruned_weights_and_adam_state_at_zero():
    model = make_model()
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.5)
    mask.apply(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        model(torch.randn(8, 12)).sum().backward()
        lt.mask_gradients(model, mask)
        opt.step()
        opt.zero_grad()
    for name, p in model.named_parameters():
        if name in mask:
            assert torch.count_nonzero(p[~mask[name]]) == 0
            assert torch.count_nonzero(opt.state[p]["exp_avg"][~mask[name]]) == 0


def _subprocess_run(out, log, crash_at=None):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from lottery.testing import ENV

    env = {k: v for k, v in os.environ.items() if k != ENV}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    if crash_at:
        env[ENV] = crash_at
    code = f"from tests.ticket_helpers import run_logged; run_logged({str(out)!r}, {str(log)!r})"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same find_tickets run, uninterrupted (in this process: it must not matter)."""
    from tests.ticket_helpers import run_logged

    out = tmp_path_factory.mktemp("ref")
    run_logged(out / "runs", out / "calls.log")
    return json.loads(next((out / "runs").glob("*/results.json")).read_text())


# The kill points of the shared engine are all exercised through `lottery run` (tests/test_faults.py); these two
# check find_tickets' side: killed while saving a trained level's weights, and between pruning and saving a mask.
@pytest.mark.slow
@pytest.mark.parametrize("point", ["write:final.pt#2", "prune:level2"])
def test_sigkill_resumes_to_the_same_numbers_without_retraining_finished_work(tmp_path, point, uninterrupted):
    reference = uninterrupted
    killed = _subprocess_run(tmp_path / "out", tmp_path / "calls.log", crash_at=point)
    assert killed.returncode == -9, killed.stderr
    files = list((tmp_path / "out").glob("*/results.json"))
    done = {(e["level"], arm) for r in files for e in json.loads(r.read_text())["levels"]
            for arm in ["ticket", *e["controls"]]}
    before = (tmp_path / "calls.log").read_text().splitlines() if (tmp_path / "calls.log").exists() else []
    (tmp_path / "calls.log").write_text("")
    assert _subprocess_run(tmp_path / "out", tmp_path / "calls.log").returncode == 0
    after = {tuple(int(a) if a.isdigit() else a for a in line.split())
             for line in (tmp_path / "calls.log").read_text().splitlines()}
    assert not after & done and len(after | done) == 7, (before, done, after)
    resumed = json.loads(next((tmp_path / "out").glob("*/results.json")).read_text())
    assert strip_times(resumed) == strip_times(reference)  # bit for bit, wall times and the out path aside
