"""The docs tell the truth about the repository: they cite nothing outside it, and the README's speed figures are
the ones benchmarks/RESULTS.md records."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tracked_text_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in out.splitlines():
        path = ROOT / name
        if path.is_file() and path.suffix in {".py", ".md", ".toml", ".ipynb", ".txt", ".cfg", ""}:
            yield path


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
