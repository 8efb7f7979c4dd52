"""Training under a mask: one ``train`` function that reads top to bottom.

At LeNet's batch of 60 a step is ~100 MFLOP, so per-step overhead decides the speed (benchmarks/RESULTS.md). What
keeps it low: the data set lives in (device) memory and each batch is one ``index_select`` of a seeded per-epoch
permutation (no DataLoader, no per-epoch copy of the training set); the mask reaches all gradients in one
``_foreach_mul_``; gradients are set to None instead of zero-filled (backward then writes them, no memset + add);
the optimizer is torch's fused kernel (one pass over each tensor instead of ~10; ``cfg.fast_kernels``); the validation
split is evaluated only every ``eval_every`` steps. ``torch.compile`` measured slower here for the MLPs and costs a
minute of compile per run on two cores, so it is not used.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lottery.config import Config
from lottery.data.augment import augment_batch
from lottery.errors import ConfigError, raise_if_terminated
from lottery.masks import Mask
from lottery.models.layout import conv_layout
from lottery.rewind import snapshot
from lottery.layer_signal import SignalProbe


STOP = "stop"  # what a step hook returns to end the run at this step


@dataclass
class TrainResult:
    """What one training run produced. ``status`` is ``ok`` or ``diverged`` (a result, not a crash)."""

    status: str
    test_accuracy: float
    test_loss: float
    early_stop_step: int
    early_stop_val_loss: float
    early_stop_val_accuracy: float
    steps: int  # updates made by this run: T, or T - K for a run that starts at step K (late rewinding)
    wall_time: float
    early_stop_test_accuracy: float = math.nan  # test accuracy of the weights at early_stop_step
    curve: list = field(default_factory=list)  # [step, val_loss, val_accuracy] at each evaluation
    signal: dict | None = None  # per-layer activation std and gradient norm at each evaluation (lottery.layer_signal)
    rewind_state: dict | None = None  # weights after ``snapshot_step`` updates, when asked
    mask: Mask | None = None  # the mask in force at the end (a step hook may have replaced the one given)

    def summary(self) -> dict:
        """The JSON-ready part (``results.json``)."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("rewind_state", "mask")}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def derived_seed(seed: int, *parts: object) -> int:
    """A seed for one named random choice (e.g. the reinit control of level 3), stable across processes."""
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


# --steps auto: dense trains until its validation loss has not improved for AUTO_PATIENCE evaluations AND its best
# (early-stop) step lies in the first AUTO_SETTLED of the steps so far — so the dense baseline a ticket is compared
# with has finished learning by the rule the reports check (early stop before 70 % of the budget). Its step count
# is then every later run's budget. AUTO_MAX_STEPS caps a run that never settles.
AUTO_PATIENCE = 5
AUTO_SETTLED = 0.7
AUTO_MAX_STEPS = 200_000


