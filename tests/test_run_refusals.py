"""Settings refused before a run directory holds anything: late rewinding to the last step (later levels would
train no steps) and augmentation of inputs that are not images."""
import pytest

import lottery as lt
from lottery.cli import main
from lottery.errors import ConfigError
from tests.engine_helpers import tiny


@pytest.mark.parametrize("k, where", [(30, "at the end of"), (31, "beyond")])
def test_rewinding_to_the_last_step_or_beyond_is_refused(tmp_path, k, where):
    cfg = tiny(tmp_path, levels=1, controls=(), rewind=f"step:{k}", steps=30)
    with pytest.raises(ConfigError, match=f"rewind step {k} is {where} the 30 training steps") as e:
        lt.run_imp(cfg)
    assert "\n" not in str(e.value)
    assert lt.run_imp(cfg.replace(rewind="step:29"))["status"] == "complete"  # K < T trains T - K steps


def test_rewind_step_equal_to_the_steps_is_one_line_exit_2(tmp_path, capsys):
    argv = ["run", "--dataset", "synthetic", "--steps", "20", "--levels", "1", "--rewind", "step:20",
            "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at the end of the 20 training steps" in err, err


@pytest.mark.parametrize("command", ["run", "gradual", "prune-at-init"])
def test_augment_on_non_image_data_is_refused_before_anything_is_written(tmp_path, capsys, command):
    argv = [command, "--dataset", "synthetic", "--dataset-options", "input_shape=[12]", "--model", "mlp",
            "--augment", "crop_flip", "--steps", "10", "--levels", "1", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "crops and flips images" in err and "drop --augment" in err, err
    assert not any(tmp_path.rglob("*"))  # no run directory, not even config.json or a lock
