"""Shipping a ticket: the pruned weights as a small, safe file, a loader that rebuilds the model, and a report.

A ticket kept as a dense tensor full of zeros is a result on paper only: the file is as large as the dense one and
inference is as slow. ``export_ticket`` writes the surviving weights in one of three layouts to a ``safetensors``
file (tensors plus a JSON-string header; loading it never runs code):

- ``dense``   every tensor as is (the reference: pruned weights stored as zeros);
- ``csr``     each pruned weight reshaped to (out, fan_in) in compressed sparse rows: int32 row pointers, int16
              (or int32) column indices, float values — about 6 bytes per kept weight;
- ``bitmask`` one bit per weight (``np.packbits``, row-major) plus the kept values in that order — 1/32 of the
              dense size plus 4 bytes per kept weight, the smaller of the two above ~10 % density.

Everything that is not a pruned weight (biases, norm layers, buffers) is stored dense. The header records the
model (registered name, options, activation, input shape, number of classes), so ``load_exported(path)`` rebuilds
it; ``load_exported(path, sparse=True)`` swaps every Linear layer for a ``torch.sparse`` CSR matmul (convolutions
stay dense: PyTorch has no sparse convolution kernel on the CPU).

>>> import tempfile, os, torch, lottery as lt
>>> model = lt.build_model("lenet_300_100", (1, 28, 28), 10)
>>> mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.95)
>>> _ = mask.apply(model)
>>> path = os.path.join(tempfile.mkdtemp(), "ticket.safetensors")
>>> _ = export_ticket(model, mask, path, "csr", model_name="lenet_300_100", input_shape=(1, 28, 28), num_classes=10)
>>> x = torch.randn(4, 1, 28, 28)
>>> bool(torch.allclose(load_exported(path)(x), model(x), atol=1e-5))
True
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lottery import __version__
from lottery.errors import ConfigError, CorruptFileError
from lottery.export_checks import SEP as _SEP
from lottery.export_checks import check_sizes, check_tensors, expected_state, parse_field
from lottery.export_physical import check_physical, physical_tensors, shrink_to
from lottery.storage.atomic import atomic_write
from lottery.masks import Mask
from lottery.models import build_model
from lottery.models.common import example_batch
from lottery.session import build_network, network_shapes
from lottery.storage.rundir import RunDir, refuse_run_file

FORMAT = "lottery-ticket/1"
LAYOUTS = ("dense", "csr", "bitmask", "physical")  # physical: the smaller dense network (lottery/export_physical.py)


# -- writing ----------------------------------------------------------------------------------------------
def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """A weight as (out, fan_in): the matrix a Linear multiplies by, or a conv's im2col form."""
    return t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(1, -1)


def _encode(name: str, weight: torch.Tensor, keep: torch.Tensor, layout: str) -> dict[str, torch.Tensor]:
    weight, keep = weight.detach().cpu(), keep.detach().cpu()
    if layout == "bitmask":
        bits = np.packbits(keep.numpy().reshape(-1))
        return {f"{name}{_SEP}bits": torch.from_numpy(bits), f"{name}{_SEP}values": weight[keep].contiguous()}
    rows = _as_rows(weight * keep)
    keep2 = _as_rows(keep)
    row_ptr = torch.zeros(rows.shape[0] + 1, dtype=torch.int64)
    row_ptr[1:] = keep2.sum(1).cumsum(0)
    cols = keep2.nonzero()[:, 1]  # row-major, so already sorted by row then column
    col_dtype = torch.int16 if rows.shape[1] <= torch.iinfo(torch.int16).max else torch.int32
    return {f"{name}{_SEP}crow": row_ptr.to(torch.int32), f"{name}{_SEP}col": cols.to(col_dtype),
            f"{name}{_SEP}values": rows[keep2].contiguous()}


def ticket_tensors(model: nn.Module, mask: Mask, layout: str = "csr") -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors of an export file and the shapes of the sparse-coded weights (``{name: shape}``)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown export format '{layout}'; choose one of: {', '.join(LAYOUTS)}")
    mask.check_fits(model)
    state = model.state_dict()
    tensors, sparse = {}, {}
    for key, value in state.items():
        if layout != "dense" and key in mask:
            tensors.update(_encode(key, value, mask[key], layout))
            sparse[key] = list(value.shape)
        elif key in mask:  # dense layout: the masked weights, exactly zero where pruned
            tensors[key] = torch.where(mask[key].to(value.device), value, 0.0).detach().cpu().contiguous()
        else:
            tensors[key] = value.detach().cpu().contiguous()
    return tensors, sparse


