"""The ``domain:`` section of a DLRM run, validated by the core's config loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Part = Literal["bottom_mlp", "top_mlp", "emb_dim", "emb_card"]
EmbeddingKernel = Literal["auto", "torch", "fbgemm"]


@dataclass
class DataSettings:
    """Where rows come from: a directory made by ``dnas dlrm prepare``, or synthetic rows.

    ``synthetic`` picks the generator: ``planted`` (known answers, for tests and demos) or
    ``realistic`` (the difficulty of real click logs, for judging training defaults).
    """

    path: str | None = None
    synthetic_rows: int = 100_000
    synthetic: Literal["planted", "realistic"] = "planted"

    def __post_init__(self) -> None:
        if self.synthetic_rows < 1000:
            raise ValueError(f"synthetic_rows must be at least 1000, got {self.synthetic_rows}")


@dataclass
class DlrmSettings:
    """Backbone shapes and what to search.

    ``search`` lists the parts searched together (one part or any combination; the paper
    searched one group at a time). Parts not searched use the fixed shapes below.
    ``max_rows`` caps every table by hashing ids modulo it (the paper's "20K" tables);
    ``null`` keeps each feature's full cardinality.
    """

    search: list[Part] = field(default_factory=lambda: ["emb_dim"])
    data: DataSettings = field(default_factory=DataSettings)
    embedding_dim: int = 32
    max_rows: int | None = 20_000
    bottom_mlp: list[int] = field(default_factory=lambda: [256, 128])
    top_mlp: list[int] = field(default_factory=lambda: [256, 128])
    self_interaction: bool = False
    sparse_embeddings: bool = True
    emb_dim_options: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    emb_card_options: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.01, 0.001])
    mlp_size_options: list[int] = field(default_factory=lambda: [128, 256, 512, 1024])
    mlp_max_layers: int = 5
    #: FC-of-FC node layers recomputed in the backward pass instead of kept: about a third
    #: less memory for the paper's space at about a third more MLP compute
    mlp_recompute: bool = False
    latency_device: str | None = None
    #: the kernel of the ``emb_card`` candidate tables in a single-process search:
    #: ``fbgemm`` (table-batched embeddings, the table optimizer fused into the backward;
    #: SGD or Adagrad, CPU; docs/training.md), ``torch`` (``embedding_bag`` with sparse
    #: gradients, any sparse-capable optimizer, any device), or ``auto``: fbgemm when
    #: ``fbgemm_gpu`` imports, the search runs on the CPU and the tables' optimizer has a
    #: fused counterpart, else torch
    embedding_kernel: EmbeddingKernel = "auto"

    def __post_init__(self) -> None:
        if not self.search:
            raise ValueError("search must name at least one part")
        if len(set(self.search)) != len(self.search):
            raise ValueError(f"search lists a part twice: {self.search}")
        if any(d < 1 for d in self.emb_dim_options) or not self.emb_dim_options:
            raise ValueError("emb_dim_options must be positive integers")
        if any(not 0 < f <= 1 for f in self.emb_card_options) or not self.emb_card_options:
            raise ValueError("emb_card_options must be fractions in (0, 1]")
        if any(m < 1 for m in self.mlp_size_options) or not self.mlp_size_options:
            raise ValueError("mlp_size_options must be positive integers")
        if self.mlp_max_layers < 1:
            raise ValueError("mlp_max_layers must be at least 1")

    @property
    def space(self) -> str:
        """A stable name for the searched combination, e.g. ``emb_dim`` or ``joint``."""
        parts = sorted(self.search)
        if parts == ["bottom_mlp", "top_mlp"]:
            return "mlp"
        return parts[0] if len(parts) == 1 else "joint"
