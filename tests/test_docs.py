"""The docs tell the truth about the repository: they cite nothing outside it, the README's figures are the ones the
results files record, their code examples run, the CLI reference lists every argument, and the site builds with
`mkdocs build --strict` (slow: it executes the notebooks)."""
import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lottery.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNNABLE = "<!-- runnable -->"


def _tracked_text_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in out.splitlines():
        path = ROOT / name
        if path.is_file() and path.suffix in {".py", ".md", ".toml", ".ipynb", ".txt", ".cfg", ".yml", ""}:
            yield path


def _hook(name: str):
    """A module of docs/hooks/ (they are mkdocs hooks, not a package)."""
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runnable_blocks(text: str) -> list[str]:
    """The ```python blocks right after a `<!-- runnable -->` line, in page order."""
    return re.findall(r"^" + re.escape(RUNNABLE) + r"\n```python\n(.*?)\n```", text, flags=re.S | re.M)


PAGES = sorted([ROOT / "README.md", *DOCS.glob("*.md")])
PAGES_WITH_EXAMPLES = [p for p in PAGES if runnable_blocks(p.read_text())]


def test_nothing_cites_the_outside_design_guide():
    word = "GUI" + "DE"  # spelled apart so this file does not match itself
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in _tracked_text_files()
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if word in line]
    assert not hits, hits


def test_readme_speed_figures_are_in_the_benchmark_results():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Speed (benchmarks/RESULTS.md")
    sentence = readme[start: readme.index("\n\n", start)]
    figures = re.findall(r"\d+\.\d+", sentence)
    assert len(figures) >= 3, sentence
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert all(f in results for f in figures), [f for f in figures if f not in results]


@pytest.mark.parametrize("page", ["README.md", "docs/results.md"])
def test_headline_results_are_the_measured_ones(page):
    """Every mean ± half-width, interval and percentage of the headline table is, digit for digit, in
    experiments/RESULTS.md (compared without spaces: the verdict tables print ``87.7±0.6`` and ``[+0.5,+1.3]``)."""
    text = (ROOT / page).read_text()
    table = [line for line in text.splitlines() if line.startswith("| ") and "±" in line]
    assert len(table) >= 3, page
    figures = re.findall(r"\d+\.\d+ ± \d+\.\d+|\[[+−-]?\d+\.\d+, [+−-]?\d+\.\d+\]|\d+\.\d+ %", "\n".join(table))
    results = (ROOT / "experiments" / "RESULTS.md").read_text().replace(" ", "")
    missing = [f for f in figures if f.replace(" ", "").replace("−", "-") not in results.replace("−", "-")]
    assert len(figures) >= 12 and not missing, missing


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for command in ('pip install -e . && lottery run', 'pip install -e ".[dev]" && python -m pytest'):
        assert command in readme
    assert "INSTALL_" not in readme  # the measured install times are filled in
    for link in re.findall(r"\]\(([^)#]+)", readme):  # every relative link leads to a file of the repository
        assert link.startswith("http") or (ROOT / link).exists(), link


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=[p.name for p in PAGES_WITH_EXAMPLES])
def test_code_examples_run(page, tmp_path, monkeypatch):
    """A page's runnable examples run top to bottom in one namespace, in an empty directory (runs land there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [page.name])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared CPU
    namespace = {"__name__": "__main__"}
    try:
        for i, block in enumerate(runnable_blocks(page.read_text())):
            exec(compile(block, f"{page.name}[example {i + 1}]", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)


def test_runnable_marks_are_on_python_blocks():
    """A `<!-- runnable -->` line that does not sit right above a ```python block would silently test nothing."""
    for page in PAGES:
        text = page.read_text()
        marks = sum(line == RUNNABLE for line in text.splitlines())
        assert marks == len(runnable_blocks(text)), page


def test_cli_reference_lists_every_argument():
    parser = build_parser()
    page = _hook("cli_reference").render(parser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert f"## `lottery {name}`" in page
        for action in command._actions:
            for flag in action.option_strings:
                assert flag in page or isinstance(action, argparse._HelpAction), (name, flag)
    assert "| `--prune-fraction PRUNE_FRACTION` | `prune_fraction` | fraction of the remaining weights" in page
    assert "runs/&lt;name&gt;-&lt;hash&gt;" in page  # <name> is text, not an HTML tag the browser swallows


def test_every_page_and_notebook_is_in_the_nav():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def leaves(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from leaves(item)
        elif isinstance(node, dict):
            for item in node.values():
                yield from leaves(item)

    nav = set(leaves(config["nav"]))
    pages = {p.name for p in DOCS.glob("*.md")}
    notebooks = {f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert pages <= nav, pages - nav
    assert notebooks - {"notebooks/demo.ipynb"} <= nav, notebooks - nav
    assert {"engine.md", "convnet.md", "structured.md", "transfer.md"} <= nav
    for entry in nav:
        assert (DOCS / entry).exists() or (ROOT / entry).exists(), entry


@pytest.mark.slow
def test_site_builds_strict_with_executed_notebooks(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_jupyter", "nbclient"):
        pytest.importorskip(module, reason='the docs site needs pip install -e ".[docs]"')
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-5000:]
    cli = (site / "cli" / "index.html").read_text()
    assert "--prune-fraction" in cli and "lottery compare-inits" in cli
    api = (site / "api" / "index.html").read_text()
    assert "prune_magnitude" in api and "find_tickets" in api
    for notebook in ("inspect_winning_tickets", "initialization"):  # executed: their plots are on the page
        page = (site / "notebooks" / notebook / "index.html").read_text()
        assert page.count("data:image/png;base64") >= 3, notebook