def export_ticket(model: nn.Module, mask: Mask, path: str | os.PathLike, layout: str = "csr", *, model_name: str,
                  input_shape, num_classes: int, model_options: dict | None = None, activation: str | None = None,
                  extra: dict | None = None) -> Path:
    """Write ``model`` under ``mask`` to ``path`` in ``layout``; the header holds what ``load_exported`` needs."""
    from safetensors.torch import save

    units: dict = {}
    if layout == "physical":  # the smaller dense network, its units recorded to rebuild its shapes
        (tensors, units), sparse = physical_tensors(model, mask), {}
        check_physical(model, mask, tensors, units, input_shape)  # before the file exists
    else:
        tensors, sparse = ticket_tensors(model, mask, layout)
    meta = {
        "format": FORMAT, "layout": layout, "model": str(model_name),
        "model_options": json.dumps(model_options or {}), "activation": activation or getattr(model, "activation", "relu"),
        "input_shape": json.dumps(list(input_shape)), "num_classes": str(int(num_classes)),
        "sparse": json.dumps(sparse), "density": repr(mask.density), "lottery_version": __version__,
        "extra": json.dumps(extra or {}), "units": json.dumps(units),
    }
    blob = save(tensors, metadata=meta)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(blob)

    atomic_write(path, write)
    return Path(path)


def export_run(run_dir: str | os.PathLike, level: int, path: str | os.PathLike | None = None,
               layout: str = "csr") -> Path:
    """Export level ``level``'s trained ticket of a run directory (default: ``level_NN/ticket-<layout>.safetensors``)."""
    run = RunDir(run_dir)
    if path is not None:
        refuse_run_file(path, "--out")
    cfg = run.config()
    results = run.read_results_lenient() or {"levels": []}
    done = sorted(e["level"] for e in results["levels"])
    if level not in done:
        raise ConfigError(f"{run.path} has no finished level {level}; finished levels: {done or 'none yet'}")
    if next(e for e in results["levels"] if e["level"] == level)["status"] != "ok":
        ok = [e["level"] for e in results["levels"] if e["status"] == "ok"]
        raise ConfigError(f"level {level} of {run.path} diverged: its weights are not a ticket; "
                          f"levels that trained: {ok or 'none'}")
    mask = run.load_mask(level)
    if mask is None:
        raise CorruptFileError(f"{run.level_dir(level)} has no mask.npz; the run directory is damaged")
    input_shape, num_classes = network_shapes(cfg, results)  # the run's record; the data set only for old runs
    model = build_network(cfg, input_shape, num_classes, "cpu")
    state = run.load_state(f"level_{level:02d}/final.pt", like=model.state_dict())
    if state is None:
        raise CorruptFileError(f"{run.level_dir(level)} has no final.pt; the run directory is damaged")
    model.load_state_dict(state)
    mask.apply(model)
    out = Path(path) if path is not None else run.level_dir(level) / f"ticket-{layout}.safetensors"
    if not os.access(out.parent if out.parent.exists() else Path.cwd(), os.W_OK):
        raise ConfigError(f"{out.parent} is not writable; pass --out FILE somewhere writable")
    return export_ticket(model, mask, out, layout, model_name=cfg.model, model_options=cfg.model_options,
                         activation=cfg.activation, input_shape=input_shape, num_classes=num_classes,
                         extra={"run": run.path.name, "level": level, "dataset": cfg.dataset,
                                "structure": cfg.structure})


