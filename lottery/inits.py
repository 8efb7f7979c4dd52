"""Named init schemes: how a model's weights start, the variable the init-comparison experiments change.

``init_weights(model, scheme, seed=None, scale=1.0, data=None, **options)`` re-initializes ``model`` in place:
the weights of Linear and Conv1d/2d/3d layers by the scheme, then times ``scale`` (too small: barely learns; too
large: diverges); their biases to 0 (``normal`` takes ``bias=``, e.g. AlexNet's 1); norm layers to weight 1,
bias 0 and fresh running statistics. ``nn.Embedding`` tables (the transformers' token and position embeddings)
are drawn by the scheme's own formula as a ``(num_embeddings, dim)`` matrix (fan_in = dim, as torch counts it:
Kaiming gives rows of norm ~ gain) and scaled with the weights. Other parameters (custom ones) are left alone.
``checkpoint`` is the exception: it loads every tensor from a file. Transformer recipes: ``gpt2`` (N(0, 0.02),
residual output projections / sqrt(their number)), ``transformer_xavier`` (the original Transformer's) and
``pytorch_default`` (each module's own ``reset_parameters``).

``xavier_*`` is Glorot & Bengio's formula: gain 1, as ``torch.nn.init`` has it, whatever the nonlinearity
(``gain="auto"`` follows the activation instead, which on a ReLU net is He's method in all but name). Kaiming
(He's method), orthogonal and sparse take the gain of the model's nonlinearity, ``model.activation`` (every
``lottery.models`` model has one; a plain module counts as ``"relu"``), as ``torch.nn.init.calculate_gain``
defines it. Before version 0.2 ``xavier_*`` followed the activation by default: runs made then are not comparable.

With ``seed`` the weights come from a private ``torch.Generator`` on the CPU: the same seed gives bit-identical
weights on any device and the global RNG is left untouched. With ``seed=None`` the global RNG is used.

A scheme is ``@INIT_SCHEMES.register("name") def fn(model, generator, *, option=default, ...)``: its keyword-only
parameters are its options (anything else is refused with the list), and a ``data`` parameter receives
``init_weights``'s ``data``; schemes without one ignore it, so a driver may always pass a batch.

>>> import torch
>>> from lottery.inits import init_weights
>>> model = init_weights(torch.nn.Sequential(torch.nn.Linear(4, 3)), "normal", seed=0, std=0.5, bias=1.0)
>>> model[0].bias.tolist()
[1.0, 1.0, 1.0]
"""
from __future__ import annotations

import copy
import inspect
import math
import warnings
from numbers import Integral, Real
from typing import Callable

import torch
from torch import nn

from lottery.errors import ConfigError, CorruptFileError
from lottery.storage.atomic import torch_load
from lottery.layers import WEIGHT_LAYERS
from lottery.registry import Registry

INIT_SCHEMES = Registry("init scheme")

GAINS = ("relu", "leaky_relu", "tanh", "sigmoid", "linear")
LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default, which lottery.models uses
NORM_LAYERS = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.RMSNorm,
)


