"""A tiny ImageNet-style folder (``train/<class>/*.png``, ``val/<class>/*.png``) that an MLP learns in a few steps."""
from pathlib import Path

import numpy as np


def write_image_folder(root, classes=("ants", "bees", "cats"), n_train=16, n_val=6, size=8, seed=0) -> Path:
    """Each class is a noisy version of its own random colour pattern, saved as RGB PNGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    patterns = rng.uniform(40, 215, size=(len(classes), size, size, 3))
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(patterns[c] + rng.normal(0, 25, patterns[c].shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"{i:03d}.png")
    return root
