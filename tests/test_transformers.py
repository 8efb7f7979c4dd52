"""The ViT and the GPT: shapes, causal masking, what they prune, their init schemes, and IMP on them.

Tiny widths and tens of steps: every check here is about wiring (what sees what, what is pruned, what is drawn),
not accuracy. The studies that measure accuracy are experiments/grokking.py and experiments/vit_fashion*.toml.
"""
import math
import warnings

import pytest
import torch
from torch import nn

import lottery as lt
from lottery.config import from_dict
from lottery.errors import ConfigError
from lottery.export_physical import physical_tensors, shrink_to
from lottery.fused import train_fused
from lottery.inits import init_weights
from lottery.layer_signal import SignalProbe
from lottery.models import build_model
from lottery.pruning import prune_structured
from lottery.train import train
from tests.engine_helpers import strip_times
from tests.test_cli import _one_line_error

VIT = dict(patch=4, width=16, depth=2, heads=2)
GPT = dict(width=16, depth=2, heads=2)
# per model: data set, its options, model options (tiny, a second or two per run)
RUNS = {"vit": ("synthetic", {}, VIT), "gpt": ("modular_addition", {"p": 11}, GPT)}


def vit(**options):
    return build_model("vit", (1, 12, 12), 4, **{**VIT, **options})


def gpt(**options):
    return build_model("gpt", (4,), 11, **{**GPT, **options})


def tokens(n=5, length=4, seed=0):
    return torch.randint(0, 13, (n, length), generator=torch.Generator().manual_seed(seed)).float()


# -- shapes and attention ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_shapes(pool):
    model = build_model("vit", (1, 28, 28), 10, patch=7, width=32, depth=1, heads=4, pool=pool)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert model.pos.weight.shape == (16 + (pool == "cls"), 32)
    assert model.patch.weight.shape == (32, 1, 7, 7) and model.blocks[0].mlp.fc1.out_features == 64


def test_gpt_shapes_and_shorter_sequences():
    model = gpt(context=8)
    assert model(tokens()).shape == (5, 11) and model.logits_per_position(tokens()).shape == (5, 4, 11)
    assert model.tok.num_embeddings == 13 and model.pos.num_embeddings == 8
    assert model(tokens(length=2)).shape == (5, 11)  # shorter than the context is fine


def test_a_position_never_sees_a_later_token():
    model = gpt(depth=3).eval()
    x = tokens(n=8)
    before = model.logits_per_position(x)
    for j in range(4):
        changed = x.clone()
        changed[:, j] = (changed[:, j] + 1) % 13
        after = model.logits_per_position(changed)
        assert torch.equal(after[:, :j], before[:, :j]), j  # earlier positions: bit for bit the same
        assert not torch.allclose(after[:, j:], before[:, j:]), j


def test_vit_attends_to_every_patch():
    model = vit().eval()
    x = torch.randn(2, 1, 12, 12)
    changed = x.clone()
    changed[:, :, -4:, -4:] += 1.0  # the last patch only
    assert not torch.allclose(model(x), model(changed))  # reaches the class token at position 0


