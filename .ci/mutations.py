"""Break each README guarantee on purpose and check that the quick tier (`pytest -m "not slow"`) fails.

Each mutation replaces one piece of source text in a temporary copy of the working tree (tracked and untracked,
not ignored, files), runs the quick tier there with ``-x`` and reports it *killed* (a test failed) or *survived*
(the quick tier passed with the guarantee broken: a hole to close). An unmutated copy runs first and must pass.

    python .ci/mutations.py                 # every mutation against the whole quick tier
    python .ci/mutations.py --hinted        # each against the quick tests named for it (minutes, not an hour)
    python .ci/mutations.py lock-not-taken  # the named ones only

Exit 0 when every mutation was killed, 1 when one survived, 2 on bad usage or a failing baseline.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    breaks: str  # the README guarantee it breaks
    path: str
    old: str  # must occur exactly once in ``path``
    new: str
    tests: tuple = ()  # quick tests expected to kill it (``--hinted``)


FUSED_TWINS = {"early-stop-last-step": "early-stop-fused", "lr-schedule-ignored": "lr-schedule-fused",
               "data-order-unseeded": "data-order-fused", "nonfinite-loss-ok": "nonfinite-loss-fused"}


def _with_fused_twins(*mutations: Mutation) -> list[Mutation]:
    """Each mutation of the bookkeeping that train and the fused trainer share (lottery/train.py: Record,
    Bookkeeping), and its twin: the same break, expected to be caught by the fused trainer's own tests too."""
    out = []
    for m in mutations:
        out += [m, replace(m, name=FUSED_TWINS[m.name], breaks=f"{m.breaks} (fused passes)",
                           tests=("tests/test_fused.py",))]
    return out