def init_weights(model: nn.Module, scheme: str, seed: int | None = None, scale: float = 1.0,
                 data: torch.Tensor | None = None, **options) -> nn.Module:
    """Re-initialize ``model`` in place with the scheme called ``scheme``; returns ``model``."""
    fn = INIT_SCHEMES.get(scheme)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"init_weights needs a torch.nn.Module, got {type(model).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0):
        raise ConfigError(f"seed must be a non-negative integer or None, got {seed!r}")
    scale = _positive("scale", scale)
    takes_data = "data" in _options_of(fn)
    accepted = [o for o in _options_of(fn) if o != "data"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"its options are: {', '.join(accepted)}" if accepted else "it takes no options"
        raise ConfigError(f"init scheme '{scheme}' has no option {', '.join(map(repr, unknown))}; {takes}")
    if takes_data:
        options["data"] = data
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    fn(model, generator, **options)
    if scale != 1.0:
        with torch.no_grad():
            for _, layer in _layers(model) + _embeddings(model):
                layer.weight.mul_(scale)
    return model


# -- helpers shared by the schemes ----------------------------------------------------------------------------
def _options_of(fn: Callable) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear/Conv layers whose weights the schemes set."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, WEIGHT_LAYERS) and isinstance(getattr(m, "weight", None), nn.Parameter)]


def _embeddings(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The embedding tables the schemes draw besides the layers (none in the convnets and MLPs)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]


def activation_gain(model: nn.Module) -> float:
    """The gain of ``model.activation`` (``"relu"`` when the model does not say)."""
    activation = getattr(model, "activation", "relu")
    if activation not in GAINS:
        raise ConfigError(f"model.activation is {activation!r}, which has no known gain; set it to one of: "
                          f"{', '.join(GAINS)} (the closest match), or pass gain= where the scheme takes it")
    return nn.init.calculate_gain(activation, LEAKY_SLOPE if activation == "leaky_relu" else None)


def _fill(weight: torch.Tensor, fill: Callable, generator: torch.Generator | None) -> None:
    """Draw into a CPU buffer, then copy: the same seed gives the same bits on every device."""
    exact = weight.dtype in (torch.float32, torch.float64)
    buf = torch.empty(weight.shape, dtype=weight.dtype if exact else torch.float32)  # QR has no half kernel
    fill(buf, generator)
    weight.copy_(buf)


@torch.no_grad()
def _per_layer(model: nn.Module, generator, fill: Callable, bias: float = 0.0) -> None:
    layers = _layers(model)
    if not layers:
        raise ConfigError("the model has no Linear or Conv layers to initialize")
    for _, layer in layers:
        _fill(layer.weight, fill, generator)
        if layer.bias is not None:
            layer.bias.fill_(bias)
    for _, table in _embeddings(model):
        _fill(table.weight, fill, generator)
    for module in model.modules():
        if isinstance(module, NORM_LAYERS):
            module.reset_parameters()


def _gain_option(model: nn.Module, value: object, default: object = "auto") -> float:
    """``gain=None`` means ``default``; ``"auto"`` is the gain of ``model.activation``; else a number > 0."""
    value = default if value is None else value
    return activation_gain(model) if value == "auto" else _positive("gain", value)


# -- the schemes ----------------------------------------------------------------------------------------------
@INIT_SCHEMES.register("normal")
def normal(model, generator, *, std=0.01, bias=0.0):
    """N(0, std²) weights, biases ``bias``: the AlexNet recipe (std 0.01, bias 1) that deep nets outgrew."""
    std = _positive("std", std)
    if isinstance(bias, bool) or not isinstance(bias, Real) or not math.isfinite(bias):
        raise ConfigError(f"bias must be a finite number, got {bias!r}")
    _per_layer(model, generator, lambda t, g: nn.init.normal_(t, 0.0, std, generator=g), float(bias))


@INIT_SCHEMES.register("xavier_uniform")
def xavier_uniform(model, generator, *, gain=1.0):
    """U(±gain·sqrt(6 / (fan_in + fan_out))), Glorot & Bengio 2010 (gain 1; ``"auto"``: the activation's)."""
    g = _gain_option(model, gain, default=1.0)
    _per_layer(model, generator, lambda t, gen: nn.init.xavier_uniform_(t, g, generator=gen))


@INIT_SCHEMES.register("xavier_normal")
def xavier_normal(model, generator, *, gain=1.0):
    """N(0, gain²·2 / (fan_in + fan_out)), Glorot & Bengio 2010 (gain 1; ``"auto"``: the activation's)."""
    g = _gain_option(model, gain, default=1.0)
    _per_layer(model, generator, lambda t, gen: nn.init.xavier_normal_(t, g, generator=gen))


def _kaiming(model, generator, mode: str, init_: Callable) -> None:
    if mode not in ("fan_in", "fan_out"):
        raise ConfigError(f"mode must be 'fan_in' (preserves forward variance) or 'fan_out' (backward), got {mode!r}")
    activation = getattr(model, "activation", "relu")
    activation_gain(model)  # validates the activation with a clear error
    _per_layer(model, generator, lambda t, g: init_(t, a=LEAKY_SLOPE, mode=mode, nonlinearity=activation, generator=g))


@INIT_SCHEMES.register("kaiming_uniform")
def kaiming_uniform(model, generator, *, mode="fan_in"):
    """U(±gain·sqrt(3 / fan)), He et al. 2015."""
    _kaiming(model, generator, mode, nn.init.kaiming_uniform_)


@INIT_SCHEMES.register("kaiming_normal")
def kaiming_normal(model, generator, *, mode="fan_in"):
    """N(0, gain² / fan), He et al. 2015."""
    _kaiming(model, generator, mode, nn.init.kaiming_normal_)


@INIT_SCHEMES.register("orthogonal")
def orthogonal(model, generator, *, gain=None):
    """gain × a random (semi-)orthogonal matrix per layer (conv kernels flattened), Saxe et al. 2014."""
    g = _gain_option(model, gain)
    _per_layer(model, generator, lambda t, gen: nn.init.orthogonal_(t, g, generator=gen))


@INIT_SCHEMES.register("gpt2")
def gpt2(model, generator, *, std=0.02):
    """GPT-2's init (Radford et al. 2019): N(0, std²) weights and embeddings, biases 0, LayerNorm 1 and 0, and
    the layers that add into the residual stream (``model.residual_outputs``: 2 per block) divided by
    sqrt(their number), so the stream's variance does not grow with depth. A model that does not list them gets
    plain N(0, std²)."""
    std = _positive("std", std)
    _per_layer(model, generator, lambda t, g: nn.init.normal_(t, 0.0, std, generator=g))
    residual = list(getattr(model, "residual_outputs", ()))
    with torch.no_grad():
        for name in residual:
            model.get_submodule(name).weight.div_(math.sqrt(len(residual)))


@INIT_SCHEMES.register("transformer_xavier")
def transformer_xavier(model, generator):
    """The original Transformer's (Vaswani et al. 2017, as its reference code draws it): Glorot uniform (gain 1)
    weights, biases 0, LayerNorm 1 and 0, embeddings N(0, 1/dim)."""
    _per_layer(model, generator, lambda t, g: nn.init.xavier_uniform_(t, generator=g))
    with torch.no_grad():
        for _, table in _embeddings(model):
            _fill(table.weight, lambda t, g: nn.init.normal_(t, 0.0, t.shape[1] ** -0.5, generator=g),
                  generator)


@INIT_SCHEMES.register("pytorch_default")
def pytorch_default(model, generator):
    """What torch draws when a module is built: each module's ``reset_parameters`` (Linear and Conv:
    U(±1/sqrt(fan_in)) weights and biases; Embedding: N(0, 1); norms: 1 and 0), in module order.

    Drawn on a CPU copy under ``generator``'s seed, so a seed gives the same bits on every device and the global
    RNG is left as it was."""
    if not any(callable(getattr(m, "reset_parameters", None)) for m in model.modules()):
        raise ConfigError("the model has no modules with reset_parameters() to initialize")
    if generator is None:  # the global RNG, on the model's device
        _reset_all(model)
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator.initial_seed())
        cpu = _reset_all(copy.deepcopy(model).cpu())
    with torch.no_grad():
        for mine, drawn in zip(model.state_dict().values(), cpu.state_dict().values()):
            mine.copy_(drawn)


