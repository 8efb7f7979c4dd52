"""The trainer: pruned weights stay exactly zero (forward, backward, optimizer state), divergence is a result."""
import math

import pytest
import torch

import lottery as lt
from lottery.train import budget_steps, lr_factor, make_optimizer, train
from tests.engine_helpers import tiny


@pytest.fixture(scope="module")
def data():
    return lt.load_dataset("synthetic")


def _masked_model(data, fraction=0.6):
    model = lt.build_model("mlp", data.input_shape, data.num_classes, hidden=[32, 16])
    lt.init_weights(model, "xavier_normal", seed=0)
    mask = lt.prune_random(lt.Mask.ones_like(model), fraction, seed=1)
    mask.apply(model)
    return model, mask


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_pruned_weights_and_optimizer_state_stay_zero(tmp_path, data, optimizer):
    cfg = tiny(tmp_path, optimizer=optimizer, weight_decay=1e-3, momentum=0.9, steps=80)
    model, mask = _masked_model(data)
    params = dict(model.named_parameters())
    before = {k: params[k].detach().clone() for k in mask}
    opt = make_optimizer(model, cfg)
    result = train(model, data, cfg, mask, optimizer=opt)
    assert result.status == "ok"
    for k, m in mask.items():
        assert torch.count_nonzero(params[k][~m]) == 0, f"pruned weights of {k} resurrected"
        assert not torch.equal(params[k][m], before[k][m]), "kept weights did not train"
        for name, buf in opt.state[params[k]].items():
            if torch.is_tensor(buf) and buf.shape == m.shape:
                assert torch.count_nonzero(buf[~m]) == 0, f"{optimizer} state '{name}' of pruned {k} is non-zero"


def test_train_hands_the_optimizer_masked_gradients(tmp_path, data):
    """Backward gives pruned weights non-zero gradients; the gradients ``train`` leaves after its last step (the
    ones the optimizer used) are zero there and non-zero elsewhere. Re-applying the mask to the weights after
    each step instead would keep the weights at zero but let momentum and Adam moments build up."""
    model, mask = _masked_model(data)
    params = dict(model.named_parameters())
    x, y = data.train
    torch.nn.functional.cross_entropy(model(x[:16]), y[:16]).backward()
    assert all(torch.count_nonzero(params[k].grad[~m]) for k, m in mask.items())  # raw gradients reach them
    model.zero_grad(set_to_none=True)
    train(model, data, tiny(tmp_path, optimizer="sgd", momentum=0.0, steps=3), mask)
    for k, m in mask.items():
        assert torch.count_nonzero(params[k].grad[~m]) == 0, k
        assert torch.count_nonzero(params[k].grad[m]) > 0, k


def test_training_learns_and_reports_early_stop(tmp_path, data):
    cfg = tiny(tmp_path, steps=200, eval_every=25)
    model, mask = _masked_model(data, 0.2)
    result = train(model, data, cfg, mask)
    assert result.test_accuracy > 2.0 / data.num_classes
    steps = [c[0] for c in result.curve]
    assert steps == list(range(0, 201, 25))
    losses = {c[0]: c[1] for c in result.curve}
    assert result.early_stop_step == min(losses, key=losses.get)
    assert result.steps == 200


def test_same_seed_same_result(tmp_path, data):
    cfg = tiny(tmp_path)
    results = []
    for _ in range(2):
        model, mask = _masked_model(data)
        r = train(model, data, cfg, mask, seed=3)
        results.append((r.test_accuracy, r.curve, [p.detach().clone() for p in model.parameters()]))
    assert results[0][:2] == results[1][:2]
    assert all(torch.equal(a, b) for a, b in zip(results[0][2], results[1][2]))


def test_divergence_is_a_result_not_a_crash(tmp_path, data):
    cfg = tiny(tmp_path, optimizer="sgd", lr=1e8, momentum=0.0)
    model, mask = _masked_model(data)
    result = train(model, data, cfg, mask)
    assert result.status == "diverged"
    assert math.isnan(result.test_accuracy) and result.summary()["test_accuracy"] is None


