"""Every notebook in notebooks/ executes top to bottom (nbclient, a kernel of this interpreter). The docs build
(tests/test_docs.py, slow) executes those the site shows, failing on any cell's error; this file executes the rest
and checks the one notebook that reads a given run."""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("mkdocs", reason='the notebooks run through the docs hook: pip install -e ".[dev]"')

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("docs_hook_notebooks", ROOT / "docs" / "hooks" / "notebooks.py")
hook = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hook)
NOT_IN_DOCS = [p for p in NOTEBOOKS if p.name in hook.NOT_IN_DOCS]


def errors(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOT_IN_DOCS, ids=[p.name for p in NOT_IN_DOCS])
def test_notebook_outside_the_docs_executes(path, tmp_path):
    assert not errors(hook.execute(path, tmp_path, env={"MPLBACKEND": "Agg"}))


def test_every_notebook_is_executed_somewhere():
    expected = {"inspect_winning_tickets.ipynb", "initialization.ipynb", "find_tickets.ipynb", "demo.ipynb"}
    assert expected <= {p.name for p in NOTEBOOKS}
    in_docs = [p for p in NOTEBOOKS if p not in NOT_IN_DOCS]
    assert len(in_docs) >= 3 and NOT_IN_DOCS  # the docs build runs the first, this file the second


@pytest.mark.slow
def test_inspect_notebook_reads_a_find_tickets_run(tmp_path):
    import lottery as lt
    from tests.ticket_helpers import Loop, make_model

    results = lt.find_tickets(make_model(), Loop(), out=str(tmp_path / "runs"), levels=2, progress=False)
    nb = hook.execute(ROOT / "notebooks" / "inspect_winning_tickets.ipynb", tmp_path,
                      env={"MPLBACKEND": "Agg", "LOTTERY_RUN_DIR": results["run_dir"]})
    assert not errors(nb)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"{results['run_dir']}: Net on None" in printed  # it read the given run rather than making one
