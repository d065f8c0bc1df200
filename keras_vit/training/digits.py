"""scikit-learn's handwritten digits written as an image folder, for offline training runs.

The 1,797 digits are 8x8 grey images with values 0..16. They are scaled to
0..255, upscaled (bilinear, PIL) to ``image_size`` and saved as RGB PNG files
in ``root/train/<digit>/`` and ``root/test/<digit>/``; the test part is a
stratified, seeded hold-out that training never sees.

Command line: ``python -m keras_vit.training.digits --output data/digits``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DIGIT_LABELS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DigitsFolder:
    """Where :func:`write_digits` put the images, and how many per split."""

    root: Path
    train_dir: Path
    test_dir: Path
    num_train: int
    num_test: int


def write_digits(
    root: str | os.PathLike,
    image_size: int = 32,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DigitsFolder:
    """Writes the digits as PNG files into ``root/{train,test}/<digit>/<index>.png``.

    The split is stratified by digit and fixed by ``seed``; file names are the
    index in ``sklearn.datasets.load_digits()``, so two calls with the same
    arguments write the same files. Existing files of the same name are
    overwritten; other files in ``root`` are left alone.
    """
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 (the digits are 8x8), got {image_size}")
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    targets = digits.target
    test_mask = _stratified_mask(targets, test_fraction, seed)

    root = Path(root)
    counts = {"train": 0, "test": 0}
    for index, (image, target, is_test) in enumerate(zip(images, targets, test_mask, strict=True)):
        split = "test" if is_test else "train"
        folder = root / split / DIGIT_LABELS[target]
        folder.mkdir(parents=True, exist_ok=True)
        big = Image.fromarray(image).resize((image_size, image_size), Image.Resampling.BILINEAR)
        big.convert("RGB").save(folder / f"{index:04d}.png")
        counts[split] += 1
    return DigitsFolder(root, root / "train", root / "test", counts["train"], counts["test"])


def _stratified_mask(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask choosing ``round(fraction * n_c)`` items of every class ``c``."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(targets), dtype=bool)
    for value in np.unique(targets):
        members = np.flatnonzero(targets == value)
        chosen = rng.permutation(members)[: int(round(fraction * len(members)))]
        mask[chosen] = True
    return mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_vit.training.digits",
        description="Write scikit-learn's digits as PNG files into OUTPUT/{train,test}/<digit>/.",
    )
    parser.add_argument("--output", required=True, help="folder to write into")
    parser.add_argument("--image-size", type=int, default=32, help="side in pixels (default 32)")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="held-out share (default 0.2)"
    )
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    args = parser.parse_args(argv)
    try:
        folder = write_digits(args.output, args.image_size, args.test_fraction, args.seed)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    print(f"wrote {folder.num_train} training images to {folder.train_dir}")
    print(f"wrote {folder.num_test} held-out images to {folder.test_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
