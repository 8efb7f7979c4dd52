"""Fused training: K networks of one architecture, each with its own weights, mask, init and data order, in one pass.

Each parameter is stacked over the networks into one ``(K, ...)`` tensor. Plain MLPs (``Flatten``, ``Linear`` and
elementwise activations in a ``Sequential``) run every Linear (with the ReLU after it) as one batched matmul,
through ``_StackedLinear``; any other architecture without buffers or dropout runs through ``torch.func`` (``vmap``
over ``functional_call``, which turns a convolution into one grouped convolution). The optimizer is torch's own
(same kernel and options as ``train``) over the stacked tensors: SGD and Adam are elementwise, so each network's
slice gets the update it would get alone. The loss is the sum of the per-network mean losses, so each slice's
gradient is its own network's gradient.
Why bmm for MLPs: a fused forward + backward is faster with bmm than with vmap in three of four cases (2-core
CPU, one thread, ms per fused step, bmm vs vmap: LeNet-300-100 K=4 50.6 vs 54.5, K=8 85.8 vs 119.8; 12x128 MLP K=4
94.5 vs 106.1, K=8 296 vs 247; one noisy run each on a loaded machine), and a shared batch runs as one GEMM per
layer. Why the layer's backward is written out (weight gradient straight into the weights' layout, the mask applied
there, ReLU in place, batches gathered into reused buffers): autograd's transposed weight gradients cost a copy
each, 11 % of the step in a profile; written out, the 12x128 MLP at K=4 takes 5.9-6.7 ms per network and step on
one idle thread, against 7.2-8.1 through autograd.

What "the same result" means: every network follows ``lottery.train.train`` step by step — same batches (its own
seeded permutation), learning-rate schedule, evaluations, early-stop step and divergence rule — and only float
rounding differs (a batched matmul sums in another order than a single one). tests/test_fused.py checks it; for
8 LeNet-like MLPs over 30 steps we saw final weights within 6e-16 relative in float64 and 4e-7 in float32, and
validation losses within 3e-7 (``evaluate`` sums them in float32); masks are exact and pruned weights, gradients
and optimizer state stay exactly zero; the early-stop weights' test accuracy and the per-layer signal
(lottery/layer_signal.py) are recorded per network as ``train`` records them.
How far rounding carries depends on the training, not on fusing: on the init study's 12x128 ReLU MLP (momentum
SGD, lr 0.02) plain ``train`` on 1 and on 2 threads already reaches validation losses of 0.692 and 0.618 after 200
steps from the same start (fused: 0.708; float64: 0.662), so long runs of such a network agree across threads,
fusing or machines only in distribution (experiments/RESULTS.md quantifies it against the seed spread).

A network whose validation loss turns non-finite is recorded ``diverged`` at that evaluation (as ``train`` would)
and frozen: its weights at that moment are kept for its result, and its slice of weights, gradients and optimizer
state is held at zero, so it cannot reach the others (every stacked operation is per-slice).

An architecture this path cannot handle (buffers such as BatchNorm's running statistics, dropout, a data set
streamed from disk, several processes, snapshots mid-run) is trained network after network by ``train``, with one
line saying so.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from types import SimpleNamespace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lottery.config import Config
from lottery.data.augment import augment_stacked
from lottery.masks import Mask
from lottery.layer_signal import SignalProbe
from lottery.train import Bookkeeping, TrainResult, make_optimizer, train, update

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Identity, nn.Softplus)


def unfusable(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained fused (None when it can)."""
    if any(True for _ in model.buffers()):
        return "it has buffers (e.g. BatchNorm running statistics)"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return "it uses dropout (its random draws would differ from a separate run)"
    return None


def refusal(model: nn.Module, data, cfg: Config) -> str | None:
    """Why networks like ``model``, on ``data`` under ``cfg``, cannot train in one fused pass (None when they can):
    the model's own reason (``unfusable``), a data set streamed from disk, or bf16 autocast on CUDA. The scheduler
    (lottery/passes.py) and ``train_fused`` ask this one function."""
    x_train = data.train[0]
    reason = unfusable(model)
    if reason is None and getattr(x_train, "streaming", False):
        reason = "its data set is streamed from disk"
    if reason is None and cfg.amp and x_train.device.type == "cuda":
        reason = "bf16 autocast is on"
    return reason


