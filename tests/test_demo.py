"""The interactive demo without a browser: 2-D data, the playground's logic, and the widgets driven by their
callbacks (set values, click buttons) the way a user would."""
import math
from pathlib import Path

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

import lottery as lt
from lottery.cli import main
from lottery.demo.data2d import DATASETS_2D, make_2d
from lottery.demo.playground import Playground, Settings
from lottery.errors import ConfigError, LotteryError

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(depth=2, width=16, steps=100)  # trains in about a second; enough to separate the moons
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets: one thread is fastest, and a shared CPU's other threads would only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- data ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(DATASETS_2D))
def test_2d_datasets_are_balanced_seeded_and_centred(name):
    x, y = make_2d(name, 200, noise=0.1, seed=3)
    assert x.shape == (200, 2) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert int(y.sum()) == 100  # half of each class
    assert x.mean(0).abs().max() < 0.5 and 0.2 < float(x.abs().max()) < 3
    assert torch.equal(make_2d(name, 200, 0.1, seed=3)[0], x)
    assert not torch.equal(make_2d(name, 200, 0.1, seed=4)[0], x)


def test_2d_classes_differ_without_noise():
    """The two classes of each data set lie on different curves: no point is shared."""
    for name in DATASETS_2D:
        x, y = make_2d(name, 400, noise=0.0, seed=0)
        gap = torch.cdist(x[y == 0], x[y == 1]).min()
        assert gap > 0.05, name


def test_unknown_2d_dataset_names_the_known_ones():
    with pytest.raises(LotteryError) as e:
        make_2d("swiss_roll", 100)
    assert "\n" not in str(e.value) and all(n in str(e.value) for n in ("moons", "circles", "spiral"))


# -- bad settings: one clear line each -------------------------------------------------------------------------
@pytest.mark.parametrize("bad, words", [
    (dict(activation="gelu"), ("activation", "relu", "tanh")),
    (dict(depth=0), ("depth", "positive")),
    (dict(width=-4), ("width", "positive")),
    (dict(dataset="swiss_roll"), ("2-D data set", "moons")),
    (dict(init="he"), ("init scheme", "kaiming_normal")),
    (dict(lr=0.0), ("lr", "> 0")),
    (dict(scale=float("inf")), ("scale",)),
    (dict(batch_size=0), ("batch_size",)),
    (dict(momentum=1.0), ("momentum",)),
])
def test_bad_settings_fail_with_one_line(bad, words):
    with pytest.raises(LotteryError) as e:
        Settings(**bad)
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_bad_settings_are_config_errors():
    for bad in (dict(activation="gelu"), dict(depth=0), dict(width=-1)):
        with pytest.raises(ConfigError):
            Settings(**bad)


# -- the playground ------------------------------------------------------------------------------------------------
def test_layer_signal_matches_a_hand_computation():
    """One hidden ReLU layer: output stds and weight-gradient norms by explicit backprop, in float64."""
    pg = Playground(Settings(depth=1, width=5, n_samples=40, seed=1))
    signal = pg.layer_signal()
    assert [s.name for s in signal] == ["fc1", "fc2"]
    W1, b1, W2, b2 = (p.detach().double() for p in pg.model.parameters())
    x, y = pg.x.double(), pg.y
    z1 = x @ W1.T + b1
    a1 = z1.clamp(min=0)
    z2 = a1 @ W2.T + b2
    p = torch.exp(z2 - z2.logsumexp(1, keepdim=True))
    g2 = (p - torch.nn.functional.one_hot(y, 2).double()) / len(x)  # d(mean cross-entropy)/dz2
    dW2 = g2.T @ a1
    dW1 = ((g2 @ W2) * (z1 > 0)).T @ x

    def std(t):
        v = t.flatten()
        return math.sqrt(float(((v - v.mean()) ** 2).sum()) / (v.numel() - 1))

    assert signal[0].activation_std == pytest.approx(std(z1), rel=1e-5)
    assert signal[1].activation_std == pytest.approx(std(z2), rel=1e-5)
    assert signal[0].grad_norm == pytest.approx(float(dW1.norm()), rel=1e-4)
    assert signal[1].grad_norm == pytest.approx(float(dW2.norm()), rel=1e-4)
    assert all(p.grad is None for p in pg.model.parameters())  # measuring leaves no gradients behind
    assert not pg.model.fc1._forward_hooks  # nor hooks


