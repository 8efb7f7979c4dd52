"""experiments/grokking.py's weight-norm control: a dense network whose init is rescaled to the ticket's norm."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import lottery as lt
from lottery.stats import paired_interval

_spec = importlib.util.spec_from_file_location("grokking", Path(__file__).parent.parent / "experiments/grokking.py")
grokking = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grokking)


def _lp(tensors, p):
    return float(sum(t.double().abs().pow(p).sum() for t in tensors) ** (1 / p))


@pytest.fixture(scope="module")
def model_and_init():
    data = lt.load_dataset("modular_addition", p=11, train_fraction=0.4)
    model = lt.build_model("gpt", data.input_shape, data.num_classes, **grokking.MODEL)
    return model, lt.snapshot(lt.init_weights(model, "gpt2", seed=0))


def _ticket(model, init, scope):
    """A magnitude mask of weights that are not the init (as a ticket's: ranked after training), at density 0.4."""
    gen = torch.Generator().manual_seed(1)
    model.load_state_dict({k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in init.items()})
    return lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.6, scope=scope)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("p", [2.0, 1.0])
def test_norm_matched_init_has_the_tickets_norm_and_no_sparsity(model_and_init, scope, p):
    model, init = model_and_init
    before = {k: v.clone() for k, v in init.items()}
    mask = _ticket(model, init, scope)
    start, factor = grokking.norm_matched(init, mask, p=p)
    ticket = lt.snapshot(lt.rewind(model, init, mask))  # the ticket's rewound init
    assert set(start) == set(init)
    assert 0 < factor < 1
    # the prunable weights, and so the whole network, have the ticket's Lp norm
    assert _lp((start[n] for n in mask), p) == pytest.approx(_lp((ticket[n] for n in mask), p), rel=1e-5)
    floats = [k for k, v in init.items() if v.is_floating_point()]
    assert _lp((start[k] for k in floats), p) == pytest.approx(_lp((ticket[k] for k in floats), p), rel=1e-5)
    # one factor for every prunable weight (directions and the layers' ratios kept), nothing pruned
    for name in mask:
        torch.testing.assert_close(start[name], init[name] * factor, rtol=1e-6, atol=0)
        assert torch.count_nonzero(start[name]) == torch.count_nonzero(init[name])
    # embeddings, LayerNorm and biases untouched; the init itself not modified
    for name in set(init) - set(mask):
        assert torch.equal(start[name], init[name]), name
    for name, value in init.items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("arm", ["random_mask", "random_layerwise"])
def test_random_controls_are_drawn_independently_of_the_init(seed, arm):
    """The study's random masks keep as much of the init's norm as independent random positions do (per layer:
    the kept fraction). Drawn from the init's own seed they kept its larger weights (0.79 of the norm at 40 %)."""
    data = lt.load_dataset("modular_addition", p=11, train_fraction=0.4)
    model = lt.build_model("gpt", data.input_shape, data.num_classes, **grokking.MODEL)
    init = lt.snapshot(lt.init_weights(model, "gpt2", seed=seed))
    gen = torch.Generator().manual_seed(100 + seed)
    trained = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in init.items()}
    mask = grokking.arm_mask(arm, model, {"final": trained, "memorised": trained}, init, 0.4, data, seed)
    assert mask.density == pytest.approx(0.4, abs=0.01)
    expected = (sum(mask.layer_density()[n] * init[n].double().pow(2).sum() for n in mask)
                / sum(init[n].double().pow(2).sum() for n in mask)) ** 0.5
    assert grokking.norm_matched(init, mask)[1] == pytest.approx(float(expected), abs=0.03)


def test_norm_arms_are_known_and_match_a_ticket():
    for arm, ticket in grokking.NORM_ARMS.items():
        assert arm in grokking.EXTRA_ARMS and ticket in grokking.ARMS + grokking.EXTRA_ARMS


def test_summary_counts_a_capped_run_as_its_cap_and_pairs_arms_by_seed(tmp_path):
    def run(reached, steps):
        return {"steps_to_95": reached, "steps": steps}

    dense, ticket, random = (1000, 800, 1200), (500, None, 600), (900, None, None)
    for seed in range(3):
        trunk = {"dense": run(dense[seed], dense[seed] + 200),
                 "ticket@0.4": run(ticket[seed], ticket[seed] or dense[seed]),
                 "random_mask@0.4": run(random[seed], random[seed] or dense[seed])}
        (tmp_path / f"seed{seed}-scale1.json").write_text(json.dumps(trunk))
    table = grokking.summary(tmp_path).splitlines()
    row = next(line for line in table if line.startswith("1      ticket@0.4"))
    assert row.endswith("500 / >800 / 600") and " 2/3 >" in row
    expected = paired_interval({0: 500, 1: 800, 2: 600}, dict(enumerate(dense)))
    assert f"{expected['mean']:.0f} [{expected['lo']:.0f}, {expected['hi']:.0f}]" in row
    pair = next(line for line in table if "ticket - random_mask" in line)
    expected = paired_interval({0: 500, 1: 800, 2: 600}, {0: 900, 1: 800, 2: 1200})
    assert f"{expected['mean']:.0f} [{expected['lo']:.0f}, {expected['hi']:.0f}]" in pair and pair.endswith("1 / 2")
