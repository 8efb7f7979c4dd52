"""Multi-process training on PyTorch's own engine: ``torchrun`` starts the processes, DDP averages the gradients.

``torchrun --nproc_per_node N -m lottery run ...`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` for every
process; :func:`from_env` turns them into a :class:`Dist` (NCCL on GPUs, Gloo on CPUs). The IMP driver then keeps
one rule: **rank 0 alone decides and writes** — it loads or draws the init, prunes, reads the run directory and
writes it — and every other rank receives what rank 0 decided through ``torch.distributed.broadcast``. So all
ranks hold the same weights, the same mask and the same results, and resuming works as on one process.

Each training step takes one global batch of ``batch_size`` examples from the same seeded permutation on every
rank; rank ``r`` uses slice ``r`` of it (``batch_size / N`` examples). The loss is the mean over the local slice and
DDP averages the gradients over the ranks, so the update equals the single-process update on the whole batch up
to float rounding (summation order). Evaluation runs on every rank over the full validation/test split (cheap next
to training), so no rank waits for another to learn a result.

After a successful command every rank waits for the others (:func:`leave_together`) before the process group is
torn down at exit. A plain ``lottery run`` (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) gets :data:`SINGLE`, for which
every call here is a no-op.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as td
from torch import nn

from lottery.errors import ConfigError
from lottery.masks import Mask
from lottery.storage.rundir import RunDir


@dataclass(frozen=True)
class Dist:
    """This process's place in the group: ``rank`` of ``world_size``; ``device`` carries the collectives."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    # -- collectives (no-ops on one process) --------------------------------------------------------------
    def barrier(self) -> None:
        if self.active:
            td.barrier()

    def main_first(self, make: Callable[[], object]) -> object:
        """``make()`` on rank 0, then on the other ranks (e.g. rank 0 creates a directory the others then open)."""
        value = make() if self.is_main else None
        self.barrier()
        return value if self.is_main else make()

    def share_object(self, make: Callable[[], object]) -> object:
        """``make()`` run on rank 0 only; every rank returns rank 0's value (small picklable objects only)."""
        if not self.active:
            return make()
        box = [make() if self.is_main else None]
        td.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def share_tensors(self, make: Callable[[], dict | None]) -> dict[str, torch.Tensor] | None:
        """A ``name -> tensor`` dict made on rank 0 (or None), received by every rank; tensors land on CPU.

        Names, shapes and dtypes travel first as a small object; the tensors then go one ``broadcast`` each.
        """
        if not self.active:
            return make()
        made = make() if self.is_main else None
        spec = self.share_object(
            lambda: None if made is None else [(k, tuple(v.shape), v.dtype) for k, v in made.items()])
        if spec is None:
            return None
        out = {}
        for name, shape, dtype in spec:
            if self.is_main:
                t = made[name].detach().to(self.device).contiguous()
            else:
                t = torch.empty(shape, dtype=dtype, device=self.device)
            td.broadcast(t.view(torch.uint8) if t.dtype == torch.bool else t, src=0)  # bools travel as bytes
            out[name] = t.cpu()
        return out

    def share_mask(self, make: Callable[[], Mask]) -> Mask:
        """Rank 0 prunes (``make``); every rank returns the identical mask."""
        if not self.active:
            return make()
        return Mask(self.share_tensors(lambda: {k: v.contiguous() for k, v in make().items()}))

    # -- training -----------------------------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """The model wrapped in ``DistributedDataParallel`` (which averages gradients in ``backward``)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # No buffer broadcast in forward: buffers (BatchNorm statistics) are synced from rank 0 before each
        # evaluation instead (sync_buffers). Newer torch renamed the switch.
        try:
            return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
        except TypeError:
            return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch's indices (``batch_size`` must divide by the world size)."""
        if not self.active:
            return idx
        if len(idx) % self.world_size:
            raise ConfigError(f"batch size {len(idx)} does not divide among {self.world_size} processes; "
                              f"use a multiple of {self.world_size}")
        per = len(idx) // self.world_size
        return idx[self.rank * per : (self.rank + 1) * per]

    @torch.no_grad()
    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank, so every rank evaluates the same net."""
        if self.active:
            for b in model.buffers():
                if b.is_floating_point() or b.dtype in (torch.int64, torch.int32):
                    t = b.to(self.device)
                    td.broadcast(t, src=0)
                    b.copy_(t)


SINGLE = Dist()


def from_env(device: str = "auto") -> Dist:
    """The process group torchrun described in the environment (initialized here), or :data:`SINGLE`.

    ``device`` is the config's ``auto``/``cpu``/``cuda``: CUDA ranks use NCCL on ``cuda:LOCAL_RANK``, CPU ranks
    use Gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        comm = torch.device("cuda", local_rank)
    else:
        comm = torch.device("cpu")
    if not td.is_initialized():  # once per process: compare-inits and friends call run_imp several times
        td.init_process_group(backend="nccl" if use_cuda else "gloo")  # MASTER_ADDR/PORT etc. from torchrun
        atexit.register(_shutdown)
    return Dist(rank=td.get_rank(), world_size=td.get_world_size(), local_rank=local_rank, device=comm)


def leave_together() -> None:
    """Under torchrun, after a command succeeded on this rank: wait until every rank has finished (rank 0 writes
    the table and plots after the others are done), so no rank tears its process group down while another still
    uses it. A no-op in one process."""
    if td.is_initialized():
        td.barrier()


def _shutdown() -> None:
    if td.is_initialized():
        td.destroy_process_group()


def refuse_processes(driver: str) -> None:
    """One line instead of N processes fighting over one run directory: only IMP (``run``, ``compare-inits``
    trunks) splits its batches over torchrun's processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"{driver} runs in one process; start it without torchrun (only `lottery run` uses "
                          "several processes)")


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun job (which neither print tables nor write plots)."""
    if td.is_available() and td.is_initialized():
        return td.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


class Follower(RunDir):
    """The run directory as ranks other than 0 see it: it reads like rank 0's and never writes (rank 0 does)."""

    def save_state(self, relpath, state) -> None:
        pass

    def save_mask(self, level, mask) -> None:
        pass

    def save_results(self, results) -> None:
        pass
