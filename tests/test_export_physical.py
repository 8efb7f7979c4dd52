"""Physical export: a neuron ticket written as the smaller dense network gives the masked ticket's outputs
(max |diff| <= 1e-5 in float32) for an MLP, a convnet with batch norm and a residual net; the CLI end to end."""
import json

import pytest
import torch

import lottery as lt
from lottery.cli import main
from lottery.errors import ConfigError, CorruptFileError
from lottery.export import export_report, export_ticket, format_report, load_exported, measure_latency, read_header
from lottery.export_physical import physical_tensors
from lottery.pruning import prune_structured

CASES = {"lenet_300_100": (1, 28, 28), "vgg11": (3, 32, 32), "resnet20": (3, 16, 16)}


def _ticket(name: str, levels: int = 2):
    """A neuron ticket with non-trivial biases and batch-norm statistics (dropped channels' constants are not 0)."""
    torch.manual_seed(0)
    model = lt.build_model(name, CASES[name], 10)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(1, 0.3)
                module.bias.normal_(0, 0.3)
            elif getattr(module, "bias", None) is not None:
                module.bias.normal_(0, 0.1)
    mask = lt.Mask.ones_like(model)
    for _ in range(levels):
        mask = prune_structured(model, mask, 0.3, "neuron", scope="layer")
    mask.apply(model)
    return model.eval(), mask


@pytest.mark.parametrize("name", ["lenet_300_100", "resnet20", pytest.param("vgg11", marks=pytest.mark.slow)])
def test_the_smaller_network_gives_the_tickets_outputs(tmp_path, name):
    model, mask = _ticket(name)
    path = export_ticket(model, mask, tmp_path / "t.safetensors", "physical", model_name=name,
                         input_shape=CASES[name], num_classes=10)
    small = load_exported(path)
    x = torch.randn(4, *CASES[name])
    with torch.no_grad():
        diff = (small(x) - model(x)).abs().max().item()
    assert diff <= 1e-5, diff
    n_small, n_full = (sum(p.numel() for p in m.parameters()) for m in (small, model))
    assert n_small < 0.7 * n_full
    assert read_header(path)["layout"] == "physical"


def test_units_coupled_by_residual_sums_and_batch_norms_are_cut_together():
    model, mask = _ticket("resnet20", levels=1)
    state, units = physical_tensors(model, mask)
    kept = len(units["conv1.weight"])  # the stem's group: the stage-1 residual stream
    assert kept < 16
    for key in ("conv1.weight", "layer1.0.conv2.weight", "layer1.2.conv2.weight"):
        assert state[key].shape[0] == kept
    assert state["bn1.running_mean"].shape == (kept,) and state["layer1.1.conv1.weight"].shape[1] == kept
    assert state["fc.weight"].shape[0] == 10  # the classes stay


def test_an_unstructured_ticket_exports_exactly_too(tmp_path):
    torch.manual_seed(0)
    model = lt.build_model("lenet_300_100", (1, 28, 28), 10)
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.5)
    mask.apply(model)
    path = export_ticket(model.eval(), mask, tmp_path / "u.safetensors", "physical", model_name="lenet_300_100",
                         input_shape=(1, 28, 28), num_classes=10)
    x = torch.randn(2, 1, 28, 28)
    assert (load_exported(path)(x) - model(x)).abs().max() <= 1e-5
    assert json.loads(read_header(path)["units"]) == {}  # no unit is unread at 50 % unstructured density


