"""`lottery.masks.Mask` (and snapshot/rewind, which restore weights under a mask): selection, statistics,
apply, files, overlap, torch.nn.utils.prune interop, and the errors a user meets."""
from __future__ import annotations

import copy
import io
import math
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

import lottery as lt
from lottery.errors import CorruptFileError, MaskMismatchError, RewindCheckError
from tests.mask_helpers import CASE_IDS, CASES

B = torch.bool


def bits(t: torch.Tensor) -> torch.Tensor:
    """Raw bytes of a tensor, for bit-for-bit comparisons (tells +0.0 from -0.0 and compares NaNs)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def hand_mask() -> lt.Mask:
    return lt.Mask({
        "a.weight": torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=B),  # 4 of 6
        "b.weight": torch.tensor([0, 0, 1, 0], dtype=B),  # 1 of 4
    })


# -- which weights are prunable ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_ones_like_picks_exactly_linear_and_conv_weights(case):
    model = case.model()
    mask = lt.Mask.ones_like(model)
    assert list(mask) == case.prunable  # order follows named_parameters: it decides tie-breaking
    params = dict(model.named_parameters())
    for name, t in mask.items():
        assert t.dtype == torch.bool and t.shape == params[name].shape and bool(t.all())
    assert not any(name.endswith("bias") for name in mask)
    assert mask.num_total == sum(params[k].numel() for k in case.prunable)


def test_ones_like_skips_bias_norm_and_embedding():
    from tests.mask_helpers import EmbedBN

    model = EmbedBN()
    mask = lt.Mask.ones_like(model)
    assert set(mask) == {"fc1.weight", "fc2.weight"}
    for excluded in ["emb.weight", "bn.weight", "bn.bias", "ln.weight", "ln.bias", "fc1.bias", "fc2.bias"]:
        assert excluded not in mask


def test_ones_like_picks_conv3d_and_a_bare_layer():
    mask = lt.Mask.ones_like(nn.Conv3d(2, 3, 2))
    assert list(mask) == ["weight"] and mask["weight"].shape == (3, 2, 2, 2, 2)


def test_include_widens_and_narrows():
    from tests.mask_helpers import EmbedBN

    model = EmbedBN()
    wide = lt.Mask.ones_like(model, include=lambda name, p: p.dim() >= 2)  # adds the embedding table
    assert list(wide) == ["emb.weight", "fc1.weight", "fc2.weight"]
    narrow = lt.Mask.ones_like(model, include=lambda name, p: name == "fc2.weight")
    assert list(narrow) == ["fc2.weight"] and narrow.num_total == 16 * 3
    biases = lt.Mask.ones_like(model, include=lambda name, p: name.endswith("bias"))
    assert list(biases) == ["fc1.bias", "bn.bias", "ln.bias", "fc2.bias"]


def test_no_prunable_weights_is_a_clear_error():
    with pytest.raises(MaskMismatchError, match="include="):
        lt.Mask.ones_like(nn.Sequential(nn.Embedding(5, 3), nn.LayerNorm(3)))
    with pytest.raises(MaskMismatchError):
        lt.Mask.ones_like(nn.Linear(3, 3), include=lambda n, p: False)


# -- statistics ---------------------------------------------------------------------------------------------


def test_statistics_on_a_hand_made_mask():
    m = hand_mask()
    assert m.num_total == 10 and m.num_kept == 5
    assert m.density == 0.5 and m.sparsity == 0.5
    assert m.layer_density() == {"a.weight": 4 / 6, "b.weight": 0.25}
    assert m.layer_kept() == {"a.weight": 4, "b.weight": 1}
    assert len(m) == 2 and "a.weight" in m and "c.weight" not in m


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_statistics_after_pruning(case):
    model = case.model()
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.3, scope="layer")
    total = mask.num_total
    kept = int(sum(int(t.sum()) for t in mask.values()))
    assert mask.num_kept == kept
    assert math.isclose(mask.density, kept / total) and math.isclose(mask.sparsity, 1 - kept / total)
    for k, d in mask.layer_density().items():
        assert d == pytest.approx(int(mask[k].sum()) / mask[k].numel())
        assert d == pytest.approx(1 - round(0.3 * mask[k].numel()) / mask[k].numel())


# -- construction errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    torch.ones(3), torch.ones(3, dtype=torch.uint8), torch.ones(3, dtype=torch.int64), np.ones(3, dtype=bool), [True],
])
def test_non_bool_tensors_are_refused(bad):
    with pytest.raises(TypeError, match="bool"):
        lt.Mask({"w": bad})


def test_non_string_names_are_refused():
    with pytest.raises(TypeError, match="str"):
        lt.Mask({0: torch.ones(3, dtype=B)})


# -- set operations -----------------------------------------------------------------------------------------


def test_and_or_subset():
    a = lt.Mask({"w": torch.tensor([1, 1, 0, 0], dtype=B)})
    b = lt.Mask({"w": torch.tensor([1, 0, 1, 0], dtype=B)})
    assert torch.equal((a & b)["w"], torch.tensor([1, 0, 0, 0], dtype=B))
    assert torch.equal((a | b)["w"], torch.tensor([1, 1, 1, 0], dtype=B))
    assert (a & b).is_subset_of(a) and (a & b).is_subset_of(b) and a.is_subset_of(a | b)
    assert not a.is_subset_of(b) and not b.is_subset_of(a)
    with pytest.raises(MaskMismatchError):
        a.is_subset_of(lt.Mask({"v": torch.ones(4, dtype=B)}))


def test_equality_and_clone():
    m = hand_mask()
    c = m.clone()
    assert c == m and c is not m
    c["a.weight"][0, 0] = False  # a clone owns its tensors
    assert c != m and bool(m["a.weight"][0, 0])
    assert m != {"a.weight": m["a.weight"], "b.weight": m["b.weight"]}  # only masks equal masks
    reordered = lt.Mask({"b.weight": m["b.weight"], "a.weight": m["a.weight"]})
    assert reordered != m  # order decides tie-breaking, so it is part of a mask's identity


# -- apply --------------------------------------------------------------------------------------------------


def _module_hooks(model):
    return [
        (name, kind)
        for name, mod in model.named_modules()
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        if len(getattr(mod, kind, {})) > 0
    ]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_apply_zeroes_exactly_the_pruned_weights(case):
    model = case.model()
    mask = lt.prune_random(lt.Mask.ones_like(model), 0.4, seed=3)
    params = dict(model.named_parameters())
    # Pruned positions hold NaN, inf and -inf: they must become exactly +0.0 (a multiply would leave NaN).
    with torch.no_grad():
        for k in mask:
            w = params[k].view(-1)
            pruned = (~mask[k]).view(-1).nonzero().squeeze(1)
            w[pruned[0::3]] = float("nan")
            w[pruned[1::3]] = float("inf")
            w[pruned[2::3]] = -float("inf")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ids = {k: id(p) for k, p in model.named_parameters()}
    keys = list(model.state_dict())

    assert mask.apply(model) is model
    after = model.state_dict()
    assert list(after) == keys and not any(k.endswith(("_orig", "_mask")) for k in after)
    assert {k: id(p) for k, p in model.named_parameters()} == ids  # optimizers keep working
    assert _module_hooks(model) == []
    for k, v in after.items():
        if k in mask:
            assert torch.equal(bits(v[mask[k]]), bits(before[k][mask[k]]))  # kept: untouched, bit for bit
            pruned = v[~mask[k]]
            assert bool((pruned == 0).all()) and not bool(torch.signbit(pruned).any())  # exactly +0.0
        else:
            assert torch.equal(bits(v), bits(before[k]))  # biases, norms, embeddings, buffers untouched
    assert bool(torch.isfinite(torch.cat([params[k].detach().reshape(-1) for k in mask])).all())


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_apply_twice_is_apply_once(case):
    model = case.model()
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.5)
    once = {k: v.clone() for k, v in mask.apply(model).state_dict().items()}
    twice = mask.apply(model).state_dict()
    assert all(torch.equal(bits(once[k]), bits(twice[k])) for k in once)


def test_apply_keeps_the_parameter_trainable():
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    lt.Mask({"weight": torch.eye(4, dtype=B)}).apply(model)
    assert model.weight.requires_grad and model.weight.grad is None and model.weight.grad_fn is None
    assert torch.equal(model.weight.detach() != 0, torch.eye(4, dtype=B))


def test_apply_to_a_model_it_does_not_fit():
    from tests.mask_helpers import mlp

    torch.manual_seed(0)
    model = mlp()
    mask = lt.Mask.ones_like(model)
    # Made for a deeper model: a name this model does not have.
    deeper = lt.Mask.ones_like(nn.Sequential(*mlp(), nn.ReLU(), nn.Linear(4, 2)))
    with pytest.raises(MaskMismatchError, match="6.weight"):
        deeper.apply(model)
    # An extra, unknown name next to the right ones.
    extra = lt.Mask({**mask, "head.weight": torch.ones(2, 4, dtype=B)})
    with pytest.raises(MaskMismatchError, match="head.weight"):
        extra.apply(model)
    # The same architecture by other names (a model wrapped in a module attribute).
    wrapped = nn.Module()
    wrapped.net = mlp()
    with pytest.raises(MaskMismatchError, match="not parameters"):
        mask.apply(wrapped)
    # Many unknown names: three are named, the rest elided; the line says what to do.
    many = lt.Mask({f"extra{i}.weight": torch.ones(2, dtype=B) for i in range(5)})
    with pytest.raises(MaskMismatchError) as err:
        many.apply(model)
    assert str(err.value) == ("mask names ['extra0.weight', 'extra1.weight', 'extra2.weight']… are not parameters of "
                              "this model; the mask was made for another architecture — build the model it came from")
    # The right names, another size.
    wider = lt.Mask.ones_like(nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 4)))
    with pytest.raises(MaskMismatchError,
                       match=r"shape \(32, 20\).*\(16, 20\); the mask was made for another model size$"):
        wider.apply(model)
    # Nothing was zeroed by a refused apply.
    assert all(bool((p != 0).all()) for n, p in model.named_parameters() if n in mask)


# -- files --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_save_load_round_trip(case, tmp_path):
    model = case.model()
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.37)
    mask = lt.prune_magnitude(model, mask, 0.5, scope="layer")
    path = tmp_path / "m.mask"
    mask.save(path)
    loaded = lt.Mask.load(path)
    assert loaded == mask and list(loaded) == list(mask)
    assert all(loaded[k].dtype == torch.bool and loaded[k].shape == mask[k].shape for k in mask)
    assert zipfile.is_zipfile(path) and os.listdir(tmp_path) == ["m.mask"]  # atomic: no temp files left
    mask.save(str(path))  # overwrite, str path
    assert lt.Mask.load(str(path)) == mask
    assert mask.to_bytes() == path.read_bytes()


def test_save_load_odd_shapes(tmp_path):
    mask = lt.Mask({
        "scalar": torch.tensor(True), "empty": torch.zeros(0, 3, dtype=B), "odd": torch.rand(3, 5, 7) > 0.5,
        "one": torch.zeros(1, dtype=B),
    })
    mask.save(tmp_path / "m")
    assert lt.Mask.load(tmp_path / "m") == mask


def test_mask_file_is_at_most_a_thirtieth_of_torch_prune_masks(tmp_path):
    torch.manual_seed(0)
    lenet = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    ones = lt.Mask.ones_like(lenet)
    # The hardest case for compression: a random mask at density 0.5; and a real IMP mask.
    for mask in (lt.prune_random(ones, 0.5, seed=1), lt.prune_magnitude(lenet, ones, 0.2)):
        model = copy.deepcopy(lenet)
        mask.to_torch_prune(model)
        torch_path, ours = tmp_path / "torch.pt", tmp_path / "ours.mask"
        torch.save({k: b for k, b in model.named_buffers() if k.endswith("weight_mask")}, torch_path)
        mask.save(ours)
        assert os.path.getsize(ours) * 30 <= os.path.getsize(torch_path), (
            os.path.getsize(ours), os.path.getsize(torch_path))


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        lt.Mask.load(tmp_path / "nope.mask")


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _header(**fields) -> np.ndarray:
    import json

    return np.frombuffer(json.dumps(fields).encode(), dtype=np.uint8)


def _corrupt_files() -> dict[str, bytes]:
    good = lt.Mask({"w": torch.rand(9, 7, generator=torch.Generator().manual_seed(0)) > 0.5}).to_bytes()
    rng = np.random.default_rng(0)
    pt = io.BytesIO()
    torch.save({"w": torch.ones(9, 7, dtype=B)}, pt)
    ok = dict(format="lottery-mask/1", names=["w"], shapes=[[9, 7]])
    bits = np.packbits(np.ones(63, dtype=bool))
    files = {
        "empty": b"",
        "random bytes": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "torch.save pickle": pt.getvalue(),
        "plain pickle": pickle.dumps({"w": [True] * 63}),
        "text": b"not a mask\n",
        "npy not npz": (lambda b: (np.save(b, np.ones(3)), b.getvalue())[1])(io.BytesIO()),
        "npz wrong format tag": _npz_bytes(header=_header(**{**ok, "format": "other/1"}), bits_0=bits),
        "npz header not json": _npz_bytes(header=np.frombuffer(b"{nope", dtype=np.uint8), bits_0=bits),
        "npz header a list": _npz_bytes(header=np.frombuffer(b"[1, 2]", dtype=np.uint8), bits_0=bits),
        "npz without header": _npz_bytes(bits_0=bits),
        "npz without bits": _npz_bytes(header=_header(**ok)),
        "npz names/shapes differ": _npz_bytes(header=_header(**{**ok, "names": ["w", "v"]}), bits_0=bits),
        "npz shape negative": _npz_bytes(header=_header(**{**ok, "shapes": [[-9, 7]]}), bits_0=bits),
        "npz shape not a list": _npz_bytes(header=_header(**{**ok, "shapes": [63]}), bits_0=bits),
        "npz name not a string": _npz_bytes(header=_header(**{**ok, "names": [3]}), bits_0=bits),
        "npz bits too short": _npz_bytes(header=_header(**ok), bits_0=bits[:-2]),
        "npz bits too long": _npz_bytes(header=_header(**ok), bits_0=np.concatenate([bits, bits])),
        "npz bits wrong dtype": _npz_bytes(header=_header(**ok), bits_0=np.ones(63, dtype=np.float32)),
        "npz huge forged shape": _npz_bytes(header=_header(**{**ok, "shapes": [[10**6, 10**6]]}), bits_0=bits),
    }
    for cut in (1, 30, len(good) // 2, len(good) - 1):
        files[f"truncated mask file at {cut}"] = good[:cut]
    return files


CORRUPT = _corrupt_files()


def test_load_against_a_model_checks_names_and_shapes_before_reading_bits(tmp_path):
    """``Mask.load(path, like=model)``: the file's layer names and shapes are checked against the model (or a
    ``{name: shape}`` map) from the header alone, and a mismatch names the first difference."""
    from tests.mask_helpers import mlp

    model = mlp()
    path = tmp_path / "m.npz"
    lt.Mask.ones_like(model).save(path)
    assert lt.Mask.load(path, like=model) == lt.Mask.ones_like(model)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if n.endswith("weight")}
    assert lt.Mask.load(path, like=shapes) == lt.Mask.ones_like(model)
    wider = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(CorruptFileError, match=r"\('0\.weight' has shape \[16, 20\], the model's is \[32, 20\]\)"):
        lt.Mask.load(path, like=wider)
    wrapped = nn.Module()
    wrapped.net = mlp()
    with pytest.raises(CorruptFileError) as err:
        lt.Mask.load(path, like=wrapped)
    assert ("(its layers ['0.weight', '2.weight', '4.weight'] are not the model's ['net.0.weight', 'net.2.weight', "
            "'net.4.weight'])") in str(err.value)
    # the bits are never read: a file whose bits are garbage is refused for its shapes, not its bits
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data if n == "header.npy" else b"garbage")
    with pytest.raises(CorruptFileError, match="the model's is"):
        lt.Mask.load(path, like=wider)


def test_a_mask_file_with_an_extra_member_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    hand_mask().save(path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("payload.npy", b"x")
    with pytest.raises(CorruptFileError, match=r"\(unexpected members\)"):
        lt.Mask.load(path)


@pytest.mark.parametrize("name", list(CORRUPT))
def test_files_that_are_not_masks(name, tmp_path):
    path = tmp_path / "bad.mask"
    path.write_bytes(CORRUPT[name])
    with pytest.raises(CorruptFileError, match="not a lottery mask file") as err:
        lt.Mask.load(path)
    assert isinstance(err.value, ValueError) and "Mask.save" in str(err.value)


class _Planted:
    """A pickle payload that creates a marker file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["raw pickle", "npz object header", "npz object bits", "torch.save"])
