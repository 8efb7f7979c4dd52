"""The CI helper scripts stay in step with the source: every mutation of .ci/mutations.py still applies (its text
occurs exactly once where it says), so a refactor cannot silently turn the guarantee check into a no-op — it
failed that way once, after train and the fused trainer came to share their bookkeeping."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ci_mutations", ROOT / ".ci" / "mutations.py")
mutations = importlib.util.module_from_spec(_spec)
sys.modules["ci_mutations"] = mutations  # its dataclasses look their module up there
_spec.loader.exec_module(mutations)


@pytest.mark.parametrize("mutation", mutations.MUTATIONS, ids=[m.name for m in mutations.MUTATIONS])
def test_every_mutation_still_applies_to_the_source(mutation):
    assert (ROOT / mutation.path).read_text().count(mutation.old) == 1, (mutation.name, mutation.path)
    for test in mutation.tests:
        assert (ROOT / test.split("::")[0]).is_file(), test


def test_the_mutations_cover_the_readme_guarantees():
    names = {m.name for m in mutations.MUTATIONS}
    assert len(names) == len(mutations.MUTATIONS) >= 22
    for needed in ("pickle-load", "write-in-place", "early-stop-last-step", "lr-schedule-ignored",
                   "data-order-unseeded", "nonfinite-loss-ok", "data-root-unhashed"):
        assert needed in names
