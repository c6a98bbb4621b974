"""Image datasets for the CNN domain, as the core's in-memory TensorTable with seeded splits.

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), which ships
  inside scikit-learn itself, so nothing is downloaded. Install with the ``digits`` extra.
- ``random``: the paper's sample task, random 3x50x50 images in 5 classes, generated from
  the seed (optionally with a class template, see ``RandomImages.signal``).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from dnas_cnn.settings import CnnSettings, RandomImages, SplitFractions
from dnas_core import DataBundle, TensorTable


def digits_available() -> bool:
    return importlib.util.find_spec("sklearn") is not None


def resolve_dataset(settings: CnnSettings) -> str:
    if settings.dataset == "auto":
        return "digits" if digits_available() else "random"
    return settings.dataset


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, 8, 8), standardised over the whole set, and labels (n,)."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:
        raise RuntimeError("domain.dataset=digits needs scikit-learn: pip install "
                           "'dnas-cnn[digits]' (or set domain.dataset=random)") from exc
    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = (images - images.mean()) / images.std()
    return images, torch.tensor(digits.target, dtype=torch.long)


def random_images(settings: RandomImages, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (settings.channels, settings.size, settings.size)
    labels = torch.randint(0, settings.classes, (settings.images,), generator=gen)
    images = torch.randn(settings.images, *shape, generator=gen)
    if settings.signal > 0:
        templates = torch.randn(settings.classes, *shape, generator=gen)
        images = images + settings.signal * templates[labels]
    return images, labels


def split_rows(n: int, fractions: SplitFractions, seed: int) -> dict[str, np.ndarray]:
    """A seeded shuffle cut into weights / arch / val / test, each non-empty."""
    order = np.random.default_rng([seed, 7]).permutation(n)
    cuts = np.cumsum([fractions.weights, fractions.arch, fractions.val])
    bounds = [0, *(int(round(c * n)) for c in cuts), n]
    names = ("weights", "arch", "val", "test")
    splits = {name: np.sort(order[bounds[i]:bounds[i + 1]]) for i, name in enumerate(names)}
    empty = [name for name, rows in splits.items() if rows.size == 0]
    if empty:
        raise ValueError(f"{n} images are too few for split fractions {fractions}: "
                         f"{', '.join(empty)} would be empty")
    return splits


def make_data(settings: CnnSettings, seed: int) -> DataBundle:
    dataset = resolve_dataset(settings)
    if dataset == "digits":
        images, labels = load_digits()
        classes = 10
    else:
        images, labels = random_images(settings.random, seed)
        classes = settings.random.classes
    info = {"dataset": dataset, "channels": images.shape[1], "image_size": images.shape[2],
            "classes": classes, "images": len(labels)}
    return DataBundle(TensorTable(images, labels), split_rows(len(labels), settings.splits, seed),
                      info)