def test_planted_pickle_never_executes(kind, tmp_path):
    marker = tmp_path / "pwned"
    payload = _Planted(marker)
    # The payload is live: unpickling it does create the marker.
    pickle.loads(pickle.dumps(payload)).close()
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "evil.mask"
    obj = np.empty(1, dtype=object)
    obj[0] = payload
    if kind == "raw pickle":
        path.write_bytes(pickle.dumps(payload))
    elif kind == "npz object header":
        path.write_bytes(_npz_bytes(header=obj))
    elif kind == "npz object bits":
        hdr = _header(format="lottery-mask/1", names=["w"], shapes=[[3]])
        path.write_bytes(_npz_bytes(header=hdr, bits_0=obj))
    else:
        torch.save({"w": payload}, path)
    with pytest.raises(CorruptFileError):
        lt.Mask.load(path)
    assert not marker.exists()


# -- overlap ------------------------------------------------------------------------------------------------


def test_iou_on_hand_made_masks():
    a = lt.Mask({"x": torch.tensor([1, 1, 0, 0], dtype=B), "y": torch.tensor([1, 1, 0], dtype=B)})
    b = lt.Mask({"x": torch.tensor([0, 1, 1, 0], dtype=B), "y": torch.tensor([1, 1, 0], dtype=B)})
    # x: |∩| = 1, |∪| = 3; y: identical, 2 and 2; overall 3 / 5.
    assert a.iou(b) == pytest.approx(3 / 5) and b.iou(a) == pytest.approx(3 / 5)
    assert a.iou(b, per_layer=True) == pytest.approx({"x": 1 / 3, "y": 1.0})
    assert a.iou(a) == 1.0 and a.iou(a, per_layer=True) == {"x": 1.0, "y": 1.0}

    disjoint = lt.Mask({"x": torch.tensor([0, 0, 1, 1], dtype=B), "y": torch.tensor([0, 0, 1], dtype=B)})
    assert a.iou(disjoint) == 0.0 and a.iou(disjoint, per_layer=True) == {"x": 0.0, "y": 0.0}

    empty = lt.Mask({"x": torch.zeros(4, dtype=B), "y": torch.tensor([1, 0, 0], dtype=B)})
    assert empty.iou(empty, per_layer=True) == {"x": 1.0, "y": 1.0}  # both empty: identical
    assert a.iou(empty, per_layer=True) == {"x": 0.0, "y": 0.5}
    assert a.iou(empty) == pytest.approx(1 / 4)


