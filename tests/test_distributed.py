"""torchrun with 2 CPU processes (Gloo): the same masks and accuracies as one process with the same global batch,
and a run killed after a finished level resumes under torchrun to those same numbers.

Tolerance: the two runs differ only in float summation order (each rank averages its half of the batch, DDP
averages the halves), so masks must have IoU >= 0.99 per level and test accuracies agree within 1 point; measured
here they are identical (IoU 1.0, equal accuracies; validation losses differ by ~1e-7).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import lottery as lt
from lottery.distributed import SINGLE, Dist, from_env
from lottery.errors import ConfigError
from lottery.storage.rundir import RunDir
from tests.engine_helpers import tiny

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(levels=2, steps=60, controls=("reinit",), batch_size=32)
ACC_TOL, IOU_MIN = 0.01, 0.99


def _flags(cfg):
    return ["--name", cfg.name, "--dataset", cfg.dataset, "--model", cfg.model, "--model-options",
            json.dumps(cfg.model_options), "--steps", str(cfg.steps), "--eval-every", str(cfg.eval_every),
            "--batch-size", str(cfg.batch_size), "--levels", str(cfg.levels), "--lr", str(cfg.lr),
            "--controls", ",".join(cfg.controls) or "none", "--device", "cpu", "--no-progress", "--out", cfg.out]


def _torchrun(cfg, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lottery", "run", *_flags(cfg)]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kw)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its ranks in sessions of their own, out of reach of killpg)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (OSError, ValueError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.mark.slow
def test_torchrun_matches_one_process_and_resumes_after_a_kill(tmp_path):
    single_cfg = tiny(tmp_path / "single", **SETTINGS)
    multi_cfg = tiny(tmp_path / "multi", **SETTINGS)
    assert single_cfg.run_name() == multi_cfg.run_name()  # the process count is not a setting of the experiment
    results_file = Path(multi_cfg.out) / multi_cfg.run_name() / "results.json"

    # torchrun runs while the single-process reference trains here; a watcher kills it (the launcher and both
    # ranks) as soon as level 0 is recorded, mid-experiment.
    proc = _torchrun(multi_cfg)
    killed = []

    def watch():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if results_file.exists() and json.loads(results_file.read_text())["levels"]:
                killed.append(proc.poll() is None)
                for pid in [*_descendants(proc.pid), proc.pid]:  # the ranks (own sessions), then the launcher
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    single = lt.run_imp(single_cfg)
    watcher.join()
    proc.wait()
    log = proc.stdout.read()
    proc.stdout.close()
    assert killed == [True], "torchrun finished (or failed) before it could be killed:\n" + log
    before = json.loads(results_file.read_text())
    assert before["status"] == "running" and len(before["levels"]) < multi_cfg.levels + 1

    resumed = _torchrun(multi_cfg)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert out.count("weights %") == 1  # rank 0 alone prints the table
    multi = json.loads(results_file.read_text())
    assert multi["status"] == "complete"
    assert multi["levels"][0]["wall_time"] == before["levels"][0]["wall_time"]  # level 0 was not retrained

    single_run = RunDir(Path(single_cfg.out) / single_cfg.run_name())
    multi_run = RunDir(Path(multi_cfg.out) / multi_cfg.run_name())
    for s, m in zip(single["levels"], multi["levels"], strict=True):
        level = s["level"]
        iou = single_run.load_mask(level).iou(multi_run.load_mask(level))
        assert iou >= IOU_MIN, (level, iou)
        assert s["num_kept"] == m["num_kept"]
        assert abs(s["test_accuracy"] - m["test_accuracy"]) <= ACC_TOL, (level, s["test_accuracy"], m["test_accuracy"])
        for control in s["controls"]:
            assert abs(s["controls"][control]["test_accuracy"] - m["controls"][control]["test_accuracy"]) <= ACC_TOL


def test_one_process_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist = from_env("cpu")
    assert dist is SINGLE and dist.is_main and not dist.active
    model = torch.nn.Linear(3, 2)
    assert dist.wrap(model) is model
    idx = torch.arange(8)
    assert torch.equal(dist.shard(idx), idx)
    assert dist.share_object(lambda: {"a": 1}) == {"a": 1}
    mask = lt.Mask.ones_like(model)
    assert dist.share_mask(lambda: mask) == mask


def test_shard_takes_this_ranks_slice_and_refuses_uneven_batches():
    idx = torch.arange(10, 18)
    ranks = [Dist(rank=r, world_size=4) for r in range(4)]
    assert torch.equal(torch.cat([d.shard(idx) for d in ranks]), idx)
    assert torch.equal(ranks[1].shard(idx), torch.tensor([12, 13]))
    with pytest.raises(ConfigError, match="multiple of 4"):
        ranks[0].shard(torch.arange(6))
