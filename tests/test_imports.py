"""The import graph: every module imports first in a fresh interpreter, no cycle even through imports inside
functions, few deferred imports of the package's own modules, no module over 450 lines."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    out = []
    for path in sorted((ROOT / "lottery").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":  # runs the command line when imported; it imports only lottery.cli
            continue
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_every_module_is_listed():
    mods = _modules()
    assert {"lottery", "lottery.pruning", "lottery.pruning.topk", "lottery.pruning.budgets", "lottery.cli"} <= set(mods)


def test_the_layout_groups_drivers_storage_and_reporting():
    groups = {"drivers": {"imp", "gradual", "prune_at_init", "stability", "supermask", "compare_inits", "find_tickets"},
              "executors": {"grid", "lockstep"},
              "storage": {"rundir", "atomic"}, "reporting": {"tables", "frames", "trackers", "progress"}}
    for package, modules in groups.items():
        assert modules <= {p.stem for p in (ROOT / "lottery" / package).glob("*.py")}, package
    assert not [p for p in (ROOT / "lottery").glob("*.py") if p.stem in set().union(*groups.values())]


_CHECK = """
import importlib, sys, traceback
failed = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "lottery" or m.startswith("lottery.")]:
        del sys.modules[loaded]  # torch and numpy stay cached: each module is imported first, in milliseconds
    try:
        importlib.import_module(name)
    except Exception as e:
        failed[name] = f"{type(e).__name__}: {e}"
print(repr(failed))
"""


@pytest.mark.slow
def test_each_module_imports_first():
    """In one fresh interpreter, each module in turn is imported with no other lottery module loaded: a cycle
    shows only when a module of the cycle is the first one imported, so import order cannot hide it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", _CHECK, *_modules()], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600, check=True).stdout
    assert out.strip().splitlines()[-1] == "{}", out


def test_public_pruning_names_come_from_the_package():
    import lottery as lt
    import lottery.pruning as pruning

    for n in ["PRUNERS", "prune_magnitude", "prune_random", "random_mask_like", "collapsed_layers", "prune_by_scores"]:
        assert getattr(lt, n) is getattr(pruning, n), n
    assert {"magnitude", "magnitude_init", "random", "snip", "grasp", "synflow"} <= set(pruning.PRUNERS)


_NO_PLOTS = """
import sys, tempfile
from pathlib import Path
import lottery, lottery.cli, lottery.drivers.imp, lottery.drivers.compare_inits, lottery.executors.grid, lottery.executors.lockstep
assert "matplotlib" not in sys.modules, "importing lottery loaded matplotlib"
assert "scipy.optimize" not in sys.modules, "importing lottery loaded scipy.optimize (0.3 s of every CLI start)"
from lottery.config import from_dict
out = Path(tempfile.mkdtemp())
base = from_dict(dict(dataset="synthetic", model_options={"hidden": [8]}, steps=20, eval_every=10, levels=1,
                      progress=False, device="cpu", out=str(out)))
for pack in (1, 2):  # one trunk after another, and in lockstep
    lottery.compare_inits(base.replace(pack=pack), "normal", 2, plots=False, log=None)
assert "matplotlib" not in sys.modules, "a compare-inits trunk loaded matplotlib"
print(sorted(p.name for p in out.rglob("*.png")))
"""


@pytest.mark.slow
def test_matplotlib_loads_only_to_plot():
    """``import lottery`` and the trunks of a comparison never import matplotlib (seconds of a grid worker's start)
    nor the CLI scipy's optimizer (transfer's weight matching imports it when it matches)
    and draw no per-run plots: the comparison draws its own, ``lottery report RUN`` a run's."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", _NO_PLOTS], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_no_compatibility_modules_and_no_stdlib_names():
    """0.3.0 dropped the 0.2.0 aliases; no top-level module shadows a standard-library module."""
    import sys
    top = {p.stem for p in (ROOT / "lottery").glob("*.py")}
    assert not top & {"_moved", "prune", "pruners_init", "prune_schedule"}
    assert not top & set(sys.stdlib_module_names), top & set(sys.stdlib_module_names)


# -- the import graph, read from the source: imports inside functions count ------------------------------------
ALLOWED_CYCLES: list[set] = []  # none: a cycle hides behind import order
MAX_DEFERRED = 25  # imports of lottery's own modules inside functions: for optional or slow dependencies only


def _module_files() -> dict[str, Path]:
    return {name: ROOT.joinpath(*name.split(".")).with_suffix(".py") if not (ROOT.joinpath(*name.split("."))
            / "__init__.py").is_file() else ROOT.joinpath(*name.split("."), "__init__.py") for name in _modules()}


def _imports(path: Path, known) -> list[tuple[str, bool]]:
    """(lottery module, inside a function?) for every import in ``path`` (``if TYPE_CHECKING:`` blocks skipped:
    they never run). ``from lottery.x import y`` names module ``lottery.x.y`` when there is one."""
    found = []

    def visit(node, deferred):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.extend((f"{child.module}.{a.name}" if f"{child.module}.{a.name}" in known else child.module,
                              inner) for a in child.names)
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return [(m, d) for m, d in found if m in known]


def _graph():
    files = _module_files()
    return {name: _imports(path, files) for name, path in files.items()}


def _cycles(graph) -> list[set[str]]:
    """Strongly connected components with more than one module (or a module importing itself): Tarjan's."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in {m for m, _ in graph[v]}:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in {m for m, _ in graph[v]}:
                out.append(component)

    for v in graph:
        if v not in index:
            connect(v)
    return out


def test_no_import_cycle_counting_imports_inside_functions():
    cycles = _cycles(_graph())
    assert [c for c in cycles if c not in ALLOWED_CYCLES] == [], cycles


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import():
    graph = {"a": [("b", False)], "b": [("c", True)], "c": [("a", True)], "d": [("a", False)]}
    assert _cycles(graph) == [{"a", "b", "c"}]
    assert _imports(ROOT / "lottery" / "init_variant.py", _module_files())  # it reads real files too


def test_few_deferred_imports_of_lotterys_own_modules():
    deferred = sorted(f"{name} -> {m}" for name, edges in _graph().items() for m, inner in edges if inner)
    assert len(deferred) <= MAX_DEFERRED, "\n".join(deferred)


def test_options_import_no_driver_and_the_engine_no_test_aid_but_its_crash_points():
    graph = _graph()
    assert not [m for m, _ in graph["lottery.options"] if m.startswith(("lottery.drivers", "lottery.executors"))]
    assert not [m for m, _ in graph["lottery.config"] if m.startswith(("lottery.drivers", "lottery.executors"))]


def test_no_module_over_450_lines():
    long = {str(p.relative_to(ROOT)) for p in (ROOT / "lottery").rglob("*.py") if len(p.read_text().splitlines()) > 450}
    assert not long, long