def test_iou_of_different_weights_is_an_error():
    a = lt.Mask({"x": torch.ones(3, dtype=B)})
    with pytest.raises(MaskMismatchError, match="different weights"):
        a.iou(lt.Mask({"z": torch.ones(3, dtype=B)}))


# -- torch.nn.utils.prune interop ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_torch_prune_round_trip_and_same_forward(case):
    model = case.model()
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.6)
    ours, theirs = case.model(), case.model()
    ours.eval(), theirs.eval()
    mask.apply(ours)
    mask.to_torch_prune(theirs)
    assert lt.Mask.from_torch_prune(theirs) == mask
    assert any(k.endswith("weight_orig") for k in theirs.state_dict())  # it really is torch's reparametrization
    x = case.input()
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    dense = case.model().eval()
    with torch.no_grad():
        assert not torch.allclose(dense(x), ours(x))  # the mask changed the function: the check above has teeth


def test_from_torch_prune_reads_torch_pruned_models():
    from torch.nn.utils import prune as tprune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    tprune.l1_unstructured(model[0], "weight", amount=0.5)
    tprune.random_unstructured(model[2], "weight", amount=0.25)
    mask = lt.Mask.from_torch_prune(model)
    assert list(mask) == ["0.weight", "2.weight"]
    assert torch.equal(mask["0.weight"], model[0].weight_mask != 0) and mask["0.weight"].dtype == torch.bool
    assert mask.layer_kept() == {"0.weight": 40, "2.weight": 18}