def budget_steps(cfg: Config, n_train: int) -> int:
    """--epochs wins over --steps; an epoch is every full batch of the training set (the last partial is dropped).
    ``steps = "auto"``: the cap (the run stops when validation settles, ``Bookkeeping.settled``)."""
    if cfg.epochs is not None:
        return max(1, round(cfg.epochs * (n_train // cfg.batch_size)))
    return AUTO_MAX_STEPS if cfg.steps == "auto" else int(cfg.steps)


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The optimizer of ``cfg``, with torch's fused kernel when ``cfg.fast_kernels`` and the device supports it.

    The fused kernel computes the same update as torch's default for-loop / ``foreach`` kernels (which agree bit
    for bit); only the float rounding differs (in float64 the two agree to 1e-15: tests/test_train_equivalence.py).
    ``fused=False`` gives results bit-identical to a plain loop with a default ``torch.optim`` optimizer.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        cls, options = torch.optim.SGD, dict(momentum=cfg.momentum)
    else:
        cls, options = (torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam), {}
    options.update(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if getattr(cfg, "fast_kernels", False):
        try:
            return cls(params, fused=True, **options)
        except (RuntimeError, ValueError):  # a device or dtype without a fused kernel: the exact path below
            pass
    return cls(params, foreach=True, **options)


def lr_factor(cfg: Config, step: int, total: int) -> float:
    """Multiplier of the base rate before update ``step`` (0-based): warmup, then the schedule."""
    factor = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.schedule == "step":
        factor *= cfg.gamma ** sum(step >= m for m in cfg.milestones)
    elif cfg.schedule == "cosine":
        factor *= 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
    return factor


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over a whole split, in large batches."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    chunks = x.batches(batch) if hasattr(x, "batches") else (x[i : i + batch] for i in range(0, len(x), batch))
    for i, xb in zip(range(0, len(x), batch), chunks):  # x: a tensor, or images streamed from disk
        out = model(xb)
        loss_sum += F.cross_entropy(out.float(), y[i : i + batch], reduction="sum")
        correct += (out.argmax(1) == y[i : i + batch]).sum()
    model.train(was_training)
    n = max(1, len(x))
    return float(loss_sum) / n, int(correct) / n


def train(
    model: nn.Module,
    data,
    cfg: Config,
    mask: Mask | None = None,
    *,
    seed: int = 0,
    snapshot_step: int | None = None,
    progress=None,
    optimizer: torch.optim.Optimizer | None = None,
    dist=None,
    start_step: int = 0,
    step_hook=None,
    early_stop_from: int | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` (tensors already on the model's device) under ``mask``.

    The pruned weights must already be zero (``mask.apply``); masking their gradients before every update keeps
    them — and their momentum / Adam moments — at exactly zero, so nothing is resurrected. Pass ``optimizer`` to
    inspect or reuse its state; by default one is made from ``cfg``. Under torchrun, ``dist``
    (``lottery.distributed.Dist``) makes this rank train on its slice of every global batch, through DDP.

    ``start_step=K`` continues a run from its step K (late rewinding): the remaining T - K updates, with the
    learning-rate schedule and the data order of steps K..T; curve and early-stop steps count from 0 as before.
    Stochastic layers (dropout) draw from the global RNG seeded from ``seed`` for this call alone (its state
    outside is left as it was), so the same call gives the same numbers in any process.

    ``step_hook(step, optimizer)`` runs before each step's evaluation and update; a ``Mask`` it returns replaces
    ``mask`` from that step on (gradual pruning: the hook zeroes the removed weights and their optimizer state).
    A hook that returns ``STOP`` ends the run at that step, evaluated as the final one (early-bird mask search).
    ``early_stop_from`` ignores earlier evaluations for the early-stop step (they belong to denser networks).
    """
    device = data.train[0].device
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    # convnet layout hook (lottery/models/layout.py): channels_last while training on the fast path (fast_kernels)
    fast = getattr(cfg, "fast_kernels", False)
    with torch.random.fork_rng(devices=cuda, device_type="cuda"), conv_layout(model, fast):
        torch.default_generator.manual_seed(derived_seed(seed, "layers"))
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(derived_seed(seed, "layers"))
        return _train(model, data, cfg, mask, seed=seed, snapshot_step=snapshot_step, progress=progress,
                      optimizer=optimizer, dist=dist, start_step=start_step, step_hook=step_hook,
                      early_stop_from=start_step if early_stop_from is None else early_stop_from)


class Record:
    """One network's evaluations: its curve, its early-stop point (the lowest validation loss from
    ``early_stop_from`` on) and whether it diverged (a non-finite validation loss or final weight)."""

    def __init__(self, early_stop_from: int):
        self.curve: list = []
        self.best = (math.inf, early_stop_from, 0.0)  # (val loss, step, val accuracy)
        self.best_from = early_stop_from  # earlier evaluations belong to denser networks (gradual pruning)
        self.kept = False  # whether the caller holds the weights of ``best`` (some evaluation counted)
        self.status = "ok"
        self.stopped: int | None = None  # the step it diverged at

    def observe(self, step: int, val_loss: float, val_acc: float) -> bool:
        """Record one evaluation; True when it is the new early-stop point (the caller keeps these weights)."""
        self.curve.append([step, val_loss, val_acc])
        if not math.isfinite(val_loss):
            self.status, self.stopped = "diverged", step
            return False
        if val_loss < self.best[0] and step >= self.best_from:
            self.best, self.kept = (val_loss, step, val_acc), True
            return True
        return False

    def check_final(self, tensors) -> None:
        """A run that never saw a non-finite loss but ends with a non-finite weight diverged too."""
        if self.status == "ok" and not all(torch.isfinite(t).all() for t in tensors):
            self.status = "diverged"

    def needs_early_test(self, final_step: int) -> bool:
        """Whether the early-stop weights differ from the final ones (one more test pass measures them)."""
        return self.status == "ok" and self.kept and self.best[1] != final_step


class Bookkeeping:
    """Everything a training run decides around its updates, shared by ``train`` (one network) and the fused
    trainer (K networks, lottery/fused.py): the steps (``start_step`` .. the budget), each data order's
    batches, the learning rate, when to evaluate, each network's ``Record`` and its ``TrainResult``. The
    kernels keep only what differs: how a batch is gathered, forward, backward, masking, the update, evaluation.

    ``seeds`` are the data orders (one per network, or one shared by all); ``networks`` how many records.
    """

    def __init__(self, cfg: Config, n_train: int, seeds, optimizer: torch.optim.Optimizer, *, networks: int = 1,
                 start_step: int = 0, early_stop_from: int | None = None):
        self.cfg = cfg
        self.n_train = n_train
        self.total = budget_steps(cfg, n_train)
        self.batch = min(cfg.batch_size, n_train)
        self.per_epoch = n_train // self.batch
        if isinstance(start_step, bool) or not isinstance(start_step, int) or not 0 <= start_step <= self.total:
            raise ConfigError(f"start_step must be an integer in [0, {self.total}] (the training budget), "
                              f"got {start_step!r}")
        self.start_step = start_step
        # data order: seeded, on the CPU, identical on every device
        self.orders = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.perms = None
        for _ in range(-(-start_step // self.per_epoch)):  # a late start: the permutations steps 0..K-1 drew
            self.perms = [torch.randperm(n_train, generator=g) for g in self.orders]
        self._perm = None
        self.records = [Record(start_step if early_stop_from is None else early_stop_from) for _ in range(networks)]
        # Base rates from `initial_lr` (as torch's schedulers keep them): a reused optimizer's `lr` is already scaled.
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self._factor = None

    def steps(self) -> range:
        """Update steps ``start_step .. total``; before update ``step`` comes its evaluation, and ``total`` is the
        evaluation of the final weights (no update)."""
        return range(self.start_step, self.total + 1)

    def evaluates(self, step: int) -> bool:
        """Evaluate before update ``step``: every ``eval_every`` steps, at the start and at the end."""
        return step % self.cfg.eval_every == 0 or step == self.total or step == self.start_step

    def indices(self, step: int, device) -> torch.Tensor:
        """Each data order's batch of update ``step`` as a ``(orders, batch)`` tensor on ``device``: one seeded
        permutation per epoch (the last partial batch dropped), sliced, so no epoch copies the training set."""
        raise_if_terminated()  # a SIGTERM whose exception was swallowed still ends the run here
        if step % self.per_epoch == 0:  # reshuffle once per epoch
            self.perms, self._perm = [torch.randperm(self.n_train, generator=g) for g in self.orders], None
        if self._perm is None:
            self._perm = (self.perms[0].unsqueeze(0) if len(self.perms) == 1 else torch.stack(self.perms)).to(device)
        i = step % self.per_epoch
        return self._perm[:, i * self.batch: (i + 1) * self.batch]

    def settled(self, step: int, i: int = 0) -> bool:
        """Under ``steps = "auto"``: whether network ``i`` has stopped improving (AUTO_PATIENCE, AUTO_SETTLED)."""
        if self.cfg.steps != "auto":
            return False
        best = self.records[i].best[1]
        return step - best >= AUTO_PATIENCE * self.cfg.eval_every and best <= AUTO_SETTLED * step

    def set_lr(self, step: int) -> None:
        """The schedule's rate for update ``step`` (written to the optimizer only when it changes)."""
        factor = lr_factor(self.cfg, step, self.total)
        if factor != self._factor:
            for g, base in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = base * factor
            self._factor = factor

    def result(self, i: int, final_step: int, test: tuple[float, float], early_test_accuracy: float | None,
               wall_time: float, signal: dict | None = None, rewind_state: dict | None = None) -> TrainResult:
        """Network ``i``'s result: ``test`` is (loss, accuracy) of its final weights (ignored unless ok),
        ``early_test_accuracy`` that of its early-stop weights when they differ (``needs_early_test``)."""
        r = self.records[i]
        test_loss, test_acc = test if r.status == "ok" else (math.nan, math.nan)
        return TrainResult(
            status=r.status,
            test_accuracy=test_acc,
            test_loss=test_loss,
            early_stop_step=r.best[1],
            early_stop_val_loss=r.best[0],
            early_stop_val_accuracy=r.best[2],
            steps=(r.stopped if r.stopped is not None else final_step) - self.start_step,
            wall_time=wall_time,
            early_stop_test_accuracy=early_test_accuracy if r.needs_early_test(final_step) else test_acc,
            curve=r.curve,
            signal=signal,
            rewind_state=rewind_state,
        )


def _train(model, data, cfg, mask, *, seed, snapshot_step, progress, optimizer, dist, start_step, step_hook,
           early_stop_from) -> TrainResult:
    start = time.perf_counter()
    x_train, y_train = data.train
    x_val, y_val = data.val
    device = x_train.device
    optimizer = optimizer or make_optimizer(model, cfg)
    book = Bookkeeping(cfg, len(x_train), [seed], optimizer, start_step=start_step, early_stop_from=early_stop_from)
    record = book.records[0]
    net = dist.wrap(model) if dist is not None else model  # DDP averages the gradients over the ranks in backward
    params = dict(model.named_parameters())
    masked, gates = _gates(params, mask, device)
    # A data set on disk (lottery.data.image_folder): DataLoader workers read these same batches ahead of the steps.
    stream = x_train.stream(seed, book.batch, dist, start=start_step) if getattr(x_train, "streaming", False) else None
    # bf16 autocast where it pays (CUDA tensor cores); on the CPU nothing changes.
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cfg.amp and device.type == "cuda" \
        else contextlib.nullcontext

    probe = SignalProbe(model, x_val, y_val) if getattr(cfg, "record_signal", True) else None
    best_state = None  # the weights at the early-stop step, for their test accuracy at the end (one test pass)
    rewind_state = None
    model.train()
    for step in book.steps():
        stop = False
        if step_hook is not None and (new_mask := step_hook(step, optimizer)) is not None:
            if new_mask is STOP:  # the hook ends the run here (early-bird): these weights are the final ones
                stop = True
            else:
                mask = new_mask
                masked, gates = _gates(params, mask, device)
        if snapshot_step is not None and step == snapshot_step:
            rewind_state = snapshot(model)
        if book.evaluates(step) or stop:  # step 0 is the init, step `total` the final weights
            if dist is not None:  # BatchNorm statistics from rank 0: every rank evaluates the same network
                dist.sync_buffers(model)
            val_loss, val_acc = evaluate(model, x_val, y_val)
            if probe is not None:
                probe(step)
            if record.observe(step, val_loss, val_acc):
                best_state = keep_state(model, best_state)
            if record.status != "ok":
                break
            if progress is not None:
                progress.set_postfix(val_acc=f"{val_acc:.3f}", refresh=False)
            if book.settled(step):  # --steps auto: validation stopped improving; this step is the budget
                break
        if step == book.total or stop:
            break

        # Gather one batch per step rather than the whole shuffled set per epoch: the same batches, without a
        # second copy of the training set in memory (172 MB for Fashion-MNIST, 600 MB for CIFAR-10).
        idx = book.indices(step, device)[0]
        if dist is not None:  # the same global batch on every rank; this rank takes its slice of it
            idx = dist.shard(idx)
        xb = x_train.index_select(0, idx) if stream is None else stream.next(idx)
        yb = y_train.index_select(0, idx)
        # augmentation hook (--augment, lottery/data/augment.py): seeded by (seed, step), drawn for the global batch
        xb = augment_batch(xb, cfg.augment, cfg.augment_options, seed, step,
                           fill=getattr(data, "fill", 0.0), shard=dist.shard if dist is not None else None,
                           global_size=book.batch)
        book.set_lr(step)

        with autocast():
            loss = F.cross_entropy(net(xb), yb)
        update(optimizer, loss, masked, gates)
        if progress is not None:
            progress.update(1)

    record.check_final(model.parameters())
    test = evaluate(model, *data.test) if record.status == "ok" else (math.nan, math.nan)
    early = accuracy_of(model, best_state, *data.test) if record.needs_early_test(step) else None
    result = book.result(0, step, test, early, time.perf_counter() - start,
                         signal=probe.to_dict() if probe is not None else None, rewind_state=rewind_state)
    result.mask = mask
    return result


def update(optimizer: torch.optim.Optimizer, loss: torch.Tensor, masked: list, gates: list,
           after_backward: Callable[[], None] | None = None) -> None:
    """One training step after the forward pass, in the one order every trainer takes it (one network here, K
    stacked ones in lottery/fused.py): backward, the pruned weights' gradients zeroed, then the optimizer's step.
    ``masked`` are parameters and ``gates`` their masks as floats; ``after_backward`` runs just before the step."""
    # None instead of zero-filled: backward then writes the gradients instead of memset + accumulate.
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if gates:  # every masked parameter gets a gradient from backward, so the list is complete here
        torch._foreach_mul_([p.grad for p in masked], gates)
    if after_backward is not None:
        after_backward()
    optimizer.step()


def _gates(params: dict, mask: Mask | None, device) -> tuple[list, list]:
    """The masked parameters and their masks as floats: one fused multiply per step (bool cannot multiply floats)."""
    if mask is None:
        return [], []
    return [params[k] for k in mask], [mask[k].to(device=device, dtype=params[k].dtype) for k in mask]


@torch.no_grad()
def keep_state(model: nn.Module, into: dict | None) -> dict:
    """A copy of the model's state, written into the buffers of the last copy when there is one (no allocation)."""
    if into is None:
        return snapshot(model)
    for k, v in model.state_dict().items():
        into[k].copy_(v)
    return into


def accuracy_of(model: nn.Module, state: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``state`` (e.g. the early-stop weights) on ``x, y``; the model keeps its own weights after."""
    own = snapshot(model)
    model.load_state_dict(state)
    try:
        return evaluate(model, x, y)[1]
    finally:
        model.load_state_dict(own)