def test_zeros_stays_flat_and_symmetric():
    pg = Playground(Settings(init="zeros", **SMALL))
    progress = list(pg.train(every=25))
    assert [p.step for p in progress] == [25, 50, 75, 100] and pg.status == "trained"
    assert max(pg.losses) - min(pg.losses) < 1e-4 and pg.losses[0] == pytest.approx(math.log(2), abs=1e-4)
    units = pg.hidden_units()
    assert units["fc1.weight"] == {"units": 16, "distinct": 1} and units["fc2.weight"]["distinct"] == 1
    assert all(s.grad_norm == 0 for s in pg.layer_signal()[:-1])  # no gradient reaches the hidden layers


def test_he_init_learns_the_moons():
    pg = Playground(Settings(init="kaiming_normal", **SMALL))
    for _ in pg.train():
        pass
    assert pg.status == "trained" and pg.losses[-1] < 0.5 * pg.losses[0]
    assert pg.accuracy() > 0.85  # chance is 0.5
    assert lt.symmetry_report(pg.model)["fc1.weight"]["distinct"] == 16


def test_tiny_init_on_a_deep_net_barely_learns():
    """N(0, 0.01) on six ReLU layers: the signal vanishes, SGD cannot get it going in this budget."""
    pg = Playground(Settings(init="normal", depth=6, width=16, steps=100))
    assert pg.layer_signal()[-1].activation_std < 1e-6
    for _ in pg.train():
        pass
    assert pg.status == "trained" and pg.accuracy() < 0.6


def test_too_large_init_is_reported_as_diverged():
    pg = Playground(Settings(init="normal", init_options={"std": 100.0}, depth=6, width=16, steps=100))
    progress = list(pg.train(every=10))
    assert pg.status == "diverged" and progress[-1].status == "diverged"
    assert progress[-1].step < 100 and not math.isfinite(pg.losses[-1])
    assert 0 <= pg.accuracy() <= 1  # a diverged net still evaluates (as one class), for the plots
    assert torch.isfinite(pg.boundary()[2]).all()


def test_minibatches_are_seeded():
    runs = []
    for _ in range(2):
        pg = Playground(Settings(batch_size=32, depth=1, width=8, steps=30))
        list(pg.train())
        runs.append(pg.losses)
    assert runs[0] == runs[1] and len(set(runs[0])) > 10


def test_boundary_covers_the_data():
    pg = Playground(Settings(**SMALL))
    xs, ys, p = pg.boundary(resolution=30)
    assert p.shape == (30, 30) and ((p >= 0) & (p <= 1)).all()
    assert xs[0] < pg.x[:, 0].min() and xs[-1] > pg.x[:, 0].max()
    assert ys[0] < pg.x[:, 1].min() and ys[-1] > pg.x[:, 1].max()