# -- reading ----------------------------------------------------------------------------------------------
def read_header(path: str | os.PathLike) -> dict:
    """The export header (model name, layout, shapes, density, ...); a file that is not an export is an error."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"export file {path} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # SafetensorError, OSError, a header that is not JSON: all mean "not our file"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CorruptFileError(f"{path} is not a lottery ticket file ({first}); write one with `lottery export`") from None
    if meta.get("format") != FORMAT:
        raise CorruptFileError(f"{path} is a safetensors file but not a lottery ticket (no '{FORMAT}' header); "
                               "write one with `lottery export`")
    try:
        header = dict(meta)
        for k in ("model_options", "input_shape", "sparse", "extra"):
            header[k] = parse_field(meta, k)
        header["num_classes"] = int(meta["num_classes"])
        header["density"] = float(meta["density"])
        if header["layout"] not in LAYOUTS or not isinstance(header["sparse"], dict):
            raise ValueError(f"layout {header['layout']!r}")
        check_sizes(header)
    except (KeyError, ValueError, TypeError) as e:
        raise CorruptFileError(f"{path} has a damaged lottery ticket header ({e}); export the ticket again") from None
    return header


def _decode(name: str, shape: list, t: dict[str, torch.Tensor], layout: str) -> torch.Tensor:
    """One dense weight from its sparse code; every index is checked, so a forged file cannot read out of bounds."""
    n = math.prod(shape)
    rows = shape[0] if len(shape) > 1 else 1
    cols = n // rows if rows else 0
    values = t[f"{name}{_SEP}values"]
    if values.dim() != 1 or not values.is_floating_point():
        raise ValueError(f"'{name}' values must be a 1-D float tensor")
    if layout == "bitmask":
        bits = t[f"{name}{_SEP}bits"]
        if bits.dtype != torch.uint8 or bits.shape != ((n + 7) // 8,):
            raise ValueError(f"'{name}' holds {bits.numel()} bytes of bits, expected {(n + 7) // 8}")
        keep = torch.from_numpy(np.unpackbits(bits.numpy(), count=n).astype(bool))
        if int(keep.sum()) != len(values):
            raise ValueError(f"'{name}' has {int(keep.sum())} kept bits but {len(values)} values")
        out = torch.zeros(n, dtype=values.dtype)
        out[keep] = values
        return out.reshape(shape)
    crow, col = t[f"{name}{_SEP}crow"].long(), t[f"{name}{_SEP}col"].long()
    if crow.shape != (rows + 1,) or col.shape != values.shape:
        raise ValueError(f"'{name}' CSR arrays have the wrong lengths for shape {shape}")
    # check_invariants: monotone row pointers, in-range sorted columns (else a forged index would write anywhere)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": true, and not the user's concern here
        warnings.simplefilter("ignore", UserWarning)
        csr = torch.sparse_csr_tensor(crow, col, values, size=(rows, cols), check_invariants=True)
    return csr.to_dense().reshape(shape)


def load_state(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, dense state dict) of an export file; the tensors are checked against the header's model first."""
    from safetensors.torch import load_file

    header = read_header(path)
    try:
        t = load_file(os.fspath(path))
        check_tensors(header, t, expected_state(header, path))
        state = {k: v for k, v in t.items() if _SEP not in k}
        for name, shape in header["sparse"].items():
            if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
                raise ValueError(f"'{name}' has a malformed shape")
            state[name] = _decode(name, shape, t, header["layout"])
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CorruptFileError(f"{path} holds damaged ticket tensors ({e}); export the ticket again") from None
    return header, state


def load_exported(path: str | os.PathLike, sparse: bool = False) -> nn.Module:
    """Rebuild the exported model (in eval mode); ``sparse=True`` runs its Linear layers as CSR matmuls."""
    header, state = load_state(path)
    model = build_model(header["model"], tuple(header["input_shape"]), header["num_classes"],
                        activation=header["activation"], **header["model_options"])
    if header["layout"] == "physical":  # the smaller network: cut the full one to the stored units' shapes
        shrink_to(model, json.loads(header.get("units", "{}")))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CorruptFileError(f"{path} does not fit model '{header['model']}' ({str(e).splitlines()[0]})") from None
    model.eval()
    return to_sparse(model) if sparse else model


