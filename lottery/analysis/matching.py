"""Weight matching: permute one network's hidden units so that its weights line up with another's.

Hidden units of a layer can be listed in any order without changing the function the network computes: permuting
the rows of layer l (and its bias) together with the columns of layer l+1 gives the same outputs. Two networks
trained (or drawn) independently therefore differ by an unknown permutation before they differ in anything
else. Weight matching (as in "Git Re-Basin") finds, for each hidden layer, the permutation of network B's units
that maximizes ``sum <A's weights, permuted B's weights>``: one linear assignment per layer given its neighbours'
permutations, repeated layer by layer until no permutation changes (coordinate ascent; every step can only raise
the objective, so it ends).

Permute understands one unit structure: a chain of ``nn.Linear`` layers (a ``flatten`` first, elementwise
activations between; ``mlp``, ``deep_mlp``, ``lenet_300_100``). Anything else is refused in one line.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from lottery.errors import ConfigError

# Modules that act on each unit alone and hold no parameters: permuting the units before or after is the same.
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.GELU, nn.ELU, nn.SiLU, nn.Softplus)


def linear_chain(model: nn.Module) -> list[str]:
    """Names of the Linear layers of ``model`` in order, if it is a chain whose hidden units may be permuted;
    otherwise a ConfigError naming the first module that is not."""
    children = list(model.named_children()) if isinstance(model, nn.Sequential) else []
    if not children:
        raise ConfigError(f"permute aligns the hidden units of a plain chain of Linear layers (mlp, deep_mlp, "
                          f"lenet_300_100); {type(model).__name__} is not an nn.Sequential of layers, so its units "
                          "cannot be matched: use --align none,sign")
    layers: list[str] = []
    for i, (name, module) in enumerate(children):
        if isinstance(module, nn.Linear):
            if layers and module.in_features != getattr(model, layers[-1]).out_features:
                break
            layers.append(name)
        elif isinstance(module, nn.Flatten) and not layers or isinstance(module, ELEMENTWISE) and layers:
            continue
        else:
            break
    else:
        if len(layers) >= 2:
            return layers
        raise ConfigError(f"permute needs at least one hidden layer to align; {type(model).__name__} has "
                          f"{len(layers)} Linear layer(s): use --align none,sign")
    raise ConfigError(f"permute aligns the hidden units of a plain chain of Linear layers (mlp, deep_mlp, "
                      f"lenet_300_100); module '{name}' ({type(module).__name__}) of this model is not one whose "
                      "units it can permute: use --align none,sign")


def permute_units(state: Mapping[str, torch.Tensor], layers: list[str], perms: list[torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """``state`` with the hidden units after ``layers[i]`` reordered by ``perms[i]`` (new unit j = old unit
    ``perms[i][j]``): rows of that layer's weight and bias, columns of the next layer's weight. The network
    computes the same function."""
    if len(perms) != len(layers) - 1:
        raise ConfigError(f"{len(layers)} Linear layers have {len(layers) - 1} hidden layers; got {len(perms)} "
                          "permutations")
    out = dict(state)
    for layer, nxt, p in zip(layers[:-1], layers[1:], perms):
        p = p.to(state[f"{layer}.weight"].device)
        out[f"{layer}.weight"] = out[f"{layer}.weight"][p]
        if f"{layer}.bias" in out:
            out[f"{layer}.bias"] = out[f"{layer}.bias"][p]
        out[f"{nxt}.weight"] = out[f"{nxt}.weight"][:, p]
    return out


def _f64(state: Mapping[str, torch.Tensor], name: str) -> np.ndarray | None:
    return state[name].detach().double().cpu().numpy() if name in state else None


def weight_matching(reference: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor], layers: list[str],
                    max_sweeps: int = 100) -> tuple[list[torch.Tensor], int]:
    """Permutations of ``other``'s hidden units (one per hidden layer, for :func:`permute_units`) that line its
    weights up with ``reference``'s, and the number of sweeps over the layers it took.

    Layer l's assignment scores reference unit i against other unit j by ``<A_l[i], B_l[j] (inputs permuted)> +
    a_l[i] b_l[j] + <A_{l+1}[:, i], B_{l+1}[:, j] (outputs permuted)>`` and solves it exactly
    (``scipy.optimize.linear_sum_assignment``). Sweeps go first to last layer, deterministically."""
    from scipy.optimize import linear_sum_assignment  # 0.3 s: imported when matching, not by every CLI start

    a_w = [_f64(reference, f"{n}.weight") for n in layers]
    b_w = [_f64(other, f"{n}.weight") for n in layers]
    a_b = [_f64(reference, f"{n}.bias") for n in layers]
    b_b = [_f64(other, f"{n}.bias") for n in layers]
    for n, a, b in zip(layers, a_w, b_w):
        if a.shape != b.shape:
            raise ConfigError(f"'{n}.weight' is {tuple(a.shape)} in one network and {tuple(b.shape)} in the other: "
                              "only networks of one architecture can be matched")
    perms = [np.arange(w.shape[0]) for w in a_w[:-1]]
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):
        changed = False
        for l, perm in enumerate(perms):
            b_in = b_w[l] if l == 0 else b_w[l][:, perms[l - 1]]
            b_out = b_w[l + 1] if l + 1 == len(perms) else b_w[l + 1][perms[l + 1], :]
            score = a_w[l] @ b_in.T + a_w[l + 1].T @ b_out
            if a_b[l] is not None and b_b[l] is not None:
                score += np.outer(a_b[l], b_b[l])
            _, cols = linear_sum_assignment(score, maximize=True)
            # Keep the old permutation on a tie: a new one must raise the objective, so the ascent ends.
            if score[np.arange(len(cols)), cols].sum() > score[np.arange(len(perm)), perm].sum() + 1e-12 * (
                    1 + abs(score).max()):
                perms[l], changed = cols, True
        if not changed:
            break
    return [torch.as_tensor(p, dtype=torch.long) for p in perms], sweeps
