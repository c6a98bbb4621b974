"""A sampled DLRM: the plain backbone built at exactly the shapes a spec names.

Each feature gets its own width and hash size. The dot interaction needs equal widths, so
every embedding is zero-padded to the widest table of THIS model (the paper's choice,
VI-C2), and the bottom MLP ends at that width. Nothing assumes that some feature drew the
largest option of the search (defect 5). The tables hold exactly
``sum(hash_sizes[j] * emb_dims[j])`` parameters, the number the search's cost counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from dnas_dlrm.models.backbone import DotInteraction, EmbeddingTables, Mlp, dlrm_forward


def check_spec(spec: Mapping[str, Any], n_sparse: int, n_dense: int,
               self_interaction: bool) -> None:
    """Refuse an inconsistent spec with a message naming the field (not a shape error later)."""
    missing = {"emb_dims", "hash_sizes", "bottom_mlp", "top_mlp"} - set(spec)
    if missing:
        raise ValueError(f"architecture spec lacks {sorted(missing)}")
    for key in ("emb_dims", "hash_sizes"):
        values = spec[key]
        if len(values) != n_sparse or any(int(v) < 1 for v in values):
            raise ValueError(f"spec {key} must hold {n_sparse} positive integers, got {values}")
    width = max(int(d) for d in spec["emb_dims"])
    bottom, top = list(spec["bottom_mlp"]), list(spec["top_mlp"])
    if len(bottom) < 2 or bottom[0] != n_dense or bottom[-1] != width:
        raise ValueError(f"spec bottom_mlp must run from {n_dense} dense inputs to the widest "
                         f"embedding ({width}), got {bottom}")
    expected_in = DotInteraction(n_sparse + 1, self_interaction).output_size(width)
    if len(top) < 2 or top[0] != expected_in or top[-1] != 1:
        raise ValueError(f"spec top_mlp must run from the interaction's {expected_in} outputs "
                         f"to 1, got {top}")


class SampledDlrm(nn.Module):
    """The DLRM a spec describes; ``forward((dense, sparse))`` -> probabilities (batch,)."""

    def __init__(self, spec: Mapping[str, Any], n_dense: int, *, self_interaction: bool,
                 sparse: bool):
        super().__init__()
        n_sparse = len(spec["emb_dims"])
        check_spec(spec, n_sparse, n_dense, self_interaction)
        self.spec = {k: list(v) if isinstance(v, Sequence) else v for k, v in spec.items()}
        self.embeddings = EmbeddingTables(spec["hash_sizes"], spec["emb_dims"], sparse)
        self.bottom_mlp = Mlp(spec["bottom_mlp"], final_relu=True)
        self.interaction = DotInteraction(n_sparse + 1, self_interaction)
        self.top_mlp = Mlp(spec["top_mlp"], final_relu=False)
        self.sparse_groups = {"embeddings"} if sparse else set()

    def forward(self, inputs: tuple[Tensor, Tensor]) -> Tensor:
        return dlrm_forward(self.bottom_mlp, self.embeddings, self.interaction, self.top_mlp,
                            inputs)

    def weight_param_groups(self) -> dict[str, list[nn.Parameter]]:
        tables = list(self.embeddings.parameters())
        table_ids = {id(p) for p in tables}
        return {"embeddings": tables,
                "dense": [p for p in self.parameters() if id(p) not in table_ids]}

    def embedding_parameters(self) -> int:
        return sum(p.numel() for p in self.embeddings.parameters())