def test_from_torch_prune_without_masks_is_an_error():
    with pytest.raises(MaskMismatchError, match="weight_mask|_mask"):
        lt.Mask.from_torch_prune(nn.Linear(3, 3))


# -- snapshot and rewind ------------------------------------------------------------------------------------


def _train(model, x, steps=3, lr=0.5):
    """Plain gradient steps (no torch.optim: importing it costs seconds); train mode moves BN statistics too."""
    model.train()
    for _ in range(steps):
        model.zero_grad()
        model(x).float().pow(2).mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.sub_(lr * p.grad)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_rewind_restores_kept_weights_bit_for_bit_and_zeroes_pruned(case):
    model = case.model()
    state = lt.snapshot(model)
    ids = {k: id(p) for k, p in model.named_parameters()}
    _train(model, case.input())
    assert any(not torch.equal(v, state[k]) for k, v in model.state_dict().items())  # training moved weights
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.5)

    lt.rewind(model, state, mask)
    after = model.state_dict()
    assert list(after) == list(state)
    assert {k: id(p) for k, p in model.named_parameters()} == ids
    for k, ref in state.items():
        if k in mask:
            assert torch.equal(bits(after[k][mask[k]]), bits(ref[mask[k]]))
            assert bool((after[k][~mask[k]] == 0).all()) and not bool(after[k][~mask[k]].signbit().any())
        else:  # biases, norm parameters and running statistics come back too
            assert torch.equal(bits(after[k]), bits(ref))
    lt.verify_rewind(model, state, mask)  # and the check agrees


