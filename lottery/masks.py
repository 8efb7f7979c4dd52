"""`Mask`: which weights of a model are kept. A mapping ``param_name -> bool tensor`` saved on its own.

The model's ``state_dict`` keys never change (no ``weight_orig``), and a mask is applied explicitly, never through
hooks, so a masked model is an ordinary ``nn.Module`` that any training code can use.
"""
from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from lottery.errors import CorruptFileError, MaskMismatchError
from lottery.layers import WEIGHT_LAYERS
from lottery.storage.atomic import atomic_write, open_regular

PRUNABLE_MODULES = WEIGHT_LAYERS  # a mask covers their weights unless ``include`` says otherwise
_FORMAT = "lottery-mask/1"


_MAX_HEADER = 1 << 24  # bytes of JSON names and shapes: far above any real model's


def _read_member(z: zipfile.ZipFile, name: str, count: int | None) -> bytes:
    """The data of ``name.npy``: a 1-D uint8 array of ``count`` elements (None: the JSON header, capped).

    The .npy header is parsed first and the promised size checked against the zip entry's, so a forged shape
    is refused before allocation and a member that inflates past its promise is never read past it.
    """
    info = z.getinfo(f"{name}.npy")
    with z.open(info) as member:
        version = np.lib.format.read_magic(member)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"'{name}' has an unsupported array format {version}")
        shape, fortran, dtype = read(member, max_header_size=1 << 16)
        offset = member.tell()
        if dtype != np.uint8 or len(shape) != 1 or fortran:
            raise ValueError(f"'{name}' is a {dtype} array of shape {shape}, expected 1-D uint8")
        expected = shape[0] if count is None else count
        if shape[0] != expected or expected > _MAX_HEADER and count is None:
            raise ValueError(f"'{name}' declares {shape[0]} bytes, expected {expected}")
        if info.file_size != offset + expected:
            raise ValueError(f"'{name}' holds {info.file_size - offset} bytes, its header promises {expected}")
        data = member.read(expected + 1)  # one byte more: a stream longer than its promise is refused
    if len(data) != expected:
        raise ValueError(f"'{name}' holds {len(data)} bytes, its header promises {expected}")
    return data


def _check_like(names: list[str], shapes: list[list[int]], like) -> None:
    """Names and shapes of a mask file against the model (or mask) it is for, before any bits are read."""
    if like is None:
        return
    if isinstance(like, nn.Module):
        params = dict(like.named_parameters())
        like = {k: params[k] for k in default_prunable(like)}
    want = {k: list(getattr(v, "shape", v)) for k, v in like.items()}
    got = dict(zip(names, shapes))
    if set(got) != set(want):
        raise ValueError(f"its layers {sorted(got)[:3]} are not the model's {sorted(want)[:3]}")
    bad = next((k for k in names if list(got[k]) != want[k]), None)
    if bad is not None:
        raise ValueError(f"'{bad}' has shape {got[bad]}, the model's is {want[bad]}")


def default_prunable(model: nn.Module) -> list[str]:
    """Names of the ``weight`` of every Linear and Conv1d/2d/3d layer: what IMP prunes unless told otherwise.

    A model with a ``prunable_parameters()`` method names them itself (the transformers: their Linear weights,
    embeddings only on request; lottery/models/transformer.py).
    """
    if callable(getattr(model, "prunable_parameters", None)):
        return list(model.prunable_parameters())
    names = []
    for mod_name, module in model.named_modules():
        if isinstance(module, PRUNABLE_MODULES) and isinstance(getattr(module, "weight", None), nn.Parameter):
            names.append(f"{mod_name}.weight" if mod_name else "weight")
    return names


def _check_header(header: object) -> tuple[list[str], list[list[int]]]:
    """The names and shapes of a mask file's JSON header; ValueError if it is not one ``save`` writes."""
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise ValueError("unknown format tag")
    names, shapes = header.get("names"), header.get("shapes")
    if not (
        isinstance(names, list)
        and isinstance(shapes, list)
        and len(names) == len(shapes)
        and all(isinstance(n, str) for n in names)
        and len(set(names)) == len(names)
        and all(isinstance(s, list) and all(type(d) is int and d >= 0 for d in s) for s in shapes)
    ):
        raise ValueError("malformed header (names and shapes)")
    return names, shapes


