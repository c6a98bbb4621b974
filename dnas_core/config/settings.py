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
class BatchBudget:
    """How ``batch_size: auto`` is resolved (see :mod:`dnas_core.engine.budget`)."""

    steps_per_epoch: int = 100
    min_batch_size: int = 64
    max_batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {self.steps_per_epoch}")
        if not 1 <= self.min_batch_size <= self.max_batch_size:
            raise ValueError(f"need 1 <= min_batch_size <= max_batch_size, got "
                             f"{self.min_batch_size} and {self.max_batch_size}")


Precision = Literal["fp32", "bf16"]


def _check_steps(check_every: int) -> None:
    if check_every < 1:
        raise ValueError(f"check_every must be at least 1, got {check_every}")


def _check_batch(batch_size: int | str) -> None:
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                 or batch_size < 1):
        raise ValueError(f"batch_size must be 'auto' or an integer of at least 1, "
                         f"got {batch_size!r}")


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
    # also train theta's mode (its argmax) at each sampling point, before the draws: while
    # theta is still spread over many decisions (a joint space), independent draws seldom
    # hit its mode, which is often the best model (docs/training.md, "mlp and joint at
    # 100K rows, and the argmax too")
    include_argmax: bool = False
    batch_size: int | Literal["auto"] = "auto"
    batch_budget: BatchBudget = field(default_factory=BatchBudget)
    # "steps": the arch LR is meant for batch_budget.steps_per_epoch architecture steps an
    # epoch and scaled by that over the steps there are, so theta moves as far per epoch on
    # a small data set (few steps) as on a large one; "none": the LR as given
    arch_lr_scaling: Literal["steps", "none"] = "none"
    update_lrs_every_step: bool = False
    clip_grad_norm: float | None = 100.0
    weights_optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    arch_optimizer: OptimizerSettings = field(
        default_factory=lambda: OptimizerSettings(name="Adam", lr=0.001))
    cost: CostSettings = field(default_factory=CostSettings)
    # speed (docs/training.md, "Speed"): bf16 autocast of the forward pass; torch.compile
    # of the supernet's forward; the loss is read on the host (finiteness check, logs)
    # only every check_every steps, so the step itself never waits for the device
    precision: Precision = "fp32"
    compile: bool = False
    check_every: int = 10

    def __post_init__(self) -> None:
        _check_batch(self.batch_size)
        _check_steps(self.check_every)
        if self.init_temperature <= 0:
            raise ValueError("init_temperature must be positive")
        if not self.arch_sampling:
            raise ValueError("arch_sampling must name at least one amount of architecture "
                             "epochs (e.g. {4: 4}), or no architecture is ever sampled")
        if any(n < 1 for n in self.arch_sampling.values()):
            raise ValueError("arch_sampling counts must be at least 1")


@dataclass
class DivergenceSettings:
    """When a trained model counts as diverged, and how often it is retried.

    A model diverged when its loss went non-finite, or its best validation value of the
    primary metric is worse than the constant predictor's (the training targets' mean) by
    more than ``margin``: such a model has learnt nothing usable, and is never reported as
    a result. It is retried up to ``retries`` times, each with every learning rate times
    ``lr_factor``.
    """

    retries: int = 2
    lr_factor: float = 0.1
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must lie in (0, 1), got {self.lr_factor}")


@dataclass
class TrainSettings:
    """Training of each sampled architecture.

    ``patience`` stops training after that many epochs without a better validation value
    (the best epoch is kept either way); ``null`` trains every epoch.
    """

    epochs: int = 6
    batch_size: int | Literal["auto"] = "auto"
    batch_budget: BatchBudget = field(default_factory=BatchBudget)
    eval_batch_size: int = 8192
    clip_grad_norm: float | None = 100.0
    patience: int | None = None
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    divergence: DivergenceSettings = field(default_factory=DivergenceSettings)
    precision: Precision = "fp32"  # as in SearchSettings
    compile: bool = False
    check_every: int = 20

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        _check_batch(self.batch_size)
        _check_steps(self.check_every)
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be at least 1, got {self.eval_batch_size}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be at least 1 or null, got {self.patience}")


@dataclass
class LoaderSettings:
    """How training batches reach the device (see :mod:`dnas_core.engine.loader`).

    ``placement``: ``host`` gathers each batch from the domain's table (memory-mapped
    arrays, say) in a background thread ``prefetch`` batches ahead, pinned for the copy on
    CUDA; ``device`` copies the whole table into device memory once, and a batch is an
    index gather there (on the CPU: the table in memory as tensors); ``auto`` is ``device``
    on a GPU when the table takes at most ``device_fraction`` of its free memory, else
    ``host``. Batches are the same in every mode, bit for bit.
    """

    placement: Literal["auto", "host", "device"] = "auto"
    prefetch: int = 4
    device_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.prefetch < 0:
            raise ValueError(f"prefetch must be at least 0 (0: no background thread), "
                             f"got {self.prefetch}")
        if not 0 < self.device_fraction <= 1:
            raise ValueError(f"device_fraction must lie in (0, 1], got {self.device_fraction}")


@dataclass
class RunSettings:
    """One search run: the core's sections plus the domain's own (validated by its type)."""

    plugin: str = "dlrm"
    seed: int = 1
    device: str = "auto"
    search: SearchSettings = field(default_factory=SearchSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    loader: LoaderSettings = field(default_factory=LoaderSettings)
    domain: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import torch  # here: the settings themselves need no torch

        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise ValueError(f"device must be 'auto' or a torch device such as 'cpu', "
                                 f"'cuda' or 'cuda:1', got {self.device!r}") from None
