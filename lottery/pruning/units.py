"""Units of a network and what couples them: which layers' output units must be kept or dropped together.

A unit is an output row of a Linear weight or an output channel of a convolution. Dropping unit ``c`` of a layer
also makes column ``c`` of every layer that reads it dead (its constant output, ``act(bias)``, would otherwise
still reach them), and a residual sum couples the units of every layer that adds into it: channel ``c`` of the
stream goes only when every one of them drops it, and only when everything added into the sum is such a layer's
output (a parameter, the input or a padded shortcut added in would keep the channel: such groups are frozen).
``unit_groups`` finds this from the model's ``torch.fx`` graph:
from each prunable layer it follows the data through ops that keep channels apart (activations, pooling, batch
norm, flatten, dropout, sums) to the prunable layers that read it. A path through anything else (a concatenation,
a slice, a layer this mask does not prune) freezes the group: its units are never dropped, which is always safe.
Layers whose units reach the model's output are never dropped either (the classes).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from lottery.errors import ConfigError
from lottery.masks import PRUNABLE_MODULES

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_PASS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Identity, nn.Dropout,
                 nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d, nn.Flatten)
_PASS_FUNCTIONS = {F.relu, torch.relu, torch.tanh, torch.sigmoid, F.leaky_relu, F.gelu, F.silu, torch.flatten,
                   F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.dropout}
_PASS_METHODS = {"relu", "tanh", "sigmoid", "flatten", "contiguous"}
_SUMS = {operator.add, operator.iadd, torch.add}


@dataclass
class UnitGroup:
    """Layers whose output units are kept or dropped together (one layer unless a residual sum couples them).

    ``producers``: weight names whose dim 0 are the units; ``consumers``: weight names that read them (unit ``c`` is
    ``w.reshape(out, size, -1)[:, c]``: an input channel of a conv, a block of a flattened Linear input);
    ``norms``: batch-norm modules on these channels; ``frozen``: why its units are never dropped (None: prunable).
    """

    producers: list[str]
    size: int
    consumers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    frozen: str | None = None

    @property
    def key(self) -> str:
        return self.producers[0]


def _module_name(weight: str) -> str:
    return weight.rpartition(".")[0]


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # fx raises many kinds (TraceError, TypeError, NotImplementedError) for dynamic code
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"structured pruning needs a model torch.fx can trace ({type(model).__name__}: {first}); "
                          "use structure unstructured or n:m, or write forward() without data-dependent control "
                          "flow") from None


def unit_groups(model: nn.Module, weights: list[str]) -> list[UnitGroup]:
    """The unit groups of the layers owning ``weights`` (a mask's keys), in the order of ``weights``."""
    graph = _trace(model)
    modules = dict(graph.named_modules())
    owner = {_module_name(w): w for w in weights
             if w.endswith("weight") and isinstance(modules.get(_module_name(w)), PRUNABLE_MODULES)}
    reach: dict[str, dict] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module" and node.target in owner:
            reach[owner[node.target]] = _follow(node, modules, owner)
    # union of layers that add into the same residual sum
    parent = {w: w for w in reach}

    def find(w: str) -> str:
        while parent[w] != w:
            w = parent[w]
        return w

    arrived: dict[fx.Node, set] = {}  # the operands of each sum that some layer's units reach it through
    for r in reach.values():
        for s, via in r["sums"].items():
            arrived.setdefault(s, set()).update(via)
    for r in reach.values():
        other = next((a for s in r["sums"] for a in s.all_input_nodes if a not in arrived[s]), None)
        if other is not None:
            r["frozen"] = r["frozen"] or \
                f"its units are added to {_describe(other, modules)}, which units cannot follow"
    by_sum: dict[fx.Node, str] = {}
    for w, r in reach.items():
        for s in r["sums"]:
            if s in by_sum:
                parent[find(w)] = find(by_sum[s])
            else:
                by_sum[s] = w
    groups: dict[str, UnitGroup] = {}
    for w in weights:
        if w not in reach:
            continue
        root = find(w)
        r, size = reach[w], modules[_module_name(w)].weight.shape[0]
        g = groups.setdefault(root, UnitGroup([], size))
        g.producers.append(w)
        g.consumers += [c for c in r["consumers"] if c not in g.consumers]
        g.norms += [n for n in r["norms"] if n not in g.norms]
        if size != g.size:
            g.frozen = g.frozen or f"{w} has {size} units, {g.producers[0]} {g.size}"
        g.frozen = g.frozen or r["frozen"]
        if isinstance(modules[_module_name(w)], nn.Conv1d | nn.Conv2d | nn.Conv3d) and \
                modules[_module_name(w)].groups != 1:
            g.frozen = g.frozen or f"{w} is a grouped convolution"
    for g in groups.values():
        for c in g.consumers:
            module = modules[_module_name(c)]
            if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.groups != 1:
                g.frozen = g.frozen or f"{c} is a grouped convolution"
            elif module.weight[0].numel() % g.size:
                g.frozen = g.frozen or f"{c}'s inputs do not split into {g.size} units"
    return sorted(groups.values(), key=lambda g: weights.index(g.key))


def _follow(start: fx.Node, modules: dict, owner: dict) -> dict:
    """Where one layer's output units go: consumers, norms, residual sums, and whether anything stops it."""
    out = {"consumers": [], "norms": [], "sums": {}, "frozen": None}  # sums: {sum node: operands reached through}
    todo, seen = [(user, start) for user in start.users], set()
    while todo:
        node, came = todo.pop()
        if _is_sum(node):
            out["sums"].setdefault(node, set()).add(came)
        if node in seen:
            continue
        seen.add(node)
        module = modules.get(node.target) if node.op == "call_module" else None
        if node.op == "output":
            out["frozen"] = out["frozen"] or "its units are the model's outputs"
            continue
        if module is not None and node.target in owner:
            out["consumers"].append(owner[node.target])
            continue
        if isinstance(module, NORMS):
            out["norms"].append(node.target)
        elif not (_is_sum(node) or isinstance(module, _PASS_MODULES) or node.op == "call_function" and
                  node.target in _PASS_FUNCTIONS or node.op == "call_method" and node.target in _PASS_METHODS):
            out["frozen"] = out["frozen"] or f"its output goes through {_describe(node, modules)}, which units " \
                                             "cannot follow"
            continue
        todo.extend((user, node) for user in node.users)
    return out


def _is_sum(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _SUMS or node.op == "call_method" and node.target == "add"


def _describe(node: fx.Node, modules: dict) -> str:
    """A graph node as a message names it: the module's class, the parameter, the input, or the function."""
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op == "get_attr":
        return f"parameter {node.target}"
    if node.op == "placeholder":
        return "the model's input"
    return f"{node.op} {getattr(node.target, '__name__', node.target)}"


def unit_view(t: torch.Tensor, size: int) -> torch.Tensor:
    """A consumer's weight (or mask) as ``(out, size, rest)``: ``[:, c]`` is everything unit ``c`` feeds."""
    return t.reshape(t.shape[0], size, -1)