class Mask(Mapping):
    """Kept (True) / pruned (False) flags for a model's prunable weights.

    >>> import torch, lottery as lt
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> mask = lt.Mask.ones_like(model)
    >>> sorted(mask), mask.density
    (['0.weight', '2.weight'], 1.0)
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._t: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            if not isinstance(name, str):
                raise TypeError(f"mask keys must be parameter names (str), got {type(name).__name__}")
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"mask['{name}'] must be a torch.bool tensor, got {type(t).__name__}")
            if t.dtype != torch.bool:
                raise TypeError(f"mask['{name}'] has dtype {t.dtype}; masks hold torch.bool tensors (use t != 0)")
            self._t[name] = t

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def ones_like(cls, model: nn.Module, include: Callable[[str, nn.Parameter], bool] | None = None) -> "Mask":
        """All-kept mask over the prunable weights; ``include(name, param)`` decides instead of the default rule."""
        if include is None:
            names = set(default_prunable(model))
            chosen = [(n, p) for n, p in model.named_parameters() if n in names]
        else:
            chosen = [(n, p) for n, p in model.named_parameters() if include(n, p)]
        if not chosen:
            raise MaskMismatchError("the model has no prunable weights (Linear/Conv layers); pass include= to choose")
        return cls({n: torch.ones_like(p, dtype=torch.bool) for n, p in chosen})

    # -- mapping protocol ---------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, density={self.density:.4f})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask) or list(self) != list(other):
            return False
        return all(self[k].shape == other[k].shape and torch.equal(self[k].cpu(), other[k].cpu()) for k in self)

    __hash__ = None  # type: ignore[assignment]

    # -- statistics ---------------------------------------------------------------------------------------
    @property
    def num_total(self) -> int:
        return sum(t.numel() for t in self._t.values())

    @property
    def num_kept(self) -> int:
        return sum(int(torch.count_nonzero(t)) for t in self._t.values())

    @property
    def density(self) -> float:
        """Fraction of prunable weights kept."""
        return self.num_kept / self.num_total

    @property
    def sparsity(self) -> float:
        """Fraction of prunable weights removed."""
        return 1.0 - self.density

    def layer_density(self) -> dict[str, float]:
        return {k: int(torch.count_nonzero(t)) / t.numel() for k, t in self._t.items()}

    def layer_kept(self) -> dict[str, int]:
        return {k: int(torch.count_nonzero(t)) for k, t in self._t.items()}

    # -- set operations -----------------------------------------------------------------------------------
    def _check_same_keys(self, other: "Mask") -> None:
        if set(self) != set(other):
            raise MaskMismatchError(f"masks cover different weights: {sorted(set(self) ^ set(other))}")

    def __and__(self, other: "Mask") -> "Mask":
        self._check_same_keys(other)
        return Mask({k: self[k] & other[k].to(self[k].device) for k in self})

    def __or__(self, other: "Mask") -> "Mask":
        self._check_same_keys(other)
        return Mask({k: self[k] | other[k].to(self[k].device) for k in self})

    def is_subset_of(self, other: "Mask") -> bool:
        """True when every weight kept here is kept in ``other`` (IMP masks nest level after level)."""
        self._check_same_keys(other)
        return all(not bool((self[k] & ~other[k].to(self[k].device)).any()) for k in self)

    def iou(self, other: "Mask", per_layer: bool = False) -> float | dict[str, float]:
        """Jaccard overlap |A ∩ B| / |A ∪ B| of the kept sets (1.0 when both are empty)."""
        self._check_same_keys(other)
        inter = {k: int((self[k] & other[k].to(self[k].device)).sum()) for k in self}
        union = {k: int((self[k] | other[k].to(self[k].device)).sum()) for k in self}
        if per_layer:
            return {k: inter[k] / union[k] if union[k] else 1.0 for k in self}
        total = sum(union.values())
        return sum(inter.values()) / total if total else 1.0

    def to(self, device: torch.device | str) -> "Mask":
        return Mask({k: t.to(device) for k, t in self._t.items()})

    def cpu(self) -> "Mask":
        return self.to("cpu")

    def clone(self) -> "Mask":
        return Mask({k: t.clone() for k, t in self._t.items()})

    # -- models -------------------------------------------------------------------------------------------
    def check_fits(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The model's parameters this mask covers; a clear error if a name is missing or a shape differs."""
        params = dict(model.named_parameters())
        missing = [k for k in self if k not in params]
        if missing:
            raise MaskMismatchError(
                f"mask names {missing[:3]}{'…' if len(missing) > 3 else ''} are not parameters of this model; "
                "the mask was made for another architecture — build the model it came from"
            )
        for k, t in self._t.items():
            if tuple(t.shape) != tuple(params[k].shape):
                raise MaskMismatchError(
                    f"mask['{k}'] has shape {tuple(t.shape)} but the model's parameter is {tuple(params[k].shape)}; "
                    "the mask was made for another model size"
                )
        return {k: params[k] for k in self}

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights in place (masked_fill, so even NaN/inf become exactly 0). No hooks."""
        for name, p in self.check_fits(model).items():
            m = self[name]
            p.masked_fill_(~(m if m.device == p.device else m.to(p.device)), 0.0)
        return model

    def to_torch_prune(self, model: nn.Module) -> nn.Module:
        """Install this mask as ``torch.nn.utils.prune`` ``weight_mask`` buffers (for code built on that API)."""
        from torch.nn.utils import prune as tprune

        params = self.check_fits(model)
        for name in params:
            module_name, _, pname = name.rpartition(".")
            module = model.get_submodule(module_name)
            tprune.custom_from_mask(module, pname, self[name].to(getattr(module, pname).device))
        return model

    @classmethod
    def from_torch_prune(cls, model: nn.Module) -> "Mask":
        """Read the ``<param>_mask`` buffers that ``torch.nn.utils.prune`` installed on ``model``."""
        found = {}
        for buf_name, buf in model.named_buffers():
            if buf_name.endswith("_mask"):
                module_name, _, leaf = buf_name.rpartition(".")
                module = model.get_submodule(module_name) if module_name else model
                pname = leaf[: -len("_mask")]
                if hasattr(module, pname + "_orig"):
                    found[f"{module_name}.{pname}" if module_name else pname] = buf != 0
        if not found:
            raise MaskMismatchError("the model has no torch.nn.utils.prune masks (no '<name>_mask' buffers)")
        return cls(found)

    # -- files --------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write a bit-packed, compressed ``.npz`` (1 bit per weight; no pickle), atomically."""
        data = self.to_bytes()

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(data)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike, like: Mapping[str, object] | nn.Module | None = None) -> "Mask":
        """Read a file written by :meth:`save`; anything else is a clear error, never executed code.

        Every member's array header is read and checked before its data: a declared shape or dtype that does not
        fit the JSON header, or a member that decompresses to more than its header promises (a zip bomb), is
        refused before anything is allocated. With ``like`` (a model, or ``{name: tensor or shape}``), names and
        shapes must match it too, before any bits are read.
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"mask file {path} does not exist")
        with open_regular(path, "mask file") as f:
            try:
                with zipfile.ZipFile(f) as z:
                    names, shapes = _check_header(json.loads(_read_member(z, "header", None).decode()))
                    _check_like(names, shapes, like)
                    if sorted(z.namelist()) != sorted(["header.npy"] + [f"bits_{i}.npy" for i in range(len(names))]):
                        raise ValueError("unexpected members")
                    tensors = {}
                    for i, (name, shape) in enumerate(zip(names, shapes)):
                        n = math.prod(shape)
                        packed = np.frombuffer(_read_member(z, f"bits_{i}", (n + 7) // 8), dtype=np.uint8)
                        tensors[name] = torch.from_numpy(np.unpackbits(packed, count=n).astype(bool)).reshape(shape)
            except (ValueError, KeyError, OSError, zipfile.BadZipFile, EOFError, TypeError, RecursionError,
                    NotImplementedError, RuntimeError) as e:
                raise CorruptFileError(
                    f"{path} is not a lottery mask file ({e}); masks are written by Mask.save — recreate it"
                ) from None
        return cls(tensors)

    def to_bytes(self) -> bytes:
        """The :meth:`save` file as bytes: a JSON header plus one ``np.packbits`` array per tensor."""
        header = {"format": _FORMAT, "names": list(self), "shapes": [list(t.shape) for t in self._t.values()]}
        arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
        for i, t in enumerate(self._t.values()):
            arrays[f"bits_{i}"] = np.packbits(t.detach().cpu().numpy().reshape(-1))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()


@torch.no_grad()
def mask_gradients(model: nn.Module, mask: Mask) -> None:
    """Zero the gradients of pruned weights (call after ``backward``, before ``optimizer.step``), in one fused op.

    A zero gradient keeps a pruned weight, and its momentum and Adam moments, at exactly zero; weight decay of a
    zero weight is zero too. Parameters without a gradient are skipped.

    >>> import torch, lottery as lt
    >>> model = torch.nn.Linear(3, 1, bias=False)
    >>> mask = lt.Mask({"weight": torch.tensor([[True, False, True]])})
    >>> model(torch.ones(1, 3)).sum().backward()
    >>> lt.mask_gradients(model, mask)
    >>> model.weight.grad.tolist()
    [[1.0, 0.0, 1.0]]
    """
    params = mask.check_fits(model)
    pairs = [(p.grad, mask[k]) for k, p in params.items() if p.grad is not None]
    if pairs:
        torch._foreach_mul_([g for g, _ in pairs], [m.to(device=g.device, dtype=g.dtype) for g, m in pairs])
