"""mkdocs hook: the notebooks in ``notebooks/`` appear in the site executed, with their tables and plots, so a reader
sees what they show without running anything. Each runs top to bottom in a fresh kernel of this interpreter, in a
temp directory (its runs go there, not into the repository), with one thread; an error in a cell fails the build.
The executed copies are cached under ``.cache/notebooks/`` by the notebook's and the package's source, so a
rebuild without changes runs nothing. mkdocs-jupyter then renders them (it does not execute them again)."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbclient
import nbformat
from jupyter_client.manager import KernelManager
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
NOT_IN_DOCS = {"demo.ipynb"}  # interactive: it needs a live kernel (`lottery demo`); docs/demo.md shows it instead
CACHE = ROOT / ".cache" / "notebooks"


def execute(path: Path, workdir: Path, env: dict | None = None, timeout: int = 600):
    """Run ``path`` in ``workdir`` in a fresh kernel started with this interpreter (not whatever `python` a
    kernelspec names), importing this checkout's package; return the executed notebook."""
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3")
    km.kernel_spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    inherited = {k: v for k, v in os.environ.items() if k != "LOTTERY_RUN_DIR"}  # notebooks make their own run
    env = {**inherited, "OMP_NUM_THREADS": "1", **(env or {}),  # small models on a shared CPU: no contention
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    client = nbclient.NotebookClient(nb, km=km, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute(env=env)
    finally:  # nbclient leaves a kernel it was handed running: stop it, or it lives until this process ends
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return nb


def _source_key(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes())
    for source in sorted((ROOT / "lottery").rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def executed(path: Path) -> Path:
    """The folder holding ``notebooks/NAME.ipynb`` executed: from the cache, or run now and cached."""
    folder = CACHE / f"{path.stem}-{_source_key(path)}"
    target = folder / "notebooks" / path.name
    if not target.exists():
        with tempfile.TemporaryDirectory() as workdir:
            nb = execute(path, Path(workdir))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        nbformat.write(nb, tmp)
        tmp.replace(target)
        for stale in CACHE.glob(f"{path.stem}-*"):  # copies run with older sources
            if stale != folder:
                shutil.rmtree(stale)
    return folder


@event_priority(50)  # before mkdocs-jupyter's on_files, which picks up the .ipynb pages
def on_files(files, config):
    paths = [p for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if p.name not in NOT_IN_DOCS]
    # one kernel per core at a time (each runs one thread): the notebooks are independent, and on a cold cache
    # they are most of the build's time
    with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        folders = list(pool.map(executed, paths))
    for path, folder in zip(paths, folders):
        # a plain File (src_dir = the cache folder): mkdocs-jupyter's wrapper reads the path from src_dir
        files.append(File(f"notebooks/{path.name}", src_dir=str(folder), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files
