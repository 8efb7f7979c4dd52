"""Test-suite settings: tiny models run fastest on one thread, and a busy machine makes thread pools crawl.

Figures: every test that writes plots builds them with the real plotting code on its own data, but only the tests
marked ``render`` (test_plots.py and one end-to-end run per kind of figure) pay for matplotlib's layout and PNG
encoding — about 0.4 s a figure, 2-3 s for each in-process ``lottery run``, which was a third of the quick tier.
Elsewhere ``Figure.tight_layout`` does nothing and ``Figure.savefig`` (and the Agg canvas's ``print_png``, which
the demo draws with) write a fixed 1x1 PNG: the file a test
looks for is still written (atomically, by the project's own code), and a plotting function that fails on a
test's data still fails the test."""
import io
import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the CLI / torchrun subprocesses the tests start
torch.set_num_threads(1)

# The PNG signature, a 1x1 RGBA IHDR, one IDAT holding a zlib-compressed transparent pixel, and IEND.
_STUB_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c636060606000000005000172a7b5e80000000049454e44ae426082")


def _stub_savefig(self, fname, *args, **kwargs):
    if hasattr(fname, "write"):
        fname.write(_STUB_PNG)
    else:
        with open(fname, "wb") as f:
            f.write(_STUB_PNG)


@pytest.fixture(autouse=True)
def _figures_built_not_rendered(request, monkeypatch):
    if request.node.get_closest_marker("render"):
        return  # (subprocesses a test starts render for real in any case: the patch is this process only)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", _stub_savefig)
    monkeypatch.setattr(FigureCanvasAgg, "print_png", lambda self, fname, *a, **k: _stub_savefig(None, fname))
    monkeypatch.setattr(Figure, "tight_layout", lambda self, *a, **k: None)