def test_snapshot_at_step_k(tmp_path, data):
    cfg = tiny(tmp_path, steps=30)
    model, mask = _masked_model(data)
    init = lt.snapshot(model)
    result = train(model, data, cfg, mask, snapshot_step=10)
    state = result.rewind_state
    assert state is not None and not torch.equal(state["fc1.weight"], init["fc1.weight"])
    model2, _ = _masked_model(data)  # replaying 10 steps from the same init reaches the snapshot exactly
    train(model2, data, tiny(tmp_path, steps=10), mask)
    assert all(torch.equal(v, model2.state_dict()[k]) for k, v in state.items())


def test_schedule_and_budget(tmp_path):
    cfg = tiny(tmp_path, schedule="step", milestones=[10, 20], gamma=0.5, warmup_steps=4)
    assert [lr_factor(cfg, s, 30) for s in (0, 3, 9, 10, 25)] == [0.25, 1.0, 1.0, 0.5, 0.25]
    assert budget_steps(tiny(tmp_path, epochs=2, batch_size=100), 1000) == 20


def test_early_stop_is_the_step_of_least_validation_loss_not_the_last(tmp_path, data):
    """A rate high enough to overfit: the validation loss turns back up, so its minimum is before the end."""
    cfg = tiny(tmp_path, lr=0.05, steps=40, eval_every=4)
    model, mask = _masked_model(data)
    result = train(model, data, cfg, mask)
    losses = {step: loss for step, loss, _ in result.curve}
    assert result.early_stop_step == min(losses, key=losses.get) < result.steps
    assert result.early_stop_val_loss == losses[result.early_stop_step]


def test_the_learning_rate_follows_warmup_and_schedule_at_every_step(tmp_path, data):
    cfg = tiny(tmp_path, steps=30, warmup_steps=4, schedule="cosine")
    model, mask = _masked_model(data)
    seen = []  # the hook runs before each step's update: it sees the rate the previous update used
    train(model, data, cfg, mask, step_hook=lambda step, opt: seen.append(opt.param_groups[0]["lr"]))
    assert seen[1:] == [cfg.lr * lr_factor(cfg, s, 30) for s in range(30)]


def test_the_data_order_follows_the_seed(tmp_path, data):
    """From the same weights and mask (an MLP draws nothing else), the seed alone changes the batches."""
    cfg = tiny(tmp_path, steps=20)
    finals = {}
    for seed in (0, 1, 1):
        model, mask = _masked_model(data)
        train(model, data, cfg, mask, seed=seed)
        finals.setdefault(seed, []).append(model.fc1.weight.detach().clone())
    assert torch.equal(*finals[1]) and not torch.equal(finals[0][0], finals[1][0])


def test_a_non_finite_validation_loss_stops_the_run_as_diverged_at_that_evaluation(tmp_path, data):
    cfg = tiny(tmp_path, steps=40, eval_every=10)
    model, mask = _masked_model(data)
    with torch.no_grad():
        model.fc1.weight.mul_(1e30)  # finite weights whose logits overflow float32: the first loss is not finite
        model.fc2.weight.mul_(1e30)
    result = train(model, data, cfg, mask)
    assert result.status == "diverged" and result.steps == 0 and len(result.curve) == 1
    assert not math.isfinite(result.curve[0][1])


def test_non_finite_weights_at_the_end_are_diverged_even_with_a_finite_loss(tmp_path, data):
    model, mask = _masked_model(data)
    model.register_parameter("unused", torch.nn.Parameter(torch.tensor([math.nan])))  # never in the forward pass
    result = train(model, data, tiny(tmp_path, steps=10), mask)
    assert all(math.isfinite(loss) for _, loss, _ in result.curve)
    assert result.status == "diverged"


def test_one_optimizer_step_call_site_in_the_package():
    """One step routine (lottery.train.update) holds the order of a training step for one network and for K fused
    ones: a second `optimizer.step()` would be a second copy of that order, free to drift from the first."""
    import ast
    from pathlib import Path

    root = Path(lt.__file__).parent
    sites = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "step" \
                    and not node.args and not node.keywords:
                sites.append(f"{path.relative_to(root)}:{node.lineno}")
    assert len(sites) == 1 and sites[0].startswith("train.py:"), sites
    tree = ast.parse((root / "train.py").read_text())
    update = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "update")
    assert any(isinstance(n, ast.Attribute) and n.attr == "step" for n in ast.walk(update))
