"""mutmut (pip install mutmut) over a few core modules, against the quick tier: the mutation score and the survivors.

Runs in a temporary copy of the working tree, so nothing here changes: mutmut's settings are written into the
copy's pyproject.toml and its ``mutants/`` folder lives in the copy.

    python .ci/mutmut_score.py                          # the default core modules and their quick tests
    python .ci/mutmut_score.py lottery/masks.py --tests tests/test_masks.py

Prints each survivor (``mutmut show`` of it) and a final line ``mutmut: K killed of N (score S %)``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutations import copy_tree  # noqa: E402  (a sibling script, not a package)

CORE = {  # module -> the quick tests that exercise it
    "lottery/masks.py": ["tests/test_masks.py", "tests/test_mask_properties.py"],
    "lottery/pruning/topk.py": ["tests/test_prune.py", "tests/test_pruning_budgets.py"],
    "lottery/rewind.py": ["tests/test_masks.py"],
    "lottery/storage/atomic.py": ["tests/test_storage.py", "tests/test_hostile_files.py"],
}


def _toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"modules to mutate (default: {', '.join(CORE)})")
    parser.add_argument("--tests", nargs="*", help="tests to run against them (default: those named in CORE)")
    parser.add_argument("--keep", help="copy the finished mutants/ folder here (for `mutmut browse`)")
    args = parser.parse_args(argv)
    modules = args.modules or list(CORE)
    unknown = [m for m in modules if m not in CORE and not args.tests]
    if unknown:
        print(f"mutmut_score.py: error: no tests known for {unknown}; pass --tests", file=sys.stderr)
        return 2
    tests = args.tests or sorted({t for m in modules for t in CORE[m]})

    with tempfile.TemporaryDirectory(prefix="lottery-mutmut-") as tmp:
        repo = Path(tmp) / "repo"
        copy_tree(repo)
        with open(repo / "pyproject.toml", "a") as f:
            f.write(f"""
[tool.mutmut]
source_paths = ["lottery"]
only_mutate = {_toml_list(modules)}
pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider", "-o", "addopts=--import-mode=importlib"]
pytest_add_cli_args_test_selection = {_toml_list(tests)}
process_isolation = "forkserver"
use_git_change_detection = false
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOTTERY_")}
        env["OMP_NUM_THREADS"] = "1"
        run = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", "1"], cwd=repo, env=env,
                             capture_output=True, text=True)
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-3000:], sep="\n", file=sys.stderr)
            return 2
        subprocess.run([sys.executable, "-m", "mutmut", "export-cicd-stats"], cwd=repo, env=env, check=True,
                       capture_output=True)
        stats = json.loads((repo / "mutants" / "mutmut-cicd-stats.json").read_text())
        listing = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=repo, env=env,
                                 capture_output=True, text=True).stdout
        for line in listing.splitlines():
            name = line.strip().split(":")[0]
            if line.strip().endswith("survived"):
                shown = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=repo, env=env,
                                       capture_output=True, text=True).stdout
                print(shown.strip(), "\n")
        if args.keep:
            subprocess.run(["cp", "-r", str(repo / "mutants"), args.keep], check=True)
    judged = stats["killed"] + stats["survived"] + stats["timeout"] + stats["suspicious"] + stats["segfault"]
    score = 100 * (judged - stats["survived"]) / judged if judged else 0.0
    print(f"mutmut: {judged - stats['survived']} killed of {judged} (score {score:.1f} %); "
          + ", ".join(f"{k} {v}" for k, v in stats.items() if v and k != "killed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