def test_ticket_and_random_mask_at_a_density():
    pg = Playground(Settings(**SMALL))
    with pytest.raises(ConfigError, match="train"):
        pg.ticket(0.2)
    list(pg.train())
    arms = pg.ticket(0.2)
    ticket, control = arms["ticket"], arms["random"]
    assert ticket.mask.density == pytest.approx(0.2, abs=0.005)
    assert ticket.mask.num_kept == control.mask.num_kept
    assert all(int(ticket.mask[k].sum()) == int(control.mask[k].sum()) for k in ticket.mask)  # same per layer
    assert ticket.mask.iou(control.mask) < 0.5
    for arm in (ticket, control):
        assert arm.status == "trained" and 0 <= arm.accuracy <= 1
        for name, kept in arm.mask.items():
            assert (dict(arm.model.named_parameters())[name][~kept] == 0).all()
    # the ticket's mask is the trained net's largest weights, globally
    weights = torch.cat([p.detach().abs().flatten() for n, p in pg.model.named_parameters() if n in ticket.mask])
    kept = torch.cat([ticket.mask[n].flatten() for n, p in pg.model.named_parameters() if n in ticket.mask])
    assert weights[kept].min() >= weights[~kept].max()
    # the random mask is IMP's control draw (a seed derived from the run's, not the init's own seed, whose draw
    # favoured the init's larger weights in the grokking study)
    from lottery.imp_levels import random_control

    assert control.mask == random_control(pg.model, ticket.mask, pg.settings.seed, 1)
    assert pg.ticket(0.2) is arms  # cached: moving the slider back costs nothing
    assert pg.ticket(1.0)["ticket"].mask.density == 1.0
    for bad in (0, 1.5, -0.1, "half"):
        with pytest.raises(ConfigError, match="density"):
            pg.ticket(bad)


# -- the widgets, driven like a user ------------------------------------------------------------------------
@pytest.mark.slow
def test_widgets_train_with_he_and_compare_tickets():
    from lottery.demo.widgets import Demo

    demo = Demo(**SMALL)
    assert demo.density.disabled and demo.plots.value == b""
    demo.init.value, demo.dataset.value = "kaiming_normal", "moons"
    demo.train_button.click()
    assert demo.status.value.startswith("<b>trained</b>"), demo.status.value
    assert demo.playground.accuracy() > 0.85
    assert bytes(demo.plots.value).startswith(PNG) and not demo.density.disabled and not demo.train_button.disabled
    demo.density.value = 0.1  # the slider's observer retrains ticket and random mask
    assert bytes(demo.ticket_plots.value).startswith(PNG)
    assert "density 10%: ticket" in demo.ticket_status.value and "random mask" in demo.ticket_status.value


def test_plots_are_hidden_until_there_is_a_picture():
    """An empty Image widget is an <img> with nothing to decode: the browser draws a broken-image icon."""
    from lottery.demo.widgets import Demo

    demo = Demo(**SMALL)
    assert demo.plots.layout.display == "none" and demo.ticket_plots.layout.display == "none"
    demo.train_button.click()
    assert demo.plots.layout.display == "block" and demo.ticket_plots.layout.display == "none"
    demo.compare_button.click()
    assert demo.ticket_plots.layout.display == "block"


def test_every_dropdown_shows_a_value():
    """A Dropdown whose value is None shows an empty box: full batch is a real option, None only in Settings."""
    from lottery.demo.widgets import Demo

    demo = Demo()
    for control in (demo.dataset, demo.init, demo.activation, demo.batch_size):
        assert control.value is not None and control.label, control.description
    assert demo.batch_size.label == "full batch" and demo.settings().batch_size is None
    demo.batch_size.value = 32
    assert demo.settings().batch_size == 32


def test_a_flat_loss_is_drawn_flat_at_chance():
    """No offset notation (``1e-6+6.9314e-1``) on the loss axis; the axis starts at 0 and a line marks ln C."""
    from lottery.demo import draw

    pg = Playground(Settings(init="normal", depth=6, width=8, steps=50))  # N(0, 0.01) on 6 ReLU layers: stuck
    list(pg.train(every=50))
    assert 0 < max(pg.losses) - min(pg.losses) < 1e-4  # flat, with the tiny wiggle an offset axis would magnify
    fig = draw.training_figure(pg, pg.layer_signal(), pg.layer_signal())
    FigureCanvasAgg(fig).draw()  # tick labels and the offset text exist once drawn
    loss = fig.axes[0]
    assert loss.yaxis.get_major_formatter().get_offset() == ""
    assert loss.get_yscale() == "linear" and loss.get_ylim()[0] == 0
    chance = [line for line in loss.lines if set(line.get_ydata()) == {math.log(2)}]
    assert chance, "no line at ln 2"
    assert all(float(t.get_text().replace("−", "-")) >= 0 for t in loss.get_yticklabels() if t.get_text())


