"""Exported tickets: round trip per layout, size at 5 % density, hostile files refused, the CLI end to end."""
import contextlib
import json
import os

import pytest
import torch

import lottery as lt
from lottery.cli import main
from lottery.errors import ConfigError, CorruptFileError
from lottery.export import (
    LAYOUTS, count_macs, export_report, export_ticket, load_exported, read_header, to_sparse,
)
from tests.engine_helpers import tiny

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def ticket():
    """LeNet-300-100 with trained-looking weights, magnitude-pruned to exactly 5 % density (global)."""
    torch.manual_seed(0)
    model = lt.build_model("lenet_300_100", SHAPE, 10)
    lt.init_weights(model, "xavier_normal", seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # non-zero biases too
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.95)
    mask.apply(model)
    return model.eval(), mask


def _export(model, mask, path, layout):
    return export_ticket(model, mask, path, layout, model_name="lenet_300_100", input_shape=SHAPE, num_classes=10)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip_gives_the_masked_models_predictions(tmp_path, ticket, layout):
    model, mask = ticket
    path = _export(model, mask, tmp_path / f"t-{layout}.safetensors", layout)
    x = torch.randn(64, *SHAPE)
    with torch.no_grad():
        expected = model(x)
        loaded = load_exported(path)
        for name, value in model.state_dict().items():  # the weights come back bit for bit
            assert torch.equal(loaded.state_dict()[name], value), name
        assert torch.equal(loaded(x), expected)
        sparse_out = load_exported(path, sparse=True)(x)  # CSR kernels: same values up to summation order
    assert torch.allclose(sparse_out, expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(sparse_out.argmax(1), expected.argmax(1))
    header = read_header(path)
    assert header["layout"] == layout and header["model"] == "lenet_300_100" and header["input_shape"] == [1, 28, 28]
    assert header["density"] == pytest.approx(0.05, abs=1e-4)


def test_sparse_files_are_at_most_an_eighth_of_the_dense_file_at_5_percent(tmp_path, ticket):
    model, mask = ticket
    assert mask.density == pytest.approx(0.05, abs=1e-4)
    dense = os.path.getsize(_export(model, mask, tmp_path / "dense.safetensors", "dense"))
    checkpoint = tmp_path / "final.pt"
    torch.save(model.state_dict(), checkpoint)
    for layout in ("csr", "bitmask"):
        size = os.path.getsize(_export(model, mask, tmp_path / f"{layout}.safetensors", layout))
        assert size <= dense / 8, (layout, size, dense)
        assert size <= os.path.getsize(checkpoint) / 8


def test_report_counts_multiply_adds_and_times_both_models(tmp_path, ticket):
    model, mask = ticket
    path = _export(model, mask, tmp_path / "t.safetensors", "csr")
    report = export_report(path, batch_sizes=(1, 8), min_run_time=0.01)
    assert report["macs_dense"] == 784 * 300 + 300 * 100 + 100 * 10
    assert report["macs_sparse"] == mask.num_kept  # one multiply-add per kept weight of a Linear layer
    assert report["file_bytes"] < report["dense_file_bytes"] / 8
    assert set(report["latency"]) == {1, 8} and all(t["sparse_ms"] > 0 for t in report["latency"].values())
    assert report["sparse_layers"] == 3


def test_conv_layers_export_and_count_output_positions(tmp_path):
    model = lt.build_model("lenet5", SHAPE, 10)
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.8)
    mask.apply(model)
    model.eval()
    x = torch.randn(4, *SHAPE)
    for layout in LAYOUTS:
        path = export_ticket(model, mask, tmp_path / f"{layout}.safetensors", layout, model_name="lenet5",
                             input_shape=SHAPE, num_classes=10)
        with torch.no_grad():
            assert torch.equal(load_exported(path)(x), model(x))
    dense, sparse = count_macs(model, SHAPE)
    assert dense == 6 * 25 * 28 * 28 + 16 * 6 * 25 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10
    assert sparse < dense
    assert isinstance(to_sparse(model).conv1, torch.nn.Conv2d)  # convolutions stay dense


