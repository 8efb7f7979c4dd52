"""The prepared GPU script runs here in its reduced CPU mode, so the script a GPU session runs is known to work."""
import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_smoke_mode_passes_its_checks_and_writes_only_its_section(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Pruning\n\nkept\n\n## GPU\n\nold\n\n## Later\n\nalso kept\n")
    threads = torch.get_num_threads()
    try:
        assert gpu_check.main(["--smoke", "--results", str(results)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = results.read_text()
    assert "kept" in text and "also kept" in text and "old" not in text
    assert "| lenet_300_100 |" in text and "| resnet20 |" in text and "run_imp + export round trip" in text
    assert "fused vs separate val loss" in text and "Fused LeNet-300-100 tickets" in text and "\n| 2 |" in text
    assert "plain PyTorch loop, channels_last" in text and "One IMP level end to end" in text and "Fused Conv-4" in text
