"""The demo's controls (ipywidgets): choose the init and the network, press Train, then slide the density.

``Demo().widget`` is what the notebook displays. Every callback is a plain method (``on_train``, ``on_compare``,
``on_density``), so tests drive the demo by setting widget values and clicking buttons without a browser. Plots
are PNG images in ``Image`` widgets (an ``<img>`` on the page); user errors and divergence go to the status line.
"""
from __future__ import annotations

import html

import ipywidgets as W

from lottery.demo import draw
from lottery.demo.data2d import DATASETS_2D
from lottery.demo.playground import Playground, Settings
from lottery.errors import LotteryError
from lottery.inits import INIT_SCHEMES
from lottery.models.common import ACTIVATIONS

NEEDS_A_FILE = ("checkpoint",)  # schemes the demo cannot offer: they load weights from a file
FULL_BATCH = 0  # the batch dropdown's value for "full batch" (Settings: None)
REDRAWS = 15  # live redraws per training run: enough to watch it move, few enough to stay cheap


class Demo:
    """The playground's widgets; ``defaults`` override the controls' initial values (e.g. ``depth=6``)."""

    def __init__(self, **defaults):
        d = vars(Settings(**defaults))  # unknown names and bad values fail here, as they would on Train
        if d["init_options"]:
            raise LotteryError("the demo has no control for init_options; set the init scale instead")
        style, wide = {"description_width": "100px"}, W.Layout(width="340px")
        self.dataset = W.Dropdown(options=sorted(DATASETS_2D), value=d["dataset"], description="data set",
                                  style=style, layout=wide)
        self.init = W.Dropdown(options=[s for s in sorted(INIT_SCHEMES) if s not in NEEDS_A_FILE], value=d["init"],
                               description="init scheme", style=style, layout=wide)
        self.scale = W.FloatLogSlider(value=d["scale"], base=10, min=-3, max=4, step=0.25, description="init scale",
                                      style=style, layout=wide)
        self.activation = W.Dropdown(options=list(ACTIVATIONS), value=d["activation"], description="activation",
                                     style=style, layout=wide)
        self.depth = W.IntSlider(value=d["depth"], min=1, max=16, description="hidden layers", style=style,
                                 layout=wide)
        self.width = W.IntSlider(value=d["width"], min=2, max=128, description="width", style=style, layout=wide)
        self.lr = W.FloatLogSlider(value=d["lr"], base=10, min=-3, max=0.5, step=0.25, description="learning rate",
                                   style=style, layout=wide)
        self.steps = W.IntSlider(value=d["steps"], min=20, max=2000, step=10, description="SGD steps", style=style,
                                 layout=wide)
        # 0 stands for the full batch: a Dropdown whose value is None shows nothing selected
        self.batch_size = W.Dropdown(options=[("full batch", FULL_BATCH), ("16", 16), ("32", 32), ("64", 64),
                                              ("128", 128)], value=d["batch_size"] or FULL_BATCH,
                                     description="batch", style=style, layout=wide)
        self.seed = W.IntText(value=d["seed"], description="seed", style=style, layout=wide)
        self.train_button = W.Button(description="Train", button_style="primary", icon="play")
        self.status = W.HTML("choose the settings and press <b>Train</b>").add_class("lottery-demo-status")
        self.plots = _image()
        self.density = W.FloatSlider(value=0.2, min=0.02, max=1.0, step=0.01, description="density",
                                     continuous_update=False, readout_format=".0%", style=style, layout=wide,
                                     disabled=True)
        self.compare_button = W.Button(description="Ticket vs random mask", disabled=True,
                                       layout=W.Layout(width="auto"))
        self.ticket_status = W.HTML("train first; then each density retrains a ticket and a random mask")
        self.ticket_plots = _image(max_width="900px")

        self.playground: Playground | None = None
        self.train_button.on_click(self.on_train)
        self.compare_button.on_click(self.on_compare)
        self.density.observe(self.on_density, names="value")
        # Layout for a browser window down to ~1280 px: the controls keep their width (every slider shows its
        # value), the plots take the rest and scale down with it, and below ~900 px the plots wrap under the controls.
        controls = W.VBox([self.dataset, self.init, self.scale, self.activation, self.depth, self.width, self.lr,
                           self.steps, self.batch_size, self.seed, self.train_button],
                          layout=W.Layout(flex="0 0 360px", width="360px"))
        results = W.VBox([self.status, self.plots], layout=W.Layout(flex="1 1 480px", min_width="0"))
        ticket_row = W.HBox([W.Box([self.density], layout=W.Layout(width="360px", flex="0 0 360px")),
                             self.compare_button], layout=W.Layout(flex_flow="row wrap", align_items="center"))
        self.widget = W.VBox([
            W.HBox([controls, results], layout=W.Layout(flex_flow="row wrap", width="100%")),
            W.HTML("<h3>Winning ticket or random mask?</h3>"),
            ticket_row, self.ticket_status, self.ticket_plots,
        ], layout=W.Layout(width="100%", max_width="1400px", overflow="hidden"))

    def settings(self) -> Settings:
        """The controls' values as checked ``Settings`` (``ConfigError`` for a value the demo cannot use)."""
        return Settings(dataset=self.dataset.value, init=self.init.value, scale=self.scale.value,
                        activation=self.activation.value, depth=self.depth.value, width=self.width.value,
                        lr=self.lr.value, steps=self.steps.value, batch_size=self.batch_size.value or None,
                        seed=self.seed.value)

    # -- callbacks ------------------------------------------------------------------------------------------------
    def on_train(self, _button=None) -> None:
        """Build a fresh net from the controls and train it, redrawing the plots as it goes."""
        self.train_button.disabled = self.compare_button.disabled = self.density.disabled = True
        try:
            self.playground = pg = Playground(self.settings())
            at_init = pg.layer_signal()
            _show(self.plots, draw.training_png(pg, at_init, None))
            self.status.value = "training..."
            for progress in pg.train(every=max(pg.settings.steps // REDRAWS, 1)):
                _show(self.plots, draw.training_png(pg, at_init, pg.layer_signal()))
                self.status.value = f"step {progress.step}/{pg.settings.steps}: loss {progress.loss:.4g}"
            if pg.status == "diverged":
                self.status.value = (f"<b>diverged</b> at step {len(pg.losses)}: the loss is no longer finite; "
                                     f"lower the init scale or the learning rate")
                return
            self.status.value = (f"<b>trained</b>: {pg.settings.steps} steps, final loss {pg.losses[-1]:.4g}, "
                                 f"test accuracy {pg.accuracy():.1%}{self._symmetry_note(pg)}")
            self.compare_button.disabled = self.density.disabled = False
            self.ticket_status.value = "move the density slider (or press the button) to compare"
        except LotteryError as e:
            self.status.value = f"<b>error</b>: {html.escape(str(e))}"
        finally:
            self.train_button.disabled = False

    def on_density(self, _change=None) -> None:
        if self.playground is not None and self.playground.status == "trained":
            self.on_compare()

    def on_compare(self, _button=None) -> None:
        """Find the ticket at the slider's density and train it next to a random mask of the same size."""
        density = self.density.value
        self.ticket_status.value = f"retraining a ticket and a random mask at {density:.0%} of the weights..."
        try:
            if self.playground is None:
                raise LotteryError("press Train first: a ticket is found by pruning the trained net")
            arms = self.playground.ticket(density)
        except LotteryError as e:
            self.ticket_status.value = f"<b>error</b>: {html.escape(str(e))}"
            return
        _show(self.ticket_plots, draw.tickets_png(self.playground, arms, density))
        t, r = arms["ticket"], arms["random"]
        self.ticket_status.value = (f"density {density:.0%}: ticket {_result(t)}, random mask {_result(r)} "
                                    f"(dense {self.playground.accuracy():.1%})")

    @staticmethod
    def _symmetry_note(pg: Playground) -> str:
        hidden = [v for k, v in pg.hidden_units().items()][:-1]  # the output layer's units differ by design
        if hidden and all(v["distinct"] == 1 for v in hidden):
            return " — every hidden unit is identical (the init never broke the symmetry)"
        return ""


def _image(max_width: str = "100%") -> W.Image:
    """A PNG that scales down to its column and is hidden until it holds a picture (an empty ``<img>`` shows a
    broken-image icon)."""
    return W.Image(format="png", layout=W.Layout(width="100%", max_width=max_width, height="auto", margin="0",
                                                 display="none"))  # margin 0: 100% plus a margin would overflow


def _show(image: W.Image, png: bytes) -> None:
    image.value = png
    image.layout.display = "block"


def _result(arm) -> str:
    return "diverged" if arm.status == "diverged" else f"{arm.accuracy:.1%}"
