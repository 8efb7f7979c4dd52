"""The modular arithmetic data set (grokking's task): every pair once, the right answers, seeded splits, errors."""
import pytest
import torch

from lottery.data import load_dataset
from lottery.errors import ConfigError
from tests.test_cli import _one_line_error

P = 11


def all_samples(ds):
    x = torch.cat([ds.train[0], ds.val[0], ds.test[0]])
    y = torch.cat([ds.train[1], ds.val[1], ds.test[1]])
    return x.long(), y


@pytest.mark.parametrize("operation, answer", [
    ("+", lambda a, b: (a + b) % P), ("-", lambda a, b: (a - b) % P), ("*", lambda a, b: (a * b) % P),
    ("/", lambda a, b: (a * pow(b, -1, P)) % P),
])
def test_every_pair_once_with_its_answer(operation, answer):
    ds = load_dataset("modular_addition", p=P, operation=operation)
    x, y = all_samples(ds)
    pairs = {(int(a), int(b)) for a, b in x[:, [0, 2]]}
    assert len(pairs) == len(y) == (P * (P - 1) if operation == "/" else P * P)
    assert (x[:, 1] == P).all() and (x[:, 3] == P + 1).all()  # the operation and '=' tokens
    assert all(int(c) == answer(int(a), int(b)) for (a, _, b, _), c in zip(x.tolist(), y))
    assert ds.input_shape == (4,) and ds.num_classes == P and ds.train[0].dtype == torch.float32


def test_splits_are_seeded_and_disjoint():
    a = load_dataset("modular_addition", p=P, train_fraction=0.3)
    b = load_dataset("modular_addition", p=P, train_fraction=0.3)
    other = load_dataset("modular_addition", p=P, train_fraction=0.3, data_seed=1)
    for split in ("train", "val", "test"):
        assert all(torch.equal(u, v) for u, v in zip(getattr(a, split), getattr(b, split)))
    assert not torch.equal(a.test[0], other.test[0])
    train = {tuple(r) for r in torch.cat([a.train[0], a.val[0]]).long().tolist()}
    test = {tuple(r) for r in a.test[0].long().tolist()}
    assert not train & test and len(train) == round(0.3 * P * P)
    # load_dataset's seed moves pairs between train and val only, never into the test set
    moved = load_dataset("modular_addition", p=P, train_fraction=0.3, seed=1)
    assert torch.equal(moved.test[0], a.test[0]) and not torch.equal(moved.val[0], a.val[0])


@pytest.mark.parametrize("options, message", [
    ({"p": 1}, "p must be an integer >= 2"),
    ({"p": 9.5}, "p must be an integer >= 2"),
    ({"p": True}, "p must be an integer >= 2"),
    ({"train_fraction": 0}, "train_fraction must be a fraction in (0, 1)"),
    ({"train_fraction": 1.5}, "train_fraction must be a fraction in (0, 1)"),
    ({"operation": "^"}, "operation must be one of + - * /"),
    ({"p": 12, "operation": "/"}, "needs a prime p"),
])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")
                       .replace("*", r"\*")):
        load_dataset("modular_addition", **options)


def test_bad_option_on_the_command_line_exits_2(capsys, tmp_path):
    _one_line_error(capsys, ["run", "--dataset", "modular_addition", "--dataset-options", "p=1", "--model", "gpt",
                             "--no-progress", "--device", "cpu", "--out", str(tmp_path)], "p must be an integer >= 2")