def test_hostile_and_foreign_files_are_refused_clearly(tmp_path, ticket):
    model, mask = ticket
    pickle_file = tmp_path / "model.pt"
    torch.save(model.state_dict(), pickle_file)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    for bad in (pickle_file, garbage):
        with pytest.raises(CorruptFileError, match="not a lottery ticket file"):
            load_exported(bad)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, foreign)
    with pytest.raises(CorruptFileError, match="not a lottery ticket"):
        load_exported(foreign)
    with pytest.raises(FileNotFoundError):
        load_exported(tmp_path / "missing.safetensors")

    # A forged CSR index must not write out of bounds: it is caught by the invariant check.
    from safetensors.torch import load_file

    path = _export(model, mask, tmp_path / "t.safetensors", "csr")
    tensors, header = load_file(path), read_header(path)
    tensors["fc1.weight::col"] = tensors["fc1.weight::col"].clone()
    tensors["fc1.weight::col"][0] = 30000
    meta = {k: (json.dumps(v) if not isinstance(v, str) else v) for k, v in header.items()}
    forged = tmp_path / "forged.safetensors"
    save_file(tensors, forged, metadata=meta)
    with pytest.raises(CorruptFileError, match="damaged ticket tensors"):
        load_exported(forged)
    # A bitmask whose bit count disagrees with its values is refused too.
    path = _export(model, mask, tmp_path / "b.safetensors", "bitmask")
    tensors, header = load_file(path), read_header(path)
    tensors["fc2.weight::values"] = tensors["fc2.weight::values"][:-1].clone()
    save_file(tensors, forged, metadata={k: (json.dumps(v) if not isinstance(v, str) else v) for k, v in header.items()})
    with pytest.raises(CorruptFileError, match="kept bits"):
        load_exported(forged)
    with pytest.raises(ConfigError, match="unknown export format"):
        _export(model, mask, tmp_path / "x.safetensors", "coo")