@pytest.mark.parametrize("build, message", [
    (lambda: vit(heads=3), "heads=3 does not divide width=16"),
    (lambda: vit(patch=5), "patch 5 does not divide the 12x12 image; pick a divisor of both sides: 1, 2, 3, 4, 6"),
    (lambda: vit(pool="max"), "pool must be 'cls'"),
    (lambda: vit(depth=0), "depth must be a positive integer"),
    (lambda: vit(mlp_ratio=0), "mlp_ratio must be a number > 0"),
    (lambda: vit(also_prune=["heads"]), "also_prune takes any of embeddings, norms, biases"),
    (lambda: build_model("vit", (40,), 10), r"\(C, H, W\)"),
    (lambda: gpt(context=3), "sequences of length 4 exceed context=3"),
    (lambda: gpt(heads=5), "heads=5 does not divide width=16"),
    (lambda: build_model("gpt", (1, 28, 28), 10), r"token sequences shaped \(length,\)"),
    (lambda: gpt()(tokens(length=5)), "length 5 exceed the model's context 4; build it with context >= 5"),
])
def test_bad_sizes_are_one_line(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_bad_sizes_on_the_command_line_exit_2(capsys, tmp_path):
    _one_line_error(capsys, ["run", "--dataset", "synthetic", "--model", "vit", "--model-options", "patch=5",
                             "--no-progress", "--device", "cpu", "--out", str(tmp_path)], "patch 5 does not divide")
    _one_line_error(capsys, ["run", "--dataset", "modular_addition", "--model", "gpt", "--model-options",
                             "context=2", "--no-progress", "--device", "cpu", "--out", str(tmp_path)],
                    "sequences of length 4 exceed context=2")


# -- what is prunable ---------------------------------------------------------------------------------------------
def test_linear_weights_are_prunable_by_default_the_rest_on_request():
    model = vit()
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert set(lt.Mask.ones_like(model)) == linear and "head.weight" in linear and "patch.weight" not in linear
    assert set(lt.Mask.ones_like(vit(also_prune=["embeddings"]))) == linear | {"patch.weight", "pos.weight"}
    norms = {n for n, _ in model.named_parameters() if ("ln" in n or n.startswith("norm")) and n.endswith("weight")}
    assert set(lt.Mask.ones_like(vit(also_prune=["norms"]))) == linear | norms
    biases = {n for n, _ in model.named_parameters() if n.endswith("bias")}
    assert set(lt.Mask.ones_like(vit(also_prune="biases"))) == linear | biases
    assert set(lt.Mask.ones_like(gpt(also_prune=["embeddings"]))) - set(lt.Mask.ones_like(gpt())) == \
        {"tok.weight", "pos.weight"}
    chosen = lt.Mask.ones_like(model, include=lambda name, p: name == "pos.weight")  # include= still decides
    assert list(chosen) == ["pos.weight"]


def test_mask_files_fit_the_declared_weights(tmp_path):
    model = gpt(also_prune=["embeddings"])
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.5)
    mask.save(tmp_path / "m.npz")
    assert lt.Mask.load(tmp_path / "m.npz", like=model) == mask
    mask.apply(model)
    assert int((model.tok.weight == 0).sum()) > 0


# -- init schemes -------------------------------------------------------------------------------------------------
def test_gpt2_scales_the_residual_projections_measured_on_a_built_model():
    layers = 6
    model = build_model("gpt", (4,), 97, width=128, depth=layers, heads=4)
    init_weights(model, "gpt2", seed=0)
    residual = {f"{n}.weight" for n in model.residual_outputs}
    assert len(residual) == 2 * layers
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert (p == 0).all(), name
        elif ".ln" in name or name.startswith("norm"):
            assert (p == 1).all(), name
        else:  # every weight and embedding: N(0, 0.02), the residual outputs / sqrt(2 * layers)
            want = 0.02 / math.sqrt(2 * layers) if name in residual else 0.02
            assert float(p.detach().std()) == pytest.approx(want, rel=0.06), name
            assert abs(float(p.detach().mean())) < want / 5, name


@pytest.mark.parametrize("scheme", ["kaiming_normal", "xavier_uniform", "normal", "orthogonal", "gpt2",
                                    "transformer_xavier", "pytorch_default", "zeros"])
