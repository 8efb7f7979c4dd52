"""The experiment session: a driver written on it shares init.pt with IMP, trains through the one verified loop,
and holds the run's lock."""
import pytest
import torch

import lottery as lt
from lottery.errors import RewindCheckError
from lottery.storage.rundir import RunDir, RunLockedError
from tests.engine_helpers import tiny


def test_a_driver_on_the_session_matches_imp_level_zero_and_holds_the_lock(tmp_path):
    cfg = tiny(tmp_path, levels=0, controls=(), fused=False)
    imp = lt.run_imp(cfg)
    run = RunDir.for_config(cfg)
    with run:
        session = lt.Session(cfg, run)
        assert torch.equal(session.init_state["fc1.weight"], run.load_state("init.pt")["fc1.weight"])  # reused
        dense = session.train_from(session.init_state, lt.Mask.ones_like(session.model), "dense")
        assert dense.summary()["test_accuracy"] == imp["levels"][0]["test_accuracy"]  # the same loop, same numbers
        with pytest.raises(RunLockedError, match="in use"):
            with RunDir.for_config(cfg):
                pass
        fresh = session.fresh_init(seed=7)
        assert not torch.equal(fresh["fc1.weight"], session.init_state["fc1.weight"])
        assert session.rewind_state(0) is session.init_state


def test_train_from_refuses_a_start_that_breaks_the_mask(tmp_path):
    cfg = tiny(tmp_path, levels=0, controls=())
    run = RunDir.for_config(cfg)
    with run:
        session = lt.Session(cfg, run)
        mask = lt.prune_random(lt.Mask.ones_like(session.model), 0.5, seed=0)
        session.train_from(session.init_state, mask, "masked")  # verified rewind, then zeros checked after
        params = dict(session.model.named_parameters())
        assert all(int(torch.count_nonzero(params[k][~m])) == 0 for k, m in mask.items())
        with pytest.raises(RewindCheckError):
            lt.verify_rewind(session.model, session.init_state, mask)  # trained weights are not the init


def test_a_pruned_weight_that_training_revived_is_caught(tmp_path, monkeypatch):
    """The check after training does not trust the trainer: a loop that leaves a pruned weight non-zero (a
    gradient not masked) stops the driver with the run named, before anything is recorded."""
    import lottery.session as session_module

    real = session_module.train

    def leaky(model, data, cfg, mask=None, **kw):
        result = real(model, data, cfg, mask, **kw)
        with torch.no_grad():
            model.fc1.weight[~mask["fc1.weight"]] = 0.5
        return result

    monkeypatch.setattr(session_module, "train", leaky)
    cfg = tiny(tmp_path, levels=0, controls=())
    with RunDir.for_config(cfg) as run:
        session = lt.Session(cfg, run)
        mask = lt.prune_random(lt.Mask.ones_like(session.model), 0.5, seed=0)
        with pytest.raises(RewindCheckError, match="masked: a pruned weight became non-zero"):
            session.train_from(session.init_state, mask, "masked")