def test_cli_exports_a_finished_level_of_a_run(tmp_path, capsys, monkeypatch):
    import lottery.export as export

    real = export.measure_latency
    monkeypatch.setattr(export, "measure_latency", lambda *a, **kw: real(*a[:3], min_run_time=0.01))
    cfg = tiny(tmp_path, levels=1, controls=(), steps=20)
    lt.run_imp(cfg)
    run_dir = os.path.join(cfg.out, cfg.run_name())
    assert main(["export", run_dir, "--level", "1", "--format", "bitmask", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "file size" in out and "multiply-adds" in out and "batch  256" in out
    path = os.path.join(run_dir, "level_01", "ticket-bitmask.safetensors")
    model = load_exported(path)
    final = lt.Mask.load(os.path.join(run_dir, "level_01", "mask.npz"))
    assert final.density == pytest.approx(0.8, abs=0.01)
    assert read_header(path)["extra"]["level"] == 1
    assert main(["export", run_dir, "--level", "5", "--no-report"]) == 2
    assert "no finished level 5" in capsys.readouterr().err
    assert isinstance(model, torch.nn.Module)


def test_benchmark_writes_only_its_results_section(tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_export.py"
    spec = importlib.util.spec_from_file_location("bench_export", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Pruning\n\nkept\n\n## Export\n\nold\n\n## GPU\n\nalso kept\n")
    assert bench.main(["--densities", "1,0.05", "--batches", "1,4", "--min-time", "0.01", "--results", str(results)]) == 0
    text = results.read_text()
    assert "kept" in text and "also kept" in text and "old" not in text
    assert "| 5.0% |" in text and "batch 4: sparse faster at" in text
    assert text.index("## Pruning") < text.index("## Export") < text.index("## GPU")


# -- forged headers: checked against the stored tensors before anything is built -------------------------------
@contextlib.contextmanager
def _memory_cap(extra=2 << 30):
    """Address space capped at what the process maps now plus ``extra``: a huge allocation fails here instead of
    swapping the machine (so a test proves nothing large is even attempted)."""
    import resource

    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _forge(tmp_path, layout="csr", tensors=None, **header_changes):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = lt.build_model("mlp", SHAPE, 10, hidden=[16])
    mask = lt.prune_magnitude(model, lt.Mask.ones_like(model), 0.8)
    mask.apply(model)
    path = export_ticket(model, mask, tmp_path / "real.safetensors", layout, model_name="mlp",
                         model_options={"hidden": [16]}, input_shape=SHAPE, num_classes=10)
    stored, header = load_file(path), read_header(path)
    stored.update(tensors(stored) if tensors else {})
    header.update(header_changes)
    forged = tmp_path / "forged.safetensors"
    save_file(stored, forged, metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in header.items()})
    return forged


def _deep(n):
    return "[" * n + "]" * n


@pytest.mark.parametrize("changes, needle", [
    ({"model_options": {"hidden": [200000, 200000]}}, "does not fit"),
    ({"input_shape": [1, 100000, 100000]}, "input_shape"),
    ({"input_shape": [3, 2**40]}, "input_shape"),
    ({"num_classes": 2**31}, "num_classes"),
    ({"num_classes": 2**24}, "does not fit"),
    ({"sparse": {"fc1.weight": [1, 2**33], "fc2.weight": [10, 16]}}, r"fc1.weight.*\[16, 784\]"),
    ({"sparse": {"fc1.weight": [16, 784]}}, "fc2.weight"),
], ids=["huge-hidden", "huge-input", "huger-input", "huge-classes", "many-classes", "huge-csr-shape", "missing-weight"])
def test_a_forged_header_is_refused_before_anything_large_is_built(tmp_path, changes, needle):
    forged = _forge(tmp_path, **changes)
    with _memory_cap(), pytest.raises(CorruptFileError, match=needle) as e:
        load_exported(forged)
    assert len(str(e.value).splitlines()) == 1


def test_a_deeply_nested_header_is_one_line(tmp_path):
    forged = _forge(tmp_path)
    from safetensors.torch import load_file, save_file

    header = {k: v if isinstance(v, str) else json.dumps(v) for k, v in read_header(forged).items()}
    for key, text in (("model_options", '{"hidden": ' + _deep(100000) + "}"), ("extra", _deep(100000)),
                      ("model_options", '{"hidden": ' + _deep(40) + "}")):
        save_file(load_file(forged), tmp_path / "deep.safetensors", metadata={**header, key: text})
        with pytest.raises(CorruptFileError, match="nested") as e:
            load_exported(tmp_path / "deep.safetensors")
        assert len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dtypes_the_format_never_writes_are_refused(tmp_path, layout):
    def half(stored):
        return {k: v.half() for k, v in stored.items() if v.is_floating_point()}

    with pytest.raises(CorruptFileError, match="float16"):
        load_exported(_forge(tmp_path, layout, tensors=half))
    if layout == "csr":
        def wide(stored):
            return {"fc1.weight::crow": stored["fc1.weight::crow"].long()}

        with pytest.raises(CorruptFileError, match="int64"):
            load_exported(_forge(tmp_path, layout, tensors=wide))
    assert load_exported(_forge(tmp_path, layout))(torch.zeros(2, *SHAPE)).shape == (2, 10)  # the unforged file


def test_export_reads_the_networks_shapes_from_the_run_not_the_data_set(tmp_path, monkeypatch):
    """results.json records input_shape and num_classes: export builds the network from them without loading the
    data set; a run made before they were recorded still exports, from its config's data set."""
    import lottery.session as session_module
    from lottery.export import export_run, read_header
    from lottery.storage.rundir import RunDir

    cfg = tiny(tmp_path, levels=1, controls=())
    lt.run_imp(cfg)
    run = RunDir.for_config(cfg)
    results = run.load_results()
    assert (results["input_shape"], results["num_classes"]) == ([1, 12, 12], 4)
    from safetensors.torch import load_file

    def exported(name):  # header and tensors (safetensors writes its metadata in no fixed order)
        path = export_run(run.path, 1, tmp_path / f"{name}.safetensors")
        return read_header(path), {k: v.tolist() for k, v in load_file(path).items()}

    reference = exported("reference")

    def no_data(cfg):
        raise AssertionError("export loaded the data set")

    monkeypatch.setattr(session_module, "read_dataset", no_data)
    assert exported("recorded") == reference
    monkeypatch.undo()
    old = {k: v for k, v in results.items() if k not in ("input_shape", "num_classes")}
    run.save_results(old)
    assert exported("old") == reference
