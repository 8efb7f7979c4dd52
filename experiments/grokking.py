"""Grokking tickets on a + b mod 97: how many steps until held-out pairs reach 95 % accuracy, per mask.

For each seed and init scale: a dense 1-layer ``gpt`` (GPT-2 init times the scale) trains on ``modular_addition``
(40 % of the 97² pairs) with AdamW and strong weight decay; the step its training accuracy first reaches 99 % is
the memorisation point, and it trains on until held-out accuracy reaches 99 % (the generalised network). At each
density, three masks from those and two chosen at init train from the same init (rewound), each stopping once
held-out accuracy reaches 95 %, or at ``--cap`` times the steps the dense network took to get there (default 1: a
mask that is not faster than dense did not remove the delay; the cap keeps the study within a CPU budget):

- ``ticket``: magnitude mask of the final (generalised) weights, rewound to init (Minegishi et al.'s grokked ticket);
- ``memorised``: magnitude mask of the weights at the memorisation point, rewound to init;
- ``random_mask``: a random mask with the ticket's per-layer counts (IMP's control);
- ``snip``, ``synflow``: lottery's prune-at-init strategies on the init;
- ``dense_norm``, ``dense_norm_layerwise`` (on request): the dense network with every prunable weight of its init
  multiplied by one factor, so that its weights have the L2 norm of the ticket's (``ticket`` or ``ticket_layerwise``)
  rewound init: the same norm without the sparsity (Minegishi et al.'s weight-norm control). Nothing else is
  pruned, so the whole network's norm then equals the ticket's too.

Held-out accuracy is the validation split (pairs never trained on; ``test_accuracy`` is measured on the test pairs
when a run stops). Every finished run is saved before the next starts, so the same command resumes::

    nice -n 19 python experiments/grokking.py --out runs/grokking --seeds 0,1,2 --scales 1,0.5 --densities 0.4,0.15
    nice -n 19 python experiments/grokking.py --out runs/grokking --seeds 0,1,2 --scales 1 --densities 0.4 \
        --arms dense_norm,dense_norm_layerwise                         # the weight-norm controls
    python experiments/grokking.py --out runs/grokking --summary      # table with paired 95 % t intervals
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import lottery as lt
from lottery.config import from_dict
from lottery.pruning import PRUNERS, random_mask_like
from lottery.stats import interval, paired_interval
from lottery.storage.atomic import save_json
from lottery.train import derived_seed, evaluate, train

DATA = dict(p=97, train_fraction=0.4)
MODEL = dict(width=64, depth=1, heads=4, mlp_ratio=2)
TRAINING = dict(optimizer="adamw", lr=1e-3, weight_decay=1.0, batch_size=512, steps=2500, eval_every=100,
                warmup_steps=10, record_signal=False)
CHECK_EVERY, TARGET, MEMORISED, GENERALISED = 50, 0.95, 0.99, 0.99
ARMS = ("ticket", "random_mask", "memorised", "snip", "synflow")  # in this order: a cut-short study has the first
EXTRA_ARMS = ("ticket_layerwise", "random_layerwise", "dense_norm", "dense_norm_layerwise")  # on request (--arms)
NORM_ARMS = {"dense_norm": "ticket", "dense_norm_layerwise": "ticket_layerwise"}  # arm -> the ticket it matches


class Reached(Exception):
    """Raised by the probe to end a run once held-out accuracy reaches the target (the rest is not measured)."""


class Probe:
    """A step hook: held-out (and training) accuracy every CHECK_EVERY steps; stops a run at TARGET if asked."""

    def __init__(self, model, data, stop_at: float, fit: bool):
        self.model, self.data, self.stop_at, self.fit = model, data, stop_at, fit
        self.curve, self.reached, self.memorised, self.memorised_state = [], None, None, None

    def __call__(self, step, optimizer):
        if step % CHECK_EVERY:
            return None
        was = self.model.training
        held_out = evaluate(self.model, *self.data.val)[1]
        fit = evaluate(self.model, *self.data.train)[1] if self.fit else math.nan  # the dense run's only
        self.model.train(was)
        self.curve.append([step, fit, held_out])
        if self.memorised is None and fit >= MEMORISED:
            self.memorised, self.memorised_state = step, lt.snapshot(self.model)
        if self.reached is None and held_out >= TARGET:
            self.reached = step
        if held_out >= self.stop_at:
            raise Reached
        return None


def run_arm(model, init, mask, data, cfg, seed, reference=False) -> tuple[dict, Probe]:
    """Train from ``init`` under ``mask`` (None: dense) until it stops: at TARGET, or for the ``reference`` dense
    run at GENERALISED (it also records training accuracy, for the memorisation point)."""
    lt.rewind(model, init, mask) if mask is not None else model.load_state_dict(init)
    probe = Probe(model, data, GENERALISED if reference else TARGET, fit=reference)
    try:
        train(model, data, cfg, mask, seed=seed, step_hook=probe)
    except Reached:
        pass
    test = evaluate(model, *data.test)[1]
    return {"steps_to_95": probe.reached, "memorised_at": probe.memorised, "test_accuracy": test,
            "steps": probe.curve[-1][0], "density": mask.density if mask is not None else 1.0,
            "curve": probe.curve}, probe


def arm_mask(arm: str, model, dense: dict, init: dict, density: float, data, seed: int) -> lt.Mask:
    """The arm's mask at ``density``, from the dense run's weights (tickets) or the init (SNIP, SynFlow)."""
    ones, fraction = lt.Mask.ones_like(model), 1 - density
    model.load_state_dict(dense["memorised" if arm == "memorised" else "final"] if arm not in PRUNERS else init)
    if arm in ("ticket", "memorised"):
        return lt.prune_magnitude(model, ones, fraction)
    # A random control draws from a seed of its own: drawn from the init's seed, its scores would follow the init's
    # draws and keep its larger weights (at 40 %, 0.79 of the init's norm where a random 40 % keeps 0.63).
    draw = derived_seed(seed, "random_mask")
    if arm in ("ticket_layerwise", "random_layerwise"):  # the same fraction of every layer: none starved
        ticket = lt.prune_magnitude(model, ones, fraction, scope="layer")
        return ticket if arm == "ticket_layerwise" else random_mask_like(ticket, draw)
    if arm == "random_mask":  # the ticket's per-layer counts at random positions
        return random_mask_like(lt.prune_magnitude(model, ones, fraction), draw)
    return PRUNERS.get(arm)(model, ones, fraction, data=data.train, seed=seed)


@torch.no_grad()
def norm_matched(init: dict, mask: lt.Mask, p: float = 2.0) -> tuple[dict, float]:
    """``init`` with every weight ``mask`` covers multiplied by one factor c: the Lp norm of those weights becomes
    that of ``mask`` applied to them (the ticket's rewound init); everything else is kept as it is. Returns the new
    state and c. The factor is one number, not one per layer: the weights keep their directions and ratios."""
    norm = lambda tensors: float(sum(t.double().abs().pow(p).sum() for t in tensors) ** (1 / p))  # noqa: E731
    factor = norm(init[name][kept] for name, kept in mask.items()) / norm(init[name] for name in mask)
    return {k: v * factor if k in mask else v.clone() for k, v in init.items()}, factor


def one_trunk(out: Path, seed: int, scale: float, densities, cap_factor: float, arms=ARMS) -> None:
    path = out / f"seed{seed}-scale{scale:g}.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    data = lt.load_dataset("modular_addition", **DATA)
    cfg = from_dict(dict(dataset="modular_addition", model="gpt", **TRAINING))
    model = lt.build_model("gpt", data.input_shape, data.num_classes, **MODEL)
    init = lt.snapshot(lt.init_weights(model, "gpt2", seed=seed, scale=scale))
    states = out / f"seed{seed}-scale{scale:g}-dense.pt"
    if "dense" not in done or not states.exists():
        done["dense"], probe = run_arm(model, init, None, data, cfg, seed, reference=True)
        if probe.memorised_state is None or probe.reached is None:
            raise SystemExit(f"seed {seed} scale {scale}: the dense net did not memorise and generalise in "
                             f"{cfg.steps} steps; raise TRAINING['steps']")
        torch.save({"final": lt.snapshot(model), "memorised": probe.memorised_state}, states)
        save_json(path, done)
    dense = torch.load(states, weights_only=True)
    cap = from_dict(dict(dataset="modular_addition", model="gpt", **{
        **TRAINING, "steps": math.ceil(cap_factor * done["dense"]["steps_to_95"] / CHECK_EVERY) * CHECK_EVERY}))
    for density in densities:
        for arm in arms:
            key = f"{arm}@{density:g}"
            if key in done:
                continue
            if arm in NORM_ARMS:  # dense, from the init scaled to the norm of the ticket's rewound init
                start, factor = norm_matched(init, arm_mask(NORM_ARMS[arm], model, dense, init, density, data, seed))
                done[key] = {**run_arm(model, start, None, data, cap, seed)[0], "norm_factor": factor}
            else:
                mask = arm_mask(arm, model, dense, init, density, data, seed)
                done[key] = run_arm(model, init, mask, data, cap, seed)[0]
            save_json(path, done)
            print(f"seed {seed} scale {scale:g} {key}: steps to 95 % {done[key]['steps_to_95']}", flush=True)


PAIRS = (("ticket", "random_mask"), ("ticket", "memorised"), ("ticket", "snip"), ("ticket", "synflow"),
         ("ticket_layerwise", "random_layerwise"), ("ticket_layerwise", "ticket"), ("ticket_layerwise", "memorised"),
         ("ticket_layerwise", "snip"), ("ticket_layerwise", "synflow"), ("ticket", "dense_norm"),
         ("ticket_layerwise", "dense_norm_layerwise"))  # the summary's arm-against-arm comparisons


def _steps(runs: dict, key: str) -> tuple[dict, dict]:
    """Steps to TARGET per seed (a run stopped at its cap counts as the cap) and whether each seed reached it."""
    got = {s: r[key] for s, r in runs.items() if key in r}
    return ({s: g["steps_to_95"] if g["steps_to_95"] is not None else g["steps"] for s, g in got.items()},
            {s: g["steps_to_95"] is not None for s, g in got.items()})


def summary(out: Path) -> str:
    """Per scale and arm: steps to 95 % (mean with its 95 % t interval over seeds, and each seed's; a run stopped at
    its cap counts as the cap, flagged '>'), and the paired difference arm − dense by seed; then the PAIRS of arms
    at the same density, paired by seed (a capped run makes its arm's steps a lower bound)."""
    trunks = {}
    for path in sorted(out.glob("seed*-scale*.json")):
        seed, scale = path.stem.split("-")
        trunks.setdefault(scale[5:], {})[int(seed[4:])] = json.loads(path.read_text())
    lines = [f"steps until held-out accuracy >= {TARGET:.0%} ('>': stopped at its cap, the dense network's steps; "
             "counted as the cap)",
             "scale  arm                       n  mean steps [95% CI]    reached  arm - dense [95% CI]  "
             "arm / dense [95% CI]  per seed"]
    fmt = lambda r, f=".0f": "-" if r.get("lo") is None else \
        f"{r['mean']:{f}} [{r['lo']:{f}}, {r['hi']:{f}}]"  # noqa: E731
    pairs = []
    for scale, runs in trunks.items():
        keys = sorted({k for r in runs.values() for k in r}, key=lambda k: (k != "dense", k))
        dense = {s: r["dense"]["steps_to_95"] for s, r in runs.items() if "dense" in r}
        for key in keys:
            steps, reached = _steps(runs, key)
            diff = paired_interval(steps, dense) if key != "dense" else {}
            ratio = interval(steps[s] / dense[s] for s in steps if s in dense) if key != "dense" else {}
            each = " / ".join(f"{'' if reached[s] else '>'}{steps[s]}" for s in sorted(steps))
            n_reached = sum(reached.values())
            lines.append(f"{scale:5}  {key:24} {len(steps):2}  {fmt(interval(steps.values())):22} "
                         f"{n_reached}/{len(steps)}{'' if n_reached == len(steps) else ' >':3}   {fmt(diff):20}  "
                         f"{fmt(ratio, '.2f'):20}  {each}")
        for density in sorted({k.split("@")[1] for k in keys if "@" in k}, key=float, reverse=True):
            for a, b in PAIRS:
                (sa, ra), (sb, rb) = _steps(runs, f"{a}@{density}"), _steps(runs, f"{b}@{density}")
                d = paired_interval(sa, sb)
                if d["n"]:
                    capped = sum(not ra[s] for s in d["seeds"]), sum(not rb[s] for s in d["seeds"])
                    pairs.append(f"{scale:5}  {density:5}  {a + ' - ' + b:40} {d['n']:2}  {fmt(d):22} "
                                 f"{capped[0]} / {capped[1]}")
    lines += ["", "arm a - arm b at the same density, steps, paired by seed (capped: seeds a / b stopped at the cap)",
              "scale  dens.  a - b                                     n  mean [95% CI]          capped"] + pairs
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/grokking")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scales", default="1,0.5")
    parser.add_argument("--densities", default="0.4,0.15")
    parser.add_argument("--cap", type=float, default=1.0, help="stop a masked run at this many times the steps "
                        "dense took to reach 95 %% (recorded as not reaching it)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"masks to train, of {', '.join(ARMS + EXTRA_ARMS)}")
    parser.add_argument("--summary", action="store_true", help="print the table of what has finished")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.summary:
        print(summary(out))
        return
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for scale in (float(s) for s in args.scales.split(",")):
        seeds = [int(s) for s in args.seeds.split(",")]
        for seed in seeds:  # the dense runs first, then arm by arm over the seeds: a study cut short is balanced
            one_trunk(out, seed, scale, [], args.cap)
        for density in (float(d) for d in args.densities.split(",")):
            for arm in args.arms.split(","):
                for seed in seeds:
                    one_trunk(out, seed, scale, [density], args.cap, arms=[arm])
    print(summary(out))


if __name__ == "__main__":
    main()
