"""Every subcommand's own options come from its dataclass in lottery/options.py: the flags, the --config table
([gradual], [export], ...) with flags overriding it, and one-line errors for bad values. The drivers are replaced
by stand-ins that record what reached them, so nothing trains."""
import dataclasses
import importlib
import inspect
import re
from dataclasses import fields

import pytest

from lottery.cli import build_parser, config_from_args, main
from lottery.errors import ConfigError
from lottery.drivers.gradual import GradualOptions
from lottery.drivers.registry import DRIVERS as REGISTRY
from lottery.drivers.stability import StabilityOptions
from lottery.options import Options, flag_name, options_from_args

# every subcommand's own options generated from a dataclass (from the registry: export's too; not those written by
# hand: report, list, demo)
OPTIONS = {name: d.options for name, d in REGISTRY.items() if isinstance(d.options, type)
           and issubclass(d.options, Options)}
from tests.test_cli import _one_line_error

DRIVERS = {"run": ("lottery.drivers.seeds", "run_command"),
           "compare-inits": ("lottery.drivers.compare_inits", "compare_inits"), "prune-at-init": ("lottery.drivers.prune_at_init",
           "run_prune_at_init"), "gradual": ("lottery.drivers.gradual", "run_gradual"),
           "supermask": ("lottery.drivers.supermask", "supermask_run"),
           "stability": ("lottery.drivers.stability", "stability_run"), "export": ("lottery.export", "export_run"),
           "transfer": ("lottery.drivers.transfer", "transfer_mask"), "budget": ("lottery.drivers.budget", "run_budget")}
TRAINING = "dataset = \"synthetic\"\nsteps = 20\nlevels = 1\n"  # the experiment, at the top level of the file


class Reached(Exception):
    """Raised by a stand-in driver with the arguments it was called with."""


@pytest.fixture
def driver(monkeypatch):
    """``driver(command)`` replaces the subcommand's driver; the call raises Reached(args, kwargs)."""
    def patch(command):
        module, name = DRIVERS[command]

        def stand_in(*args, **kwargs):
            raise Reached(args, kwargs)

        original = getattr(importlib.import_module(module), name)
        monkeypatch.setattr(importlib.import_module(module), name, stand_in)
        if REGISTRY[command].run is original:  # the library function is the registered entry point itself
            patched[command] = REGISTRY[command]
            dict.__setitem__(REGISTRY, command, dataclasses.replace(patched[command], run=stand_in))
    patched = {}
    yield patch
    for command, entry in patched.items():
        dict.__setitem__(REGISTRY, command, entry)


def _reached(command, argv):
    with pytest.raises(Reached) as e:
        main([command, *(["RUN_DIR"] if OPTIONS[command].studies_run else []), *argv])
    return e.value.args