@pytest.mark.parametrize("make", [vit, gpt], ids=["vit", "gpt"])
def test_schemes_draw_embeddings_and_reset_layer_norms(scheme, make):
    model = make()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)
    state = torch.get_rng_state()
    a = init_weights(model, scheme, seed=3).state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # seeded: the global RNG is left alone
    b = init_weights(make(), scheme, seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for k, v in a.items():
        if ".ln" in k or k.startswith("norm."):
            assert (v == (1.0 if k.endswith("weight") else 0.0)).all(), k
        elif k == "pos.weight" or k == "tok.weight":
            assert (v == 0).all() if scheme == "zeros" else 0 < float(v.std()) < 2.0, k
        assert not (v == 7.0).any(), f"{scheme} left {k} as it was"


def test_scale_multiplies_embeddings_with_the_weights():
    base = init_weights(gpt(), "gpt2", seed=0)
    scaled = init_weights(gpt(), "gpt2", seed=0, scale=4.0)
    assert torch.equal(scaled.tok.weight, 4.0 * base.tok.weight)
    assert torch.equal(scaled.blocks[0].attn.qkv.weight, 4.0 * base.blocks[0].attn.qkv.weight)
    assert torch.equal(scaled.blocks[0].ln1.weight, base.blocks[0].ln1.weight)


def test_transformer_xavier_and_pytorch_default_follow_their_formulas():
    model = build_model("gpt", (4,), 97, width=128, depth=1, heads=4)
    init_weights(model, "transformer_xavier", seed=0)
    fc1 = model.blocks[0].mlp.fc1.weight.detach()  # 512 x 128
    assert float(fc1.abs().max()) <= math.sqrt(6 / (128 + 512))
    assert float(model.tok.weight.detach().std()) == pytest.approx(128 ** -0.5, rel=0.05)
    init_weights(model, "pytorch_default", seed=0)
    assert float(fc1.abs().max()) <= 1 / math.sqrt(128) and float(model.tok.weight.detach().std()) == \
        pytest.approx(1.0, rel=0.05)
    other = init_weights(build_model("gpt", (4,), 97, width=128, depth=1, heads=4), "pytorch_default", seed=1)
    assert not torch.equal(other.tok.weight, model.tok.weight)


@pytest.mark.parametrize("make", [vit, gpt], ids=["vit", "gpt"])
def test_layer_signal_sees_every_layer(make):
    model = make()
    ds = lt.load_dataset(*RUNS["vit" if make is vit else "gpt"][:1], **RUNS["vit" if make is vit else "gpt"][1])
    probe = SignalProbe(model, *ds.val)
    probe(0)
    names = probe.to_dict()["layers"]
    assert {f"{n}.weight" for n in names} >= set(lt.Mask.ones_like(model))
    assert all(v is not None and v > 0 for v in probe.activation_std[0] + probe.grad_norm[0])


# -- structures, export, fused training ---------------------------------------------------------------------------
@pytest.mark.parametrize("make", [vit, gpt], ids=["vit", "gpt"])
def test_neuron_tickets_drop_mlp_units_and_export_physically(make):
    model = make().eval()
    hidden = model.blocks[0].mlp.fc1.out_features
    mask = prune_structured(model, lt.Mask.ones_like(model), 0.5, "neuron", scope="layer")
    for name, m in mask.items():
        dropped_rows = int((~m.any(1)).sum())
        assert dropped_rows == (hidden // 2 if name.endswith("fc1.weight") else 0), name  # attention, head: whole
    mask.apply(model)
    state, units = physical_tensors(model, mask)
    assert tuple(state["blocks.0.mlp.fc1.weight"].shape) == (hidden // 2, 16)
    small = shrink_to(make(), units)
    small.load_state_dict(state)
    x = torch.randn(3, 1, 12, 12) if make is vit else tokens(3)
    assert torch.allclose(small.eval()(x), model(x), atol=1e-5)


@pytest.mark.parametrize("strategy", ["snip", "grasp", "synflow"])
@pytest.mark.parametrize("model", sorted(RUNS))
def test_prune_at_init_strategies_score_transformers(strategy, model):
    dataset, data_options, options = RUNS[model]
    ds = lt.load_dataset(dataset, **data_options)
    net = init_weights(build_model(model, ds.input_shape, ds.num_classes, **options), "gpt2", seed=0)
    mask = lt.PRUNERS.get(strategy)(net, lt.Mask.ones_like(net), 0.75, data=ds.train, seed=0)  # GraSP: double backward
    assert mask.num_kept == round(0.25 * mask.num_total)


def test_n_m_masks_on_the_projections():
    model = gpt()
    mask = prune_structured(model, lt.Mask.ones_like(model), 0.5, "2:4")
    qkv = mask["blocks.0.attn.qkv.weight"].reshape(48, 4, 4)
    assert (qkv.sum(-1) == 2).all()


def test_fused_training_matches_one_at_a_time():
    ds = lt.load_dataset("synthetic", n_train=128, n_test=64)
    cfg = from_dict(dict(steps=12, eval_every=6, batch_size=16, lr=5e-3, dataset="synthetic", model="vit"))
    nets = [init_weights(vit(), "gpt2", seed=i) for i in range(2)]
    alone = [init_weights(vit(), "gpt2", seed=i) for i in range(2)]
    masks = [lt.prune_random(lt.Mask.ones_like(n), 0.5, seed=i) for i, n in enumerate(nets)]
    for n, a, m in zip(nets, alone, masks):
        m.apply(n), m.apply(a)
    logs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "batching rule not implemented" fallback for attention
        fused = train_fused(nets, ds, cfg, masks, seeds=[0, 1], log=logs.append)
    assert logs == []
    for n, a, m, r, s in zip(nets, alone, masks, fused, [0, 1]):
        ref = train(a, ds, cfg, m, seed=s)
        assert r.early_stop_step == ref.early_stop_step
        for (name, p), q in zip(n.named_parameters(), a.parameters()):
            assert torch.allclose(p, q, atol=1e-4), name
            if name in m:
                assert (p[~m[name]] == 0).all()


# -- IMP end to end -----------------------------------------------------------------------------------------------
def tiny_run(model, tmp_path, **overrides):
    dataset, data_options, options = RUNS[model]
    settings = dict(name=model, dataset=dataset, dataset_options=data_options, model=model, model_options=options,
                    init="gpt2", steps=20, eval_every=10, batch_size=16, levels=2, lr=5e-3, rewind="step:4",
                    controls=("reinit", "random_mask"), out=str(tmp_path / "runs"), progress=False, device="cpu")
    return from_dict({**settings, **overrides})


@pytest.mark.parametrize("model", sorted(RUNS))
def test_imp_with_both_controls_and_late_rewinding(model, tmp_path):
    results = lt.run_imp(tiny_run(model, tmp_path))
    assert results["status"] == "complete" and [e["level"] for e in results["levels"]] == [0, 1, 2]
    assert all(e["controls"].keys() == {"reinit", "random_mask"} for e in results["levels"][1:])
    assert results["levels"][2]["density"] == pytest.approx(0.64, abs=0.01)


def cli_args(model):
    dataset, data_options, options = RUNS[model]
    as_flags = lambda d: ",".join(f"{k}={v}" for k, v in d.items())  # noqa: E731
    return ["--dataset", dataset, *(["--dataset-options", as_flags(data_options)] if data_options else []),
            "--model", model, "--model-options", as_flags(options), "--init", "gpt2", "--steps", "20",
            "--eval-every", "10", "--batch-size", "16", "--levels", "2", "--lr", "5e-3", "--rewind", "step:4",
            "--controls", "reinit,random_mask", "--device", "cpu", "--no-progress", "--name", model]


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(RUNS))
def test_killed_imp_resumes_bit_for_bit(model, tmp_path):
    from lottery.cli import build_parser, config_from_args
    from tests.test_faults import _killed_run, _same, _tensors  # the fault tests' SIGKILL and comparison

    def cfg(out):
        return config_from_args(build_parser().parse_args(["run", *cli_args(model), "--out", str(out)]))

    reference = strip_times(lt.run_imp(cfg(tmp_path / "ref")))
    out = tmp_path / "killed"
    _killed_run("train:level1#10", out, subprocess_cli=False, args=cli_args(model))
    assert strip_times(lt.run_imp(cfg(out))) == reference
    ref_dir, run_dir = (p / cfg(p).run_name() for p in (tmp_path / "ref", out))
    assert _same(_tensors(run_dir), _tensors(ref_dir))


def test_neuron_ticket_of_the_gpt_exports_physically_from_the_command_line(tmp_path, capsys):
    from lottery.cli import main

    cfg = tiny_run("gpt", tmp_path, structure="neuron", controls=(), rewind="init")
    lt.run_imp(cfg)
    assert main(["export", str(tmp_path / "runs" / cfg.run_name()), "--level", "2", "--format", "physical"]) == 0
    assert "multiply-adds per example" in capsys.readouterr().out  # checked on token ids, then timed
