"""The ``domain:`` section of a CNN run, validated by the core's config loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Dataset = Literal["auto", "digits", "random"]


@dataclass
class RandomImages:
    """The paper's sample task (section V-B): 5-way classification of random 3x50x50 images.

    With ``signal: 0`` the labels are independent of the pixels, exactly as in the paper's
    sample extension (a smoke test: nothing is learnable). A positive ``signal`` adds a fixed
    random template per class, scaled by it, so that architectures can differ.
    """

    images: int = 1000
    channels: int = 3
    size: int = 50
    classes: int = 5
    signal: float = 0.0

    def __post_init__(self) -> None:
        if self.images < 20:
            raise ValueError(f"random.images must be at least 20, got {self.images}")
        if self.channels < 1 or self.size < 1:
            raise ValueError("random.channels and random.size must be positive")
        if self.classes < 2:
            raise ValueError(f"random.classes must be at least 2, got {self.classes}")
        if self.signal < 0:
            raise ValueError(f"random.signal must not be negative, got {self.signal}")


@dataclass
class SplitFractions:
    """Fractions of the images in each split (seeded shuffle); they must sum to 1."""

    weights: float = 0.5
    arch: float = 0.2
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        parts = (self.weights, self.arch, self.val, self.test)
        if any(p <= 0 for p in parts):
            raise ValueError(f"every split fraction must be positive, got {parts}")
        if abs(sum(parts) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {sum(parts):g}")


@dataclass
class CnnSettings:
    """Backbone shape and search space of the CNN domain.

    The backbone is a fixed 3x3 stem, then one searchable layer per entry of
    ``layer_strides`` (1 keeps the resolution, 2 halves it), global average pooling and a
    linear classifier. Every searchable layer chooses an operator (a conv with one of
    ``kernels``, or ``skip`` when ``skip`` is true) and, for a conv, its output width from
    ``widths``. ``stem_stride: null`` picks 1 for images up to 16 pixels, else size // 16.

    ``dataset: auto`` uses scikit-learn's 8x8 digits when scikit-learn is installed and the
    random-image task otherwise.
    """

    dataset: Dataset = "auto"
    random: RandomImages = field(default_factory=RandomImages)
    splits: SplitFractions = field(default_factory=SplitFractions)
    stem_width: int = 16
    stem_stride: int | None = None
    layer_strides: list[int] = field(default_factory=lambda: [1, 1, 2, 1])
    kernels: list[int] = field(default_factory=lambda: [3, 5, 7])
    widths: list[int] = field(default_factory=lambda: [8, 16, 32])
    skip: bool = True
    latency_device: str = "cpu"
    latency_batch: int = 1
    latency_cache: str | None = None

    def __post_init__(self) -> None:
        if self.stem_width < 1:
            raise ValueError(f"stem_width must be positive, got {self.stem_width}")
        if self.stem_stride is not None and self.stem_stride < 1:
            raise ValueError(f"stem_stride must be positive, got {self.stem_stride}")
        if not self.layer_strides or any(s not in (1, 2) for s in self.layer_strides):
            raise ValueError(f"layer_strides must be a non-empty list of 1 or 2, got "
                             f"{self.layer_strides}")
        if not self.kernels or any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be odd positive sizes, got {self.kernels}")
        if len(set(self.kernels)) != len(self.kernels):
            raise ValueError(f"kernels lists a size twice: {self.kernels}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be positive, got {self.widths}")
        if len(set(self.widths)) != len(self.widths):
            raise ValueError(f"widths lists a width twice: {self.widths}")
        if self.latency_batch < 1:
            raise ValueError(f"latency_batch must be positive, got {self.latency_batch}")

    @property
    def space(self) -> str:
        """The name runs and architecture ids use for this search space."""
        return "cnn"