@pytest.mark.parametrize("command", OPTIONS)
def test_help_lists_every_field_as_a_flag_with_config_and_no_progress(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    flags = [flag_name(f) for f in fields(OPTIONS[command]) if f.metadata["flag"]] + ["--config", "--no-progress"]
    missing = [f for f in flags if not re.search(rf"^\s+{re.escape(f)}\b", out, re.M)]
    assert not missing, out


# command, TOML table body, flag overriding it, what the driver got: (from the file, with the flag)
CASES = [
    ("gradual", "prune_every = 7\nfinal_densities = [0.3]", ["--prune-every", "9"],
     lambda a, k: (a[1], a[2]), ((0.3,), 7), ((0.3,), 9)),
    ("prune-at-init", 'densities = [0.3]\nablations = "none"', ["--densities", "0.4"],
     lambda a, k: (a[2], a[3]), ((0.3,), ()), ((0.4,), ())),
    ("compare-inits", 'inits = ["normal", "zeros"]\nseeds = 2\njobs = 2', ["--seeds", "3"],
     lambda a, k: (a[1], a[2], k["jobs"]), (("normal", "zeros"), 2, 2), (("normal", "zeros"), 3, 2)),
    ("supermask", 'seed = 4\ncriteria = "movement"', ["--seed", "5"],
     lambda a, k: (a[2], a[4]), (("movement",), 4), (("movement",), 5)),
    ("stability", "points = 5\nseeds = [3, 4]", ["--points", "7"],
     lambda a, k: (a[3], a[4]), ((3, 4), 5), ((3, 4), 7)),
    ("export", 'level = 2\nformat = "bitmask"', ["--format", "dense"],
     lambda a, k: (a[1], a[3]), (2, "bitmask"), (2, "dense")),
    ("transfer", 'level = 3\nalign = "sign"\nmatch = "init"', ["--level", "4"],
     lambda a, k: (a[1], a[4], k["match"]), (3, ("sign",), "init"), (4, ("sign",), "init")),
]


@pytest.mark.parametrize("command, body, flag, got, from_file, with_flag", CASES, ids=[c[0] for c in CASES])
def test_a_table_sets_the_option_and_a_flag_overrides_it(tmp_path, driver, command, body, flag, got, from_file,
                                                         with_flag):
    driver(command)
    path = tmp_path / "exp.toml"
    path.write_text(f"{TRAINING}[{OPTIONS[command].table()}]\n{body}\n")
    assert got(*_reached(command, ["--config", str(path)])) == from_file
    assert got(*_reached(command, ["--config", str(path), *flag])) == with_flag
    if not OPTIONS[command].studies_run:  # the same file's top level is the experiment
        cfg = _reached(command, ["--config", str(path)])[0][0]
        assert (cfg.dataset, cfg.steps, cfg.levels) == ("synthetic", 20, 1)


def test_compare_inits_still_reads_its_keys_and_submitit_from_the_top_level(tmp_path, driver):
    driver("compare-inits")
    path = tmp_path / "exp.toml"
    path.write_text(f'{TRAINING}inits = ["normal"]\nseeds = [0, 3]\nexecutor = "submitit"\n'
                    '[submitit]\ncluster = "local"\n')
    args, kwargs = _reached("compare-inits", ["--config", str(path)])
    assert (args[1], args[2], kwargs["executor"], kwargs["submitit"]) == (("normal",), (0, 3), "submitit",
                                                                         {"cluster": "local"})


def test_run_takes_a_file_holding_every_subcommands_options(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(TRAINING + 'inits = ["normal"]\n' + "".join(f"[{cls.table()}]\n" for cls in OPTIONS.values()))
    cfg = config_from_args(build_parser().parse_args(["run", "--config", str(path)]))
    assert (cfg.dataset, cfg.steps) == ("synthetic", 20)


@pytest.mark.parametrize("command", OPTIONS)
def test_an_unknown_key_in_a_table_is_one_line(tmp_path, capsys, driver, command):
    driver(command)
    path = tmp_path / "exp.toml"
    path.write_text(f"[{OPTIONS[command].table()}]\nnope = 1\n")
    err = _one_line_error(capsys, [command, *(["RUN_DIR"] if OPTIONS[command].studies_run else []),
                                   "--config", str(path)], "'nope'", f"[{OPTIONS[command].table()}]")
    assert all(f.name in err for f in fields(OPTIONS[command]))  # the known keys are listed


@pytest.mark.parametrize("argv, needle", [
    (["gradual", "--prune-every", "0"], "--prune-every"),
    (["gradual", "--final-densities", "0.2,1"], "--final-densities"),
    (["stability", "RUN", "--points", "1"], "--points"),
    (["stability", "RUN", "--seeds", "1,1"], "--seeds"),
    (["export", "RUN", "--level", "1", "--threads", "0"], "--threads"),
    (["export", "RUN"], "--level"),
    (["compare-inits", "--inits", "normal", "--jobs", "0"], "--jobs"),
    (["compare-inits", "--inits", "normal", "--executor", "slurm"], "--executor"),
    (["prune-at-init", "--densities", "0"], "--densities"),
    (["prune-at-init", "--strategies", "snip,nope"], "--strategies"),
    (["supermask", "RUN", "--densities", "1.5"], "--densities"),
    (["supermask", "RUN", "--scope", "all"], "--scope"),
    (["gradual", "--prune-every", "ten"], "--prune-every"),  # refused by argparse: not an integer
])
def test_bad_values_are_one_line_before_the_driver_runs(capsys, driver, argv, needle):
    driver(argv[0])
    _one_line_error(capsys, argv, needle)


def test_a_bad_value_in_a_table_names_the_key_and_the_file(tmp_path, capsys, driver):
    driver("stability")
    path = tmp_path / "exp.toml"
    path.write_text("[stability]\npoints = 1\n")
    _one_line_error(capsys, ["stability", "RUN", "--config", str(path)], "'points' in [stability]", str(path))
    path.write_text('[stability]\npoints = "many"\n')
    _one_line_error(capsys, ["stability", "RUN", "--config", str(path)], "'points'", "integer")
    path.write_text("stability = 3\n")
    _one_line_error(capsys, ["stability", "RUN", "--config", str(path)], "must be a table")


@pytest.mark.parametrize("command", ["stability", "supermask", "export"])
def test_run_dir_subcommands_take_no_progress_and_a_config_file(tmp_path, command):
    path = tmp_path / "exp.toml"
    path.write_text(f"[{command}]\n" + ("level = 1\n" if command == "export" else ""))
    args = build_parser().parse_args([command, "RUN_DIR", "--config", str(path), "--no-progress"])
    assert options_from_args(OPTIONS[command], args).progress is False and args.run_dir == "RUN_DIR"
    path.write_text(path.read_text() + "progress = false\n")  # the file may say it too
    args = build_parser().parse_args([command, "RUN_DIR", "--config", str(path)])
    assert options_from_args(OPTIONS[command], args).progress is False


def test_stability_and_supermask_pass_no_progress_to_the_driver(driver):
    for command in ("stability", "supermask"):
        driver(command)
        assert _reached(command, ["--no-progress"])[1]["progress"] is False
        assert _reached(command, [])[1]["progress"] is True


def test_an_options_object_is_valid_however_it_is_made():
    assert GradualOptions(final_densities="0.5", prune_every="3").prune_every == 3
    with pytest.raises(ConfigError, match="--prune-every"):
        GradualOptions(prune_every=0)
    with pytest.raises(ConfigError, match="--end-step"):
        GradualOptions(begin_step=50, end_step=10)


@pytest.mark.parametrize("command", ["prune-at-init", "supermask", "stability"])
def test_the_defaults_are_the_library_functions_defaults(command):
    """The Python API keeps its own defaults; they must be the command line's."""
    params = inspect.signature(getattr(importlib.import_module(DRIVERS[command][0]), DRIVERS[command][1])).parameters
    defaults = {f.name: f.default for f in fields(OPTIONS[command])
                if f.name in params and f.name not in ("criteria", "progress")}  # () / True mean None / bars on
    assert defaults and all(tuple(params[k].default) == v if isinstance(v, tuple) else params[k].default == v
                            for k, v in defaults.items()), defaults


def test_stability_defaults_round_trip():
    assert StabilityOptions() == StabilityOptions(level=0, k=0, seeds="1,2", points="21")