def test_snapshot_is_a_copy():
    model = nn.Linear(4, 3)
    state = lt.snapshot(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(state["weight"], model.weight.detach())
    assert state["weight"].untyped_storage().data_ptr() != model.weight.untyped_storage().data_ptr()
    lt.rewind(model, state)
    assert torch.equal(state["weight"], model.weight.detach())


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_verify_rewind_catches_a_perturbed_kept_or_a_live_pruned_weight(case):
    model = case.model()
    state = lt.snapshot(model)
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.5)
    name = case.prunable[-1]

    def perturbed(how):
        lt.rewind(model, state, mask)
        w = dict(model.named_parameters())[name].detach().view(-1)
        m = mask[name].view(-1)
        with torch.no_grad():
            how(w, m)
        return model

    def kept_one_ulp(w, m):
        i = m.nonzero()[0, 0]
        w[i] = torch.nextafter(w[i], torch.tensor(float("inf")))

    def pruned_tiny(w, m):
        w[(~m).nonzero()[0, 0]] = 1e-30

    def pruned_negative_zero(w, m):
        w[(~m).nonzero()[0, 0]] = -0.0

    for how in (kept_one_ulp, pruned_tiny, pruned_negative_zero):
        with pytest.raises(RewindCheckError, match=name.replace(".", r"\.")):
            lt.verify_rewind(perturbed(how), state, mask)
    lt.rewind(model, state, mask)
    lt.verify_rewind(model, state, mask)  # and the unperturbed model passes

    # Not a mask matter but the same contract: any other tensor that differs is caught.
    other = next(k for k in state if k not in mask)
    with torch.no_grad():
        model.state_dict()[other].view(-1)[0] += 1
    with pytest.raises(RewindCheckError, match=other.replace(".", r"\.")):
        lt.verify_rewind(model, state, mask)


def test_public_rewind_is_the_function_even_after_its_module_is_imported():
    import importlib

    module = importlib.import_module("lottery.rewind")  # what the trainer and the IMP driver do
    importlib.import_module("lottery.train")
    assert lt.rewind is module.rewind and lt.snapshot is module.snapshot and lt.verify_rewind is module.verify_rewind


def test_every_public_name_resolves():
    import lottery

    for name in lottery.__all__:
        assert getattr(lottery, name) is not None, name
    assert callable(lottery.rewind) and callable(lottery.run_imp) and callable(lottery.compare_inits)