@pytest.mark.slow
def test_widgets_zeros_stays_flat():
    from lottery.demo.widgets import Demo

    demo = Demo(**SMALL)
    demo.init.value = "zeros"
    demo.train_button.click()
    pg = demo.playground
    assert max(pg.losses) - min(pg.losses) < 1e-4
    assert "every hidden unit is identical" in demo.status.value


@pytest.mark.slow
def test_widgets_report_a_too_large_init_as_diverged():
    from lottery.demo.widgets import Demo

    demo = Demo(depth=6, width=16, steps=100)
    demo.init.value, demo.scale.value = "normal", 1e4  # N(0, 100^2)
    demo.train_button.click()  # no exception
    assert "diverged" in demo.status.value and "lower the init scale" in demo.status.value
    assert bytes(demo.plots.value).startswith(PNG)  # the curve up to the divergence is still drawn
    assert demo.density.disabled and not demo.train_button.disabled
    demo.on_compare()
    assert "error" in demo.ticket_status.value


def test_widgets_compare_before_training_is_an_error_line():
    from lottery.demo.widgets import Demo

    demo = Demo(**SMALL)
    demo.on_compare()
    assert demo.ticket_status.value.startswith("<b>error</b>: press Train first")


def test_demo_defaults_are_checked():
    from lottery.demo.widgets import Demo

    for bad in (dict(depth=0), dict(init_options={"std": 1.0})):
        with pytest.raises(LotteryError):
            Demo(**bad)
    with pytest.raises(TypeError):
        Demo(colour="red")


def test_widget_options_are_the_registries():
    from lottery.demo.widgets import Demo

    demo = Demo()
    assert set(demo.dataset.options) == set(DATASETS_2D)
    assert set(demo.init.options) == set(lt.INIT_SCHEMES) - {"checkpoint"}


# -- the notebook and `lottery demo` ------------------------------------------------------------------------------
def test_notebook_copies_are_identical():
    shipped = ROOT / "lottery" / "demo" / "demo.ipynb"
    assert (ROOT / "notebooks" / "demo.ipynb").read_bytes() == shipped.read_bytes(), \
        "edit lottery/demo/demo.ipynb and copy it to notebooks/demo.ipynb"


def test_served_notebook_ships_with_the_package():
    from lottery.demo.serve import NOTEBOOK

    assert NOTEBOOK.is_file() and NOTEBOOK.parent == Path(lt.__file__).parent / "demo"
    assert '"lottery.demo" = ["*.ipynb"]' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("port", ["0", "70000"])
def test_demo_refuses_a_bad_port(port, capsys):
    assert main(["demo", "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lottery: error: --port must be") and err.count("\n") == 1


def test_demo_is_listed_in_the_cli_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "demo" in out and "playground" in out


@pytest.mark.parametrize("batch_size", [None, 16])
def test_the_live_loop_is_the_projects_trainer_run_in_pieces(batch_size):
    """No optimizer loop of its own: training in pieces of `every` steps (a yield to the UI between them) ends
    with exactly the weights of one call of lottery.train.train with the same data, config and seed."""
    import copy
    import dataclasses

    from lottery.train import train

    pg = Playground(Settings(depth=2, width=8, steps=45, batch_size=batch_size))
    start = copy.deepcopy(pg.model)
    assert [p.step for p in pg.train(every=10)] == [10, 20, 30, 40, 45] and len(pg.losses) == 45
    result = train(start, pg._data, dataclasses.replace(pg._config, eval_every=1000), seed=pg.settings.seed)
    assert result.status == "ok"
    for (name, a), b in zip(start.named_parameters(), pg.model.parameters()):
        assert torch.equal(a, b), name