# -- sparse inference -------------------------------------------------------------------------------------
class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` stored as a CSR tensor; computes ``W @ x^T`` with ``torch.sparse`` kernels."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to_sparse_csr())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = (self.weight @ flat.t().contiguous()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def to_sparse(model: nn.Module) -> nn.Module:
    """``model`` (in place) with every Linear layer replaced by a :class:`SparseLinear`."""
    with warnings.catch_warnings():  # see _decode
        warnings.simplefilter("ignore", UserWarning)
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(module, child_name, SparseLinear(child))
    return model


# -- the report -------------------------------------------------------------------------------------------
def count_macs(model: nn.Module, input_shape) -> tuple[int, int]:
    """(dense, sparse) multiply-adds of one forward pass over Linear and Conv layers (other ops are not counted)."""
    totals = [0, 0]

    def hook(module, inputs, output):
        w = module.weight
        positions = output.numel() // output.shape[0] // w.shape[0]  # output pixels (1 for a Linear)
        totals[0] += w.numel() * positions
        totals[1] += int(torch.count_nonzero(w)) * positions

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return totals[0], totals[1]


def measure_latency(model: nn.Module, input_shape, batch: int, min_run_time: float = 0.3, threads: int = 1,
                    clock: str = "wall") -> float:
    """Median seconds per forward pass of a ``batch`` of random inputs on ``threads`` threads.

    ``clock="cpu"`` times this thread's CPU time instead of wall time: with ``threads=1``, what the kernels cost on a
    machine shared with other processes, where wall time also measures the scheduler.

    Blocked runs, as ``torch.utils.benchmark``'s ``blocked_autorange``: each block repeats the call enough times to
    last >= 10 ms, blocks go on until ``min_run_time`` has passed (3 at least), and the median block wins. Timed
    with ``time.perf_counter`` because importing ``torch.utils.benchmark`` imports torch's C++-extension builder,
    which prints a "No CUDA runtime is found" warning on CPU-only machines.
    """
    import statistics
    import time

    if clock not in ("wall", "cpu"):
        raise ConfigError(f"clock must be wall or cpu, got {clock!r}")
    now = time.perf_counter if clock == "wall" else time.thread_time
    x = example_batch(model, input_shape, batch)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            model(x)  # warm up

            def block(n: int) -> float:
                start = now()
                for _ in range(n):
                    model(x)
                return now() - start

            n = 1
            while (t := block(n)) < 0.01 and n < 1 << 20:
                n *= 10 if t < 0.001 else 2
            times, spent = [], 0.0
            while spent < min_run_time or len(times) < 3:
                t = block(n)
                times.append(t / n)
                spent += t
        return statistics.median(times)
    finally:
        torch.set_num_threads(before)


def export_report(path: str | os.PathLike, batch_sizes=(1, 256), min_run_time: float = 0.3,
                  dense_checkpoint: str | os.PathLike | None = None, threads: int = 1) -> dict:
    """File size vs dense, multiply-adds vs dense, and CPU latency dense vs sparse for an export file.

    Latency is timed on ``threads`` threads (default 1: on a shared machine, multi-threaded timings of small
    kernels measure the scheduler more than the kernel).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    from safetensors.torch import save

    header, state = load_state(path)
    shape = tuple(header["input_shape"])
    if header["layout"] == "physical":  # the full-size network (its weights do not matter for timing) vs the export
        dense = build_model(header["model"], shape, header["num_classes"], activation=header["activation"],
                            **header["model_options"]).eval()
        sparse = load_exported(path)
        dense_bytes = len(save({k: v.contiguous() for k, v in dense.state_dict().items()}))
        macs_dense, macs_sparse = count_macs(dense, shape)[0], count_macs(sparse, shape)[0]
    else:
        dense = load_exported(path)
        dense_bytes = len(save({k: v.contiguous() for k, v in state.items()}))  # the same ticket, dense layout
        macs_dense, macs_sparse = count_macs(dense, shape)
        sparse = load_exported(path, sparse=True)
    latency = {}
    for b in batch_sizes:
        t_dense = measure_latency(dense, shape, b, min_run_time, threads)
        t_sparse = measure_latency(sparse, shape, b, min_run_time, threads)
        latency[b] = {"dense_ms": t_dense * 1e3, "sparse_ms": t_sparse * 1e3, "speedup": t_dense / t_sparse}
    report = {
        "path": str(path), "layout": header["layout"], "model": header["model"], "density": header["density"],
        "file_bytes": os.path.getsize(path), "dense_file_bytes": dense_bytes,
        "macs_dense": macs_dense, "macs_sparse": macs_sparse, "latency": latency,
        "threads": threads, "structure": header["extra"].get("structure", "unstructured") if isinstance(
            header["extra"], dict) else "unstructured",
        "sparse_layers": sum(isinstance(m, SparseLinear) for m in sparse.modules()),
        "dense_layers": sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in sparse.modules()),
    }
    if dense_checkpoint is not None and os.path.exists(dense_checkpoint):
        report["checkpoint_bytes"] = os.path.getsize(dense_checkpoint)
    return report


def format_report(r: dict) -> str:
    lines = [
        f"ticket: {r['path']}  ({r['model']}, {r['layout']}, density {r['density']:.2%})",
        f"file size: {r['file_bytes']:,} bytes vs {r['dense_file_bytes']:,} dense "
        f"({r['file_bytes'] / r['dense_file_bytes']:.3f}x)"
        + (f"; training checkpoint final.pt {r['checkpoint_bytes']:,} bytes" if "checkpoint_bytes" in r else ""),
        f"multiply-adds per example: {r['macs_sparse']:,} vs {r['macs_dense']:,} dense "
        f"({r['macs_sparse'] / max(1, r['macs_dense']):.3f}x; Linear/Conv layers only)",
        f"CPU latency ({r['threads']} threads; {r['sparse_layers']} Linear layers as CSR matmuls"
        + (f", {r['dense_layers']} conv layers dense" if r["dense_layers"] else "") + "):"
        if r["layout"] != "physical" else
        f"CPU latency ({r['threads']} threads; full-size network vs the exported smaller dense one):",
    ]
    if ":" in r.get("structure", ""):
        lines.insert(1, f"{r['structure']} ticket: on a CPU it runs dense (no n:m kernels); on CUDA, "
                        "lottery.export_physical.to_semi_structured runs 2:4 Linear layers on sparse tensor cores")
    small = "exported" if r["layout"] == "physical" else "sparse"
    for b, t in r["latency"].items():
        verdict = (f"{small} pays off" if t["speedup"] > 1.1 else "no gain" if t["speedup"] > 0.9
                   else f"{small} is slower")
        lines.append(f"  batch {b:>4}: dense {t['dense_ms']:.3f} ms, {small} {t['sparse_ms']:.3f} ms "
                     f"-> {t['speedup']:.2f}x ({verdict})")
    return "\n".join(lines)
