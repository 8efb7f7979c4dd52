"""Checks of an exported ticket file before anything is built from it (``lottery.export.load_state``).

A forged header must not make the loader allocate what the file does not hold: its model is built on the meta
device (no memory) and must match the stored tensors' names, shapes and dtypes before anything real is made;
sizes and nesting are bounded; dtypes the format never writes are refused. Each check raises a ValueError naming
the first problem (the loader turns it into one CorruptFileError line).
"""
from __future__ import annotations

import json
import math

import torch

from lottery.errors import CorruptFileError, LotteryError
from lottery.export_physical import shrink_to
from lottery.models import build_model

SEP = "::"  # "fc1.weight::values": cannot collide with a state_dict key (those never hold "::")
MAX_DEPTH = 16  # header JSON nesting; an export's deepest field (model_options) is 2-3 levels deep
MAX_INPUT = 1 << 24  # elements of one input example (a 3 x 2048 x 2048 image is 12.6M)
_CODE_DTYPES = {"crow": (torch.int32,), "col": (torch.int16, torch.int32), "bits": (torch.uint8,)}


def parse_field(meta: dict, key: str):
    """One JSON-coded header field, its nesting bounded (a deep one would exhaust the recursion limit)."""
    try:
        value = json.loads(meta[key])
    except RecursionError:
        raise ValueError(f"{key} is nested too deeply") from None
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"{key} is nested more than {MAX_DEPTH} deep")
        if isinstance(v, dict):
            stack += [(x, depth + 1) for x in v.values()]
        elif isinstance(v, list):
            stack += [(x, depth + 1) for x in v]
    return value


def check_sizes(header: dict) -> None:
    """The input shape and class count are sizes, small enough for one example to be allocated."""
    shape = header["input_shape"]
    if not (isinstance(shape, list) and 1 <= len(shape) <= 4 and all(type(d) is int and d >= 1 for d in shape)
            and math.prod(shape) <= MAX_INPUT):
        raise ValueError(f"input_shape {str(shape)[:60]} is not 1-4 positive sizes of at most {MAX_INPUT:,} "
                         "elements in all")
    if not 1 <= header["num_classes"] <= MAX_INPUT:
        raise ValueError(f"num_classes {header['num_classes']} is out of range")
    if not isinstance(header["model_options"], dict):
        raise ValueError("model_options is not a table")


def expected_state(header: dict, path) -> dict[str, torch.Tensor]:
    """The header's model's state dict as meta tensors (shapes and dtypes, no memory)."""
    try:
        with torch.device("meta"):
            model = build_model(header["model"], tuple(header["input_shape"]), header["num_classes"],
                                activation=header["activation"], **header["model_options"])
            if header.get("layout") == "physical":  # the smaller network: the stored units' shapes
                shrink_to(model, json.loads(header.get("units", "{}")))
        return model.state_dict()
    except (LotteryError, TypeError, ValueError, RuntimeError, NotImplementedError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CorruptFileError(f"{path} names a model that cannot be built ({first}); export the ticket again") from None


def check_tensors(header: dict, stored: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Every tensor of the header's model is stored once (dense, or sparse-coded under its own shape) with the
    dtype the model holds; code arrays have the dtypes ``export_ticket`` writes. A ValueError names the first
    mismatch."""
    sparse, model = header["sparse"], header["model"]
    for name, like in expected.items():
        if name in sparse:
            if sparse[name] != list(like.shape):
                raise ValueError(f"'{name}' is stored as shape {str(sparse[name])[:60]} but model '{model}' has "
                                 f"{list(like.shape)}: the file does not fit its header")
            values = stored.get(f"{name}{SEP}values")
            if values is not None and values.dtype != like.dtype:
                raise ValueError(f"'{name}' values are {str(values.dtype)[6:]}; the format writes the model's "
                                 f"{str(like.dtype)[6:]}")
            for code, allowed in _CODE_DTYPES.items():
                t = stored.get(f"{name}{SEP}{code}")
                if t is not None and t.dtype not in allowed:
                    raise ValueError(f"'{name}' {code} is {str(t.dtype)[6:]}; the format writes "
                                     f"{' or '.join(str(d)[6:] for d in allowed)}")
        elif name in stored:
            t = stored[name]
            if t.shape != like.shape:
                raise ValueError(f"'{name}' is stored as shape {list(t.shape)} but model '{model}' has "
                                 f"{list(like.shape)}: the file does not fit its header")
            if t.dtype != like.dtype:
                raise ValueError(f"'{name}' is {str(t.dtype)[6:]}; the format writes the model's {str(like.dtype)[6:]}")
        else:
            raise ValueError(f"'{name}' of model '{model}' is not in the file: it does not fit its header")
    extra = sorted({k.split(SEP)[0] for k in stored} | set(sparse) - set(expected))
    extra = [k for k in extra if k not in expected]
    if extra:
        raise ValueError(f"'{extra[0]}' is not a tensor of model '{model}': the file does not fit its header")