def _reset_all(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    return model


@INIT_SCHEMES.register("zeros")
def zeros(model, generator):
    """All weights and biases 0: no symmetry breaking, so every hidden unit of a layer stays identical."""
    _per_layer(model, generator, lambda t, g: nn.init.zeros_(t))


@INIT_SCHEMES.register("sparse")
def sparse(model, generator, *, sparsity=0.9, std=None):
    """Sparse init (Martens 2010): every unit has the same few nonzero incoming weights, N(0, std²).

    Each unit gets exactly ``ceil(sparsity·fan_in)`` zero inputs, chosen uniformly (conv kernels flattened).
    ``std=None`` picks gain / sqrt(nonzero inputs), so a unit's output variance matches Kaiming's.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, Real) or not 0 <= sparsity < 1:
        raise ConfigError(f"sparsity must be a fraction in [0, 1), got {sparsity!r}")
    std = _positive("std", std) if std is not None else None
    g = activation_gain(model) if std is None else 1.0

    # Not torch.nn.init.sparse_: it zeroes per input column, and its randperm ignores generator= (torch 2.14),
    # which would break seeding and draw from the global RNG.
    def fill(t, gen):
        units = t.view(t.shape[0], -1)
        n_zero = math.ceil(sparsity * units.shape[1])
        units.normal_(0.0, std if std is not None else g / math.sqrt(max(units.shape[1] - n_zero, 1)), generator=gen)
        drop = torch.rand(units.shape, generator=gen).argsort(dim=1)[:, :n_zero]
        units.scatter_(1, drop, 0.0)

    _per_layer(model, generator, fill)


class _StopForward(Exception):
    """Raised by LSUV's hook once the layer it measures has run: the rest of the forward pass is wasted work."""


@INIT_SCHEMES.register("lsuv")
def lsuv(model, generator, *, data=None, tol=0.1, max_iter=10):
    """Layer-sequential unit variance (Mishkin & Matas 2016): orthonormal, then rescale each layer to unit output.

    In forward order, each Linear/Conv layer's weight is divided by the std of its output on ``data`` until the
    variance is within ``tol`` of 1 (the paper's Tol_var = 0.1, T_max = 10). The model runs in eval mode (no
    batch-norm statistics updated, no dropout) and no hooks are left behind.
    """
    if data is None:
        raise ConfigError("init scheme 'lsuv' is data-dependent: pass data=, a batch of inputs shaped (batch, ...)")
    if not isinstance(data, torch.Tensor) or data.ndim < 2 or data.shape[0] < 2:
        raise ConfigError(f"lsuv data= must be a tensor batch of at least 2 inputs, got {_describe(data)}")
    tol = _positive("tol", tol)
    if isinstance(max_iter, bool) or not isinstance(max_iter, Integral) or max_iter < 1:
        raise ConfigError(f"max_iter must be a positive integer, got {max_iter!r}")
    orthogonal(model, generator, gain=1.0)
    param = next(model.parameters())
    data = data.to(param.device)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            for name, layer in _forward_order(model, data):
                for _ in range(max_iter):
                    var = _output_of(model, layer, data).float().var()
                    if not torch.isfinite(var) or var == 0:
                        raise ConfigError(f"lsuv: layer '{name}' has {'constant' if var == 0 else 'non-finite'} "
                                          f"output on this batch; pass a larger or more varied data= batch")
                    if abs(float(var) - 1.0) < tol:
                        break
                    layer.weight.div_(var.sqrt().to(layer.weight.dtype))
                else:
                    warnings.warn(f"lsuv: layer '{name}' output variance {float(var):.3f} after {max_iter} "
                                  f"iterations (tol {tol})", stacklevel=3)
    finally:
        for module, training in modes.items():
            module.train(training)


def _forward_order(model: nn.Module, data: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """The Linear/Conv layers in the order the forward pass calls them (module order can differ, e.g. ResNets)."""
    order: list[tuple[str, nn.Module]] = []
    handles = [layer.register_forward_hook(lambda m, i, o, entry=(name, layer): order.append(entry))
               for name, layer in _layers(model)]
    try:
        model(data)
    finally:
        for h in handles:
            h.remove()
    seen: set[int] = set()
    return [e for e in order if not (id(e[1]) in seen or seen.add(id(e[1])))]  # first call wins


def _output_of(model: nn.Module, layer: nn.Module, data: torch.Tensor) -> torch.Tensor:
    captured = []

    def hook(module, inputs, output):
        captured.append(output)
        raise _StopForward

    handle = layer.register_forward_hook(hook)
    try:
        model(data)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured[0]


def _describe(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


@INIT_SCHEMES.register("checkpoint")
def checkpoint(model, generator, *, path=None, strict=True, exclude=()):
    """Transfer: load a saved ``state_dict`` (``torch.save(model.state_dict(), path)``), without pickle code.

    ``strict`` (default) wants exactly the model's names; ``strict=False`` loads the names both share and keeps
    the model's own values for the rest. ``exclude`` names tensors or module prefixes to keep (a new head:
    ``exclude=["fc3"]``). Shapes must match for everything loaded. ``{"state_dict": ...}`` and
    ``{"model": ...}`` wrappers are unwrapped.
    """
    if path is None:
        raise ConfigError("init scheme 'checkpoint' transfers weights from a file: pass path= to a saved state_dict")
    try:
        state = torch_load(path, "pass a file written by torch.save(model.state_dict(), path)")
    except FileNotFoundError:
        raise ConfigError(f"checkpoint file not found: {path}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptFileError(f"{path} does not hold a state_dict (a dict of name -> tensor)")
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    if not all(isinstance(e, str) for e in exclude):
        raise ConfigError(f"exclude= takes tensor names or module prefixes (strings), got {exclude!r}")

    def skip(name: str) -> bool:
        return any(name == e or name.startswith(f"{e}.") for e in exclude)

    own = {k: v for k, v in model.state_dict().items() if not skip(k)}
    theirs = {k: v for k, v in state.items() if not skip(k)}
    missing, unexpected = sorted(own.keys() - theirs.keys()), sorted(theirs.keys() - own.keys())
    shapes = [f"{k}: file {tuple(theirs[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own.keys() & theirs.keys() if theirs[k].shape != own[k].shape]
    problems = [f"shape mismatch ({_few(sorted(shapes))})"] if shapes else []
    if strict and missing:
        problems.append(f"missing from the file: {_few(missing)}")
    if strict and unexpected:
        problems.append(f"not in the model: {_few(unexpected)}")
    if problems:
        raise ConfigError(f"checkpoint {path} does not fit the model: {'; '.join(problems)}. "
                          f"Use exclude= for layers to keep (e.g. a new head) or strict=False to load the shared names")
    shared = own.keys() & theirs.keys()
    if not shared:
        raise ConfigError(f"checkpoint {path} shares no tensor names with the model (e.g. model: {_few(sorted(own))})")
    with torch.no_grad():
        for k in shared:
            own[k].copy_(theirs[k])


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
