"""Small configs for engine tests: a synthetic data set and a tiny MLP, so each run takes a second or two."""
from lottery.config import from_dict


def tiny(tmp_path, **overrides):
    settings = dict(
        name="t", dataset="synthetic", model="mlp", model_options={"hidden": [32, 16]}, steps=60, eval_every=20,
        batch_size=32, levels=3, lr=5e-3, out=str(tmp_path / "runs"), progress=False, device="cpu",
    )
    settings.update(overrides)
    return from_dict(settings)


def strip_times(results):
    """results.json without wall-clock fields and the output path, for exact comparisons between runs."""
    def clean(d):
        return {k: clean(v) if isinstance(v, dict) else v for k, v in d.items()
                if k not in ("wall_time", "level_wall_time")}
    config = {k: v for k, v in results["config"].items() if k != "out"}
    return {**results, "config": config, "levels": [clean(e) for e in results["levels"]]}
