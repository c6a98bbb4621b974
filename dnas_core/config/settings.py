"""The core's typed settings: everything in the paper's Table I, and sampled training.

Defaults follow the authors' experiments (see docs/architecture.md); domains ship their
own defaults and presets as YAML that is merged over these before validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class GroupSchedule:
    """Overrides for one named group of weight parameters (e.g. ``embeddings``)."""

    lr: float | None = None
    lr_decay: float | None = None
    optimizer: str | None = None
    args: dict[str, Any] | None = None


@dataclass
class OptimizerSettings:
    """Any ``torch.optim`` optimizer by name, its arguments and an LR schedule.

    The LR at (possibly fractional) epoch e is ``lr * lr_decay ** e``; ``groups`` gives a
    parameter group its own LR, decay, or even its own optimizer (e.g. ``SparseAdam`` for
    sparse embedding tables while the dense layers use ``Adam``).
    """

    name: str = "SGD"
    lr: float = 1.0
    lr_decay: float = 1.0
    args: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, GroupSchedule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.lr_decay <= 0:
            raise ValueError(f"lr_decay must be positive, got {self.lr_decay}")


@dataclass
class CostSettings:
    """The cost-aware loss: ``additive`` is eq. 6, ``multiplicative`` eq. 5, or ``off``.

    ``terms`` picks the domain's cost models by name with a weight each; more than one term
    (or ``normalise: true``) divides each by its scale first. Empty means the domain's
    default cost.
    """

    form: Literal["additive", "multiplicative", "off"] = "additive"
    coef: float = 3e-6
    exponent: float = 1.0
    multiplier: float = 1.0
    terms: dict[str, float] = field(default_factory=dict)
    normalise: bool = False

    def __post_init__(self) -> None:
        if self.multiplier <= 0:
            raise ValueError(f"multiplier must be positive, got {self.multiplier}")


@dataclass
class SearchSettings:
    """Supernet training (the paper's Table I)."""

    warmup_epochs: float = 1.0
    total_epochs: float = 5.0
    alternate_every: float = 1.0
    init_temperature: float = 1.0
    temperature_decay: float = 0.1
    arch_sampling: dict[float, int] = field(default_factory=lambda: {4.0: 4})
    sample_argmax: bool = False
    batch_size: int = 1024
    update_lrs_every_step: bool = False
    clip_grad_norm: float | None = 100.0
    weights_optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    arch_optimizer: OptimizerSettings = field(
        default_factory=lambda: OptimizerSettings(name="Adam", lr=0.001))
    cost: CostSettings = field(default_factory=CostSettings)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.init_temperature <= 0:
            raise ValueError("init_temperature must be positive")
        if any(n < 1 for n in self.arch_sampling.values()):
            raise ValueError("arch_sampling counts must be at least 1")


@dataclass
class TrainSettings:
    """Training of each sampled architecture."""

    epochs: int = 6
    batch_size: int = 4096
    eval_batch_size: int = 8192
    clip_grad_norm: float | None = 100.0
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")


@dataclass
class RunSettings:
    """One search run: the core's sections plus the domain's own (validated by its type)."""

    plugin: str = "dlrm"
    seed: int = 1
    device: str = "auto"
    search: SearchSettings = field(default_factory=SearchSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    domain: dict[str, Any] = field(default_factory=dict)