def test_a_forged_units_header_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model, mask = _ticket("lenet_300_100", levels=1)
    path = export_ticket(model, mask, tmp_path / "t.safetensors", "physical", model_name="lenet_300_100",
                         input_shape=(1, 28, 28), num_classes=10)
    header = {k: v for k, v in read_header(path).items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in header.items()}
    meta.update(num_classes="10", density=str(header["density"]), units=json.dumps({"fc1.weight": [0, 9999]}))
    save_file(load_file(path), tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(CorruptFileError, match="units for 'fc1.weight'"):
        load_exported(tmp_path / "bad.safetensors")


def test_the_report_times_the_full_network_against_the_export(tmp_path):
    model, mask = _ticket("lenet_300_100")
    path = export_ticket(model, mask, tmp_path / "t.safetensors", "physical", model_name="lenet_300_100",
                         input_shape=(1, 28, 28), num_classes=10, extra={"structure": "neuron"})
    report = export_report(path, batch_sizes=(1, 8), min_run_time=0.02)
    assert report["macs_sparse"] < 0.6 * report["macs_dense"] and report["file_bytes"] < report["dense_file_bytes"]
    assert set(report["latency"]) == {1, 8} and all(t["speedup"] > 0 for t in report["latency"].values())
    assert "smaller dense" in format_report(report) and "batch    8: dense" in format_report(report)
    assert "exported" in format_report(report).splitlines()[-1]
    report["structure"] = "2:4"
    assert "runs dense" in format_report(report)


@pytest.mark.slow
def test_cli_exports_a_neuron_run_physically(tmp_path, capsys):
    lt.run_imp({"dataset": "synthetic", "model_options": {"hidden": [32, 16]}, "steps": 30, "eval_every": 10,
                "levels": 1, "controls": [], "structure": "neuron", "scope": "layer", "progress": False,
                "out": str(tmp_path)})
    run = next(tmp_path.iterdir())
    assert main(["export", str(run), "--level", "1", "--format", "physical"]) == 0
    out = capsys.readouterr().out
    assert "batch  256" in out and "smaller dense" in out
    small = load_exported(run / "level_01" / "ticket-physical.safetensors")
    assert small.fc1.out_features == 26 and small.fc2.in_features == 26


def test_latency_on_the_cpu_clock():
    model = lt.build_model("mlp", (40,), 10).eval()
    assert 0 < measure_latency(model, (40,), 4, min_run_time=0.01, clock="cpu") < 1
    with pytest.raises(ConfigError, match="clock must be wall or cpu"):
        measure_latency(model, (40,), 4, clock="gpu")


class _Offset(torch.nn.Module):
    """A sum of a layer's units and a parameter: dropping a unit would leave the parameter's value in its place."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(12, 16), torch.nn.Linear(16, 4)
        self.off = torch.nn.Parameter(torch.randn(16))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1)) + self.off))


def _pad_resnet():
    torch.manual_seed(0)
    model = lt.build_model("resnet20", (3, 16, 16), 10, shortcut="pad")
    mask = lt.Mask.ones_like(model)
    for _ in range(2):
        mask = prune_structured(model, mask, 0.3, "neuron", scope="layer")
    mask.apply(model)
    return model.eval(), mask


def test_sums_with_something_else_than_units_freeze_their_groups_and_export_exactly(tmp_path):
    from lottery.pruning.units import unit_groups

    groups = {g.key: g for g in unit_groups(_Offset(), ["fc1.weight", "fc2.weight"])}
    assert "parameter off" in groups["fc1.weight"].frozen
    model, mask = _pad_resnet()
    frozen = {g.key: g.frozen for g in unit_groups(model, list(mask))}
    assert "call_function pad" in frozen["layer3.0.conv2.weight"] and frozen["layer1.0.conv1.weight"] is None
    path = export_ticket(model, mask, tmp_path / "t.safetensors", "physical", model_name="resnet20",
                         model_options={"shortcut": "pad"}, input_shape=(3, 16, 16), num_classes=10)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert (load_exported(path)(x) - model(x)).abs().max() <= 1e-5


def test_an_export_that_would_not_compute_the_ticket_is_refused_in_one_line(tmp_path, monkeypatch):
    import lottery.export_physical as physical
    import lottery.pruning.structure as structure
    from lottery.pruning.units import UnitGroup, unit_groups

    def as_before(m, w):  # the groups as they were: whatever else is added into a sum, ignored
        return [UnitGroup(g.producers, g.size, g.consumers, g.norms, None if "added to" in (g.frozen or "")
                          else g.frozen) for g in unit_groups(m, w)]

    for module in (physical, structure):
        monkeypatch.setattr(module, "unit_groups", as_before)
    model, mask = _pad_resnet()
    with pytest.raises(ConfigError, match="does not compute this ticket's outputs.*--format csr") as e:
        export_ticket(model, mask, tmp_path / "t.safetensors", "physical", model_name="resnet20",
                      model_options={"shortcut": "pad"}, input_shape=(3, 16, 16), num_classes=10)
    assert "\n" not in str(e.value) and not (tmp_path / "t.safetensors").exists()