MUTATIONS = [
    Mutation("grad-mask-train", "gradients of pruned weights are masked (the step routine of every trainer)",
             "lottery/train.py", "torch._foreach_mul_([p.grad for p in masked], gates)", "[p.grad for p in masked]",
             ("tests/test_train.py",)),
    Mutation("grad-mask-fused", "gradients of pruned weights are masked (fused passes hand them to the step routine)",
             "lottery/fused.py", "update(optimizer, loss, [stack.params[n] for n in after], [gates[n] for n in after],",
             "update(optimizer, loss, [], [],", ("tests/test_fused.py",)),
    Mutation("grad-mask-api", "lt.mask_gradients zeroes the pruned weights' gradients", "lottery/masks.py",
             "torch._foreach_mul_([g for g, _ in pairs], [m.to(device=g.device, dtype=g.dtype) for g, m in pairs])",
             "pass", ("tests/test_tickets.py", "lottery/masks.py")),
    Mutation("pruned-check-off", "training under a mask is checked to leave pruned weights at zero",
             "lottery/contract.py", "        if n:\n", "        if False:\n",
             ("tests/test_session.py", "tests/test_contract.py")),
    Mutation("rewind-check-off", "every rewind is verified bit for bit", "lottery/rewind.py",
             "if not torch.equal(_bits(current[name]), _bits(ref)):", "if False:", ("tests/test_masks.py",)),
    Mutation("signed-magnitude", "magnitude pruning ranks |w|, not the signed value", "lottery/pruning/magnitude.py",
             "absolute=True)", "absolute=False)", ("tests/test_prune.py",)),
    Mutation("lock-follows-symlink", "a .lock symlink is refused, never followed", "lottery/storage/rundir.py",
             "os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK", "os.O_RDWR | os.O_CREAT | os.O_NONBLOCK",
             ("tests/test_hostile_files.py::test_a_lock_symlink_truncates_nothing_outside",)),
    Mutation("lock-not-taken", "a second process on a run in use is refused", "lottery/storage/rundir.py",
             "fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "pass", ("tests/test_session.py",)),
    Mutation("pickle-load", "tensors load with weights_only=True (a planted pickle never runs)",
             "lottery/storage/atomic.py", "weights_only=True)", "weights_only=False)",
             ("tests/test_storage.py",)),
    Mutation("write-in-place", "every file is written to a temp file and renamed", "lottery/storage/atomic.py",
             'fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")',
             "fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), str(path)",
             ("tests/test_storage.py",)),
    *_with_fused_twins(
        Mutation("early-stop-last-step", "early_stop_step is the step of minimum validation loss",
                 "lottery/train.py", "if val_loss < self.best[0] and step >= self.best_from:",
                 "if step >= self.best_from:", ("tests/test_train.py",)),
        Mutation("lr-schedule-ignored", "the lr schedule (warmup, step, cosine) is applied", "lottery/train.py",
                 'g["lr"] = base * factor', 'g["lr"] = base', ("tests/test_train.py",)),
        Mutation("data-order-unseeded", "the data order follows the seed", "lottery/train.py",
                 "self.orders = [torch.Generator().manual_seed(int(s)) for s in seeds]",
                 "self.orders = [torch.Generator().manual_seed(0) for s in seeds]", ("tests/test_train.py",)),
        Mutation("nonfinite-loss-ok", "a non-finite validation loss is recorded as diverged", "lottery/train.py",
                 "if not math.isfinite(val_loss):", "if False:", ("tests/test_train.py",)),
    ),
    Mutation("early-stop-late-eval", "early_stop_step is the step of minimum validation loss (not one later)",
             "lottery/train.py", "self.best, self.kept = (val_loss, step, val_acc), True",
             "self.best, self.kept = (val_loss, step + 1, val_acc), True", ("tests/test_train.py",)),
    Mutation("nonfinite-weights-ok", "non-finite weights at the end are recorded as diverged", "lottery/train.py",
             'if self.status == "ok" and not all(torch.isfinite(t).all() for t in tensors):', "if False:",
             ("tests/test_train.py",)),
    Mutation("data-root-unhashed", "--data-root is part of the run's hash", "lottery/config.py",
             'if not f.metadata["hashed"]:', 'if not f.metadata["hashed"] or f.name == "data_root":',
             ("tests/test_bad_input.py::test_the_hash_covers_the_data_root_and_dataset_options",)),
    Mutation("data-root-literal", "--data-root is hashed as its absolute path", "lottery/config.py",
             "value = str(Path(value).expanduser().resolve())", "value = str(value)", ("tests/test_bad_input.py::test_the_hash_covers_the_data_root_and_dataset_options",)),
]


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked + untracked, ignored files left out: no runs/, no caches)."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def run_quick_tier(repo: Path, tests: tuple, timeout: float) -> tuple[str, str, float]:
    """('passed' | 'failed' | 'timeout', the first failing test or the output tail, seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOTTERY_")}
    env.update(PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-m", "not slow", "-x", "-q", "-p", "no:cacheprovider", "-W",
           "ignore::pytest.PytestUnknownMarkWarning", *tests]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"no result after {timeout:.0f} s", time.monotonic() - start
    seconds = time.monotonic() - start
    if proc.returncode == 0:
        return "passed", "", seconds
    first = re.search(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)
    return "failed", first.group(1) if first else proc.stdout[-400:].strip(), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutations to apply (default: all)")
    parser.add_argument("--hinted", action="store_true", help="run only each mutation's named quick tests")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per quick-tier run")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTATIONS}
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:22} {m.path:30} breaks: {m.breaks}")
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"mutations.py: error: unknown mutation {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    chosen = [known[n] for n in args.names] or MUTATIONS

    with tempfile.TemporaryDirectory(prefix="lottery-mutations-") as tmp:
        repo = Path(tmp) / "repo"
        copy_tree(repo)
        for m in chosen:  # every mutation must still apply: a refactor that moves the text needs this file updated
            count = (repo / m.path).read_text().count(m.old)
            if count != 1:
                print(f"mutations.py: error: {m.name}: the text to mutate occurs {count} times in {m.path}; update "
                      "it to the current source", file=sys.stderr)
                return 2
        tests = lambda m: m.tests if args.hinted else ()  # noqa: E731
        baseline = sorted({t for m in chosen for t in tests(m)}) if args.hinted else []
        outcome, detail, seconds = run_quick_tier(repo, tuple(baseline), args.timeout)
        print(f"baseline (unmutated): {outcome} in {seconds:.0f} s {detail}", flush=True)
        if outcome != "passed":
            return 2
        survived = []
        for m in chosen:
            path = repo / m.path
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new))
            try:
                outcome, detail, seconds = run_quick_tier(repo, tests(m), args.timeout)
            finally:
                path.write_text(original)
            verdict = {"failed": "killed", "passed": "SURVIVED", "timeout": "killed (timeout)"}[outcome]
            print(f"{m.name:22} {verdict:16} {seconds:5.0f} s  {detail or m.breaks}", flush=True)
            if outcome == "passed":
                survived.append(m.name)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} mutations killed"
          + (f"; survived: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
