"""Every notebook in notebooks/ executes top to bottom (nbclient, the python3 kernel of this interpreter)."""
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def execute(path: Path, workdir: Path, timeout: int = 600):
    """Run ``path`` in a fresh kernel started with this interpreter (not whatever `python` a kernelspec names)."""
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3")
    km.kernel_spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    client = nbclient.NotebookClient(nb, km=km, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # small models on a shared CPU: no thread-pool contention
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("LOTTERY_RUN_DIR", raising=False)  # notebooks make their own small run
    nb = execute(path, tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors


def test_every_notebook_is_collected():
    expected = {"inspect_winning_tickets.ipynb", "initialization.ipynb", "find_tickets.ipynb", "demo.ipynb"}
    assert expected <= {p.name for p in NOTEBOOKS}


@pytest.mark.slow
def test_inspect_notebook_reads_a_find_tickets_run(tmp_path, monkeypatch):
    import lottery as lt
    from tests.ticket_helpers import Loop, make_model

    results = lt.find_tickets(make_model(), Loop(), out=str(tmp_path / "runs"), levels=2, progress=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("LOTTERY_RUN_DIR", results["run_dir"])
    nb = execute(ROOT / "notebooks" / "inspect_winning_tickets.ipynb", tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"{results['run_dir']}: Net on None" in printed  # it read the given run rather than making one