AUTO_PACK_PARAMS = 2 ** 23  # fused parameters per pass that ``pack = "auto"`` aims at on CUDA
AUTO_PACK_MAX = 32


def resolve_pack(pack: int | str, model: nn.Module, device: torch.device | None = None) -> int:
    """How many networks one fused pass holds: ``pack`` itself, or for ``"auto"`` (``device``: the model's):

    - 1 on a CPU. Measured on 2 cores (benchmarks/RESULTS.md, "Fused training and grids"): fusing K networks in one
      process ran 0.8-1.3x the speed of K separate runs for LeNet-300-100, 1.2-2.0x for the deep 12x128 MLP and
      0.8-1.0x for Conv-4 — a gain for deep MLPs only, and one that costs ``--pack 1``'s bit-for-bit
      reproducibility, so it is asked for, not defaulted: ``compare-inits --jobs 2 --pack 4`` ran a grid of the
      deep MLP 1.9x as fast as one run at a time ("Grid executor").
    - On CUDA, where one small network leaves most of the device idle: the largest power of two K <= 32 with K
      networks within 2**23 (8.4 M) parameters — 32 for the MNIST-1D MLP, 16 for LeNet-300-100 (266 k), 2 for
      Conv-4 (2.4 M), 1 from 4.2 M parameters on. The budget keeps a pass's weights, gradients and Adam state near
      128 MiB; it is not tuned on a GPU yet (``benchmarks/bench_fused.py`` measures K there).
    - 1 for a model that cannot be fused (``unfusable``): auto never falls back with a message.
    """
    if pack != "auto":
        return int(pack)
    params = sum(p.numel() for p in model.parameters())
    device = device or next(model.parameters()).device
    if device.type != "cuda" or unfusable(model) or params == 0:
        return 1
    fits = max(1, AUTO_PACK_PARAMS // params)
    return min(AUTO_PACK_MAX, 2 ** (fits.bit_length() - 1))


def even_passes(items: Sequence, pack: int) -> list[list]:
    """``items`` split into the fewest passes of at most ``pack``, as even as possible (7 by 3: 2, 2, 3)."""
    n = -(-len(items) // pack)
    return [list(items[i * len(items) // n: (i + 1) * len(items) // n]) for i in range(n)]


def _is_mlp(model: nn.Module) -> bool:
    kids = list(model.children())
    return isinstance(model, nn.Sequential) and any(isinstance(m, nn.Linear) for m in kids) and all(
        isinstance(m, (nn.Linear, nn.Flatten) + _ELEMENTWISE) for m in kids) and not any(
        isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1) for m in kids)


class Stack:
    """The K networks' parameters stacked as ``(K, ...)`` leaf tensors, and the forward pass over them."""

    def __init__(self, models: Sequence[nn.Module], method: str = "auto"):
        self.k = len(models)
        names = [n for n, _ in models[0].named_parameters()]
        self.params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_()
                       for n in names}
        self.method = ("bmm" if _is_mlp(models[0]) else "vmap") if method == "auto" else method
        if self.method == "bmm":
            self.layers = list(models[0].named_children())
        else:
            from torch.func import functional_call, vmap

            base = copy.deepcopy(models[0]).to("meta")
            self._vmapped = {shared: vmap(lambda p, x: functional_call(base, p, (x,)),
                                          in_dims=(0, None if shared else 0)) for shared in (True, False)}

    def __call__(self, x: torch.Tensor, shared: bool, gates: dict | None = None) -> torch.Tensor:
        """Logits ``(K, B, classes)``; ``x`` is ``(B, ...)`` for every network when ``shared``, else ``(K, B, ...)``.

        ``gates`` (parameter name -> stacked float mask): the bmm path multiplies those weight gradients by their
        mask inside backward, while they are still in cache (the caller then skips them)."""
        if self.method == "vmap":
            # attention (the transformers) through its math kernel: torch's fused CPU attention kernel has no
            # batching rule, and vmap would run it one network at a time (with a warning)
            with sdpa_kernel([SDPBackend.MATH]):
                return self._vmapped[shared](self.params, x)
        h = x.flatten(1) if shared else x.flatten(2)
        gates = gates or {}
        layers = self.layers
        i = 0
        while i < len(layers):
            name, layer = layers[i]
            if isinstance(layer, nn.Linear):
                relu = i + 1 < len(layers) and type(layers[i + 1][1]) is nn.ReLU  # fused: one pass less
                key = f"{name}.weight"
                h = _StackedLinear.apply(h, self.params[key], self.params.get(f"{name}.bias"), gates.get(key), relu)
                i += 2 if relu else 1
                continue
            if not isinstance(layer, nn.Flatten):
                h = layer(h)
            i += 1
        if h.dim() == 2:  # no Linear layer saw the batch (cannot happen for an MLP, kept for safety)
            h = h.expand(self.k, *h.shape)
        return h

    def linear_weights(self) -> set[str]:
        """Names of the weights the bmm path runs through ``_StackedLinear`` (their gradients are masked there)."""
        return {f"{n}.weight" for n, layer in getattr(self, "layers", []) if isinstance(layer, nn.Linear)}

    def slice(self, k: int) -> dict[str, torch.Tensor]:
        return {n: p[k].detach().clone() for n, p in self.params.items()}


class _StackedLinear(torch.autograd.Function):
    """K Linear layers at once, optionally followed by ReLU: ``h`` is ``(K, B, in)``, or ``(B, in)`` shared by all.

    Written out rather than left to autograd because the weight gradient comes out of one ``bmm`` already in the
    weights' ``(K, out, in)`` layout (autograd's ``h^T g`` is transposed and costs a copy per layer and step), the
    mask multiplies it while it is in cache, the ReLU is applied in place, and a shared batch is one GEMM against
    all K weight matrices. Same products and sums as ``nn.Linear`` + ``nn.ReLU``; only the float rounding of the
    batched kernels differs.
    """

    @staticmethod
    def forward(ctx, h, w, b, gate, relu):
        k, out_f, in_f = w.shape
        if h.dim() == 2:  # (B, in) for every network: one GEMM
            z = h @ w.reshape(k * out_f, in_f).t()
            if b is not None:
                z += b.reshape(1, -1)
            z = z.view(h.shape[0], k, out_f).transpose(0, 1)
        elif b is not None:
            z = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        else:
            z = torch.bmm(h, w.transpose(1, 2))
        if relu:
            z.clamp_min_(0)
        ctx.relu, ctx.has_bias = relu, b is not None
        ctx.save_for_backward(h, w, z if relu else None, gate)
        return z

    @staticmethod
    def backward(ctx, g):
        h, w, z, gate = ctx.saved_tensors
        k, out_f, in_f = w.shape
        if ctx.relu:
            g = torch.ops.aten.threshold_backward(g, z, 0)
        grad_h = grad_w = grad_b = None
        if h.dim() == 2:
            flat = g.transpose(0, 1).reshape(h.shape[0], k * out_f)  # (B, K * out)
            if ctx.needs_input_grad[1]:
                grad_w = (flat.t() @ h).view(k, out_f, in_f)
            if ctx.needs_input_grad[0]:
                grad_h = flat @ w.reshape(k * out_f, in_f)
        else:
            if ctx.needs_input_grad[1]:
                grad_w = torch.bmm(g.transpose(1, 2), h)
            if ctx.needs_input_grad[0]:
                grad_h = torch.bmm(g, w)
        if grad_w is not None and gate is not None:
            grad_w.mul_(gate)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(1)
        return grad_h, grad_w, grad_b, None, None


@torch.no_grad()
def _evaluate(stack: Stack, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> tuple[list, list]:
    """Per-network (mean cross-entropy, accuracy) over a split, as ``lottery.train.evaluate`` computes them."""
    k = stack.k
    loss_sum = torch.zeros(k, dtype=torch.float64, device=x.device)
    correct = torch.zeros(k, dtype=torch.int64, device=x.device)
    for i in range(0, len(x), batch):
        out = stack(x[i: i + batch], shared=True)  # (K, b, C)
        yb = y[i: i + batch]
        loss = F.cross_entropy(out.float().reshape(-1, out.shape[-1]), yb.repeat(k), reduction="none")
        loss_sum += loss.view(k, -1).sum(1)
        correct += (out.argmax(2) == yb).sum(1)
    n = max(1, len(x))
    return (loss_sum / n).tolist(), (correct.double() / n).tolist()


def train_fused(
    models: Sequence[nn.Module],
    data,
    cfg: Config,
    masks: Sequence[Mask | None],
    *,
    seeds: Sequence[int],
    progress=None,
    method: str = "auto",
    log: Callable[[str], None] | None = None,
    start_step: int = 0,
    early_stop_from: int | None = None,
) -> list[TrainResult]:
    """Train ``models`` (one architecture, on one device) in place, one result each, as ``train`` would alone.

    ``masks[i]`` must already be applied to ``models[i]`` (pruned weights zero) and ``seeds[i]`` is its data order.
    ``progress`` gets one ``update(1)`` per fused step. ``method``: ``auto`` (batched matmul for MLPs, vmap
    otherwise), ``bmm`` or ``vmap``. ``start_step`` and ``early_stop_from`` are ``train``'s: the bookkeeping
    (lottery.train.Bookkeeping) is the same object.
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    if not (len(models) == len(masks) == len(seeds)) or not models:
        raise ValueError("train_fused needs one mask and one seed per model, and at least one model")
    reason = refusal(models[0], data, cfg)
    if reason is not None:
        log(f"fused training: {type(models[0]).__name__} cannot be fused ({reason}); "
            f"training the {len(models)} networks one after another")
        return [train(m, data, cfg, mask, seed=s, progress=progress, start_step=start_step,
                      early_stop_from=early_stop_from) for m, mask, s in zip(models, masks, seeds)]
    return _train_stacked(models, data, cfg, masks, seeds, progress, method, start_step, early_stop_from)


def _train_stacked(models, data, cfg, masks, seeds, progress, method, start_step, early_stop_from
                   ) -> list[TrainResult]:
    start = time.perf_counter()
    x_train, y_train = data.train
    x_val, y_val = data.val
    device = x_train.device
    k = len(models)

    stack = Stack(models, method)
    plist = list(stack.params.values())
    optimizer = make_optimizer(SimpleNamespace(parameters=lambda: iter(plist)), cfg)
    shared = len(set(int(s) for s in seeds)) == 1  # one data order for all: one batch, one GEMM per layer
    book = Bookkeeping(cfg, len(x_train), seeds[:1] if shared else seeds, optimizer, networks=k,
                       start_step=start_step, early_stop_from=early_stop_from)
    masked_names = [n for n in stack.params if any(mk is not None and n in mk for mk in masks)]
    # One stacked float gate per masked parameter; a network without a mask (or without that name) keeps all.
    keep_all = {n: torch.ones_like(stack.params[n][0], dtype=torch.bool) for n in masked_names}
    gates = {n: torch.stack([(mk[n] if mk is not None and n in mk else keep_all[n])
                             .to(device=device, dtype=stack.params[n].dtype) for mk in masks]) for n in masked_names}
    # the bmm path masks Linear weight gradients inside backward; anything else is masked after backward
    inside = stack.linear_weights() if stack.method == "bmm" else set()
    after = [n for n in masked_names if n not in inside]

    # the weights at each network's early-stop evaluation, for their test accuracy at the end (as ``train`` keeps)
    best_params = {n: p.detach().clone() for n, p in stack.params.items()}
    # per-layer signal of each network at every evaluation, on its own module (lottery/layer_signal.py), as ``train``
    probes = [SignalProbe(m, x_val, y_val) for m in models] if getattr(cfg, "record_signal", True) else None
    frozen: dict[int, dict] = {}  # network -> its weights when it diverged
    x_buf = y_buf = None
    for step in book.steps():
        if book.evaluates(step):
            losses, accs = _evaluate(stack, x_val, y_val)
            for i, record in enumerate(book.records):
                if i in frozen:
                    continue
                if probes is not None:
                    _load(models[i], {n: p[i] for n, p in stack.params.items()})
                    probes[i](step)
                if record.observe(step, losses[i], accs[i]):
                    with torch.no_grad():
                        for n, p in stack.params.items():
                            best_params[n][i] = p[i]
                elif record.status != "ok":
                    frozen[i] = stack.slice(i)
                    _freeze(stack, optimizer, i)
            if len(frozen) == k:
                break
        if step == book.total:
            break

        idx = book.indices(step, device)  # (1 or K, batch): each network's own seeded order
        # gathered into the same buffers every step (no fresh allocation, which page-faults at this size)
        rows = idx[0] if shared else idx.reshape(-1)
        if x_buf is None:
            x_buf = x_train.new_empty((len(rows), *x_train.shape[1:]))
            y_buf = y_train.new_empty(len(rows))
        torch.index_select(x_train, 0, rows, out=x_buf)
        torch.index_select(y_train, 0, rows, out=y_buf)
        # augmentation hook (--augment, lottery/data/augment.py): each network's crops as its own run draws them
        x_step = augment_stacked(x_buf, cfg.augment, cfg.augment_options,
                                 seeds[:1] if shared else seeds, step, fill=getattr(data, "fill", 0.0))
        if shared:
            xb, yb = x_step, y_buf.expand(k, -1)
        else:
            xb, yb = x_step.view(k, -1, *x_train.shape[1:]), y_buf.view(k, -1)
        book.set_lr(step)

        logits = stack(xb, shared, gates)
        per_net = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1), reduction="none")
        loss = per_net.view(k, -1).mean(1).sum()  # each slice's gradient is its own network's mean-loss gradient
        update(optimizer, loss, [stack.params[n] for n in after], [gates[n] for n in after],
               (lambda: _zero_frozen(plist, frozen)) if frozen else None)
        if progress is not None:
            progress.update(1)

    wall = time.perf_counter() - start
    for i, model in enumerate(models):
        state = frozen.get(i) or stack.slice(i)
        _load(model, state)
        book.records[i].check_final(state.values())
    ok = any(r.status == "ok" for r in book.records)
    tests = _evaluate(stack, *data.test) if ok else None
    # test accuracy of the early-stop weights, where they are not the final ones (one more fused test pass)
    earlier = any(r.needs_early_test(step) for r in book.records)
    early_accs = _evaluate(_with_params(stack, best_params), *data.test)[1] if earlier else None
    return [book.result(i, step, (tests[0][i], tests[1][i]) if tests else (math.nan, math.nan),
                        early_accs[i] if early_accs else None, wall,
                        signal=probes[i].to_dict() if probes is not None else None) for i in range(k)]


def _zero_frozen(plist: list, frozen: dict) -> None:
    """A diverged network's slice stays exactly zero: no gradient reaches it."""
    for p in plist:
        p.grad[list(frozen)] = 0


@torch.no_grad()
def _load(model: nn.Module, state: dict) -> None:
    """Weights by parameter name (one network's slice of the stack) into that network's own module."""
    params = dict(model.named_parameters())
    for n, v in state.items():
        params[n].copy_(v)


def _with_params(stack: Stack, params: dict) -> Stack:
    """A view of ``stack`` with other stacked weights (same layers), for evaluation."""
    other = copy.copy(stack)
    other.params = params
    return other


@torch.no_grad()
def _freeze(stack: Stack, optimizer: torch.optim.Optimizer, i: int) -> None:
    """Zero network ``i``'s slice of the weights and of every optimizer state tensor (momentum, Adam moments)."""
    for p in stack.params.values():
        p[i] = 0
        for v in optimizer.state.get(p, {}).values():
            if torch.is_tensor(v) and v.shape == p.shape:
                v[i] = 0
