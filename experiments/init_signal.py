"""Per-layer signal at initialization, per init scheme, on the study's deep MLP (nothing is trained here).

    python experiments/init_signal.py [--out experiments/figures/init_signal_deep_mlp.png]

For each scheme: the std of every layer's output and the norm of every weight's gradient on 256 Fashion-MNIST
validation images, at step 0 (``lottery.layer_signal.SignalProbe``, the probe every run records). Prints the table and
draws both as lines over depth on a log scale.
"""
from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import lottery as lt  # noqa: E402
from lottery.init_variant import parse_init_variant  # noqa: E402
from lottery.layer_signal import SignalProbe  # noqa: E402

SCHEMES = ["normal", "normal:std=1.0", "xavier_normal", "kaiming_normal", "orthogonal", "lsuv", "zeros"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="experiments/figures/init_signal_deep_mlp.png")
    parser.add_argument("--depth", type=int, default=12)
    args = parser.parse_args()
    data = lt.load_dataset("fashion_mnist")
    x, y = data.val
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    print(f"{'scheme':<16} {'act std: layer 1':>16} {'last hidden':>12} {'output':>10} {'grad norm: layer 1':>18} {'last':>10}")
    for text in SCHEMES:
        v = parse_init_variant(text)
        model = lt.build_model("deep_mlp", data.input_shape, data.num_classes, depth=args.depth, width=128)
        lt.init_weights(model, v.scheme, seed=0, scale=v.scale or 1.0, data=data.train[0][:640], **v.options)
        probe = SignalProbe(model, x, y)
        probe(0)
        std, grad = probe.activation_std[0], probe.grad_norm[0]
        print(f"{text:<16} {std[0]:16.3g} {std[-2]:12.3g} {std[-1]:10.3g} {grad[0]:18.3g} {grad[-1]:10.3g}")
        for ax, values in zip(axes, (std, grad)):
            pts = [(i + 1, val) for i, val in enumerate(values) if val]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=text)
    for ax, label in zip(axes, ("activation std (layer output)", "weight-gradient norm")):
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"signal at initialization, {args.depth} x 128 ReLU MLP, Fashion-MNIST (zeros: all 0, not drawn)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
