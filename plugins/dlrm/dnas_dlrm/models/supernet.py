"""The DLRM supernet: any combination of searched parts, the rest at their fixed shapes.

Parts (``settings.search``): ``emb_dim`` (per-feature width, prefix masks), ``emb_card``
(per-feature hash size), ``bottom_mlp`` and ``top_mlp`` (FC-of-FC). The embedding
decisions live on this module (``emb_dim``, ``emb_card``: one row per feature); each MLP
part is an :class:`FcOfFc` owning its node decisions (``bottom_mlp.layer2``, ...,
``bottom_mlp.output``). All four may be searched at once.

The interaction width is the largest dimension option when ``emb_dim`` is searched, else
``embedding_dim``; the bottom MLP ends at that width and the top MLP starts at the
interaction's output size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dnas_core.config.settings import OptimizerSettings
from dnas_core.config.validate import ConfigError
from dnas_core.engine.supernet import Decision, FusedPart, SuperNet
from dnas_dlrm.models import tbe
from dnas_dlrm.models.backbone import (
    DotInteraction,
    FusedEmbedding,
    Mlp,
    dlrm_forward,
    table_rows,
)
from dnas_dlrm.models.emb_card import HashedEmbeddings
from dnas_dlrm.models.emb_dim import DimMask
from dnas_dlrm.models.fcfc import FcOfFc
from dnas_dlrm.settings import DlrmSettings


def feature_labels(n: int) -> list[str]:
    return [f"C{j + 1}" for j in range(n)]


class SearchedEmbeddings(nn.Module):
    """Tables (plain or hashed candidates) followed by an optional width mask.

    The supernet hands in the option weights its decisions drew; the module itself owns
    no architecture parameters.
    """

    def __init__(self, tables: FusedEmbedding | HashedEmbeddings, mask: DimMask | None):
        super().__init__()
        self.tables: nn.Module = tables  # or what replaces them: fbgemm's, TorchRec's
        self.hashed = isinstance(tables, HashedEmbeddings)  # takes (ids, card weights)
        self.mask = mask
        self.card_weights: Tensor | None = None
        self.dim_weights: Tensor | None = None

    def forward(self, ids: Tensor) -> Tensor:
        if self.hashed:
            vectors = self.tables(ids, self.card_weights)
        else:
            vectors = self.tables(ids)
        if self.mask is not None:
            vectors = self.mask(vectors, self.dim_weights)
        return vectors


class DlrmSuperNet(SuperNet):
    """DLRM with searched parts swapped in; ``forward((dense, sparse))`` -> probabilities."""

    def __init__(self, settings: DlrmSettings, cardinalities: Sequence[int], n_dense: int):
        super().__init__()
        self.settings = settings
        self.n_sparse, self.n_dense = len(cardinalities), int(n_dense)
        self.rows = table_rows(cardinalities, settings.max_rows)
        searched = set(settings.search)
        self.searched = searched
        labels = feature_labels(self.n_sparse)
        sparse = settings.sparse_embeddings
        self.sparse_groups = {"embeddings"} if sparse else set()
        self.sharded_groups = frozenset({"embeddings"})

        self.dim_options = (list(settings.emb_dim_options) if "emb_dim" in searched
                            else [settings.embedding_dim])
        self.width = max(self.dim_options)
        if "emb_card" in searched:
            tables: FusedEmbedding | HashedEmbeddings = HashedEmbeddings(
                self.rows, settings.emb_card_options, self.width, sparse)
            self.row_options = tables.sizes
            self.emb_card = Decision(len(settings.emb_card_options), groups=self.n_sparse,
                                     labels=[f"{f:g}" for f in settings.emb_card_options],
                                     group_labels=labels)
            # fractions that give a feature the same table size are one option, not several
            self.emb_card.restrict(torch.tensor(
                [[size not in sizes[:i] for i, size in enumerate(sizes)]
                 for sizes in self.row_options], device="cpu"))
        else:
            tables = FusedEmbedding(self.rows, self.width, sparse)
            self.row_options = [[r] for r in self.rows]
        mask = None
        if "emb_dim" in searched:
            mask = DimMask(self.dim_options)
            self.emb_dim = Decision(len(self.dim_options), groups=self.n_sparse,
                                    labels=[str(d) for d in self.dim_options],
                                    group_labels=labels)
        self.embeddings = SearchedEmbeddings(tables, mask)

        self.interaction = DotInteraction(self.n_sparse + 1, settings.self_interaction)
        ends = self.mlp_ends(self.width)
        self.bottom_mlp = self._mlp("bottom_mlp", *ends["bottom_mlp"], settings.bottom_mlp,
                                    final_relu=True)
        self.top_mlp = self._mlp("top_mlp", *ends["top_mlp"], settings.top_mlp,
                                 final_relu=False)
        self.last_batch_size: int | None = None

    def _mlp(self, part: str, n_in: int, n_out: int, hidden: Sequence[int],
             final_relu: bool) -> nn.Module:
        if part in self.searched:
            return FcOfFc(n_in, n_out, self.settings.mlp_size_options,
                          self.settings.mlp_max_layers, final_relu,
                          recompute=self.settings.mlp_recompute)
        return Mlp([n_in, *hidden, n_out], final_relu)

    # ----- forward ----------------------------------------------------------------------------
    def forward(self, inputs: tuple[Tensor, Tensor]) -> Tensor:
        batch = inputs[0].shape[0]
        self.last_batch_size = batch
        if "emb_card" in self.searched:
            self.embeddings.card_weights = self.emb_card.mix_weights(batch)
        if "emb_dim" in self.searched:
            self.embeddings.dim_weights = self.emb_dim.mix_weights(batch)
        return dlrm_forward(self.bottom_mlp, self.embeddings, self.interaction, self.top_mlp,
                            inputs)

    def embedding_weights(self) -> tuple[Tensor, Tensor]:
        """Option weights of the last forward: card (b, f, n_card), dim (b, f, n_dim).

        A part not searched has one option of weight 1.
        """
        batch = self.last_batch_size
        if batch is None:
            raise RuntimeError("no forward pass yet")
        ones = torch.ones(batch, self.n_sparse, 1, device=self.interaction.rows.device)
        card = self.emb_card.last_weights if "emb_card" in self.searched else ones
        dim = self.emb_dim.last_weights if "emb_dim" in self.searched else ones
        return card, dim

    def width_options(self) -> list[int]:
        """The widths a sampled model's interaction can have: its widest table's, so the
        distinct ``emb_dim`` options (one width when the dimension is not searched)."""
        return sorted(set(self.dim_options))

    def width_probabilities(self) -> Tensor:
        """(b, len(width_options())): per example, the probability that the widest table
        drawn has each width, under the last forward's ``emb_dim`` weights. Features draw
        independently, so P(widest <= w) is the product over features of P(dim_j <= w).
        One-hot weights (a fixed route) give exactly the sampled model's width."""
        _, dim = self.embedding_weights()
        widths = self.width_options()
        at_most = torch.tensor([[d <= w for w in widths] for d in self.dim_options],
                               dtype=torch.float64, device=dim.device)  # (n_dim, n_width)
        below = (dim.double() @ at_most).prod(dim=1)  # (b, n_width): P(widest <= w)
        return torch.diff(below, dim=1, prepend=torch.zeros_like(below[:, :1]))

    def mlp_ends(self, width: int) -> dict[str, tuple[int, int]]:
        """(inputs, outputs) of the bottom and top MLPs of a sampled model whose widest
        table is ``width``."""
        return {"bottom_mlp": (self.n_dense, width),
                "top_mlp": (self.interaction.output_size(width), 1)}

    def activation_bytes(self, batch_size: int) -> int:
        """Floats a step keeps per example, twice (the backward's transients are about as
        large), in 4-byte floats: the dense input, every looked-up candidate vector (and
        its sparse gradient), the mixed and masked vectors, the interaction, and every FC
        output with its ReLU (an FC-of-FC layer computes all its operators)."""
        n, width = self.n_sparse, self.width
        lookups = n * width * (len(self.row_options[0]) if "emb_card" in self.searched else 1)
        vectors = 2 * lookups + n * width * (1 + ("emb_dim" in self.searched))
        pairs = self.interaction.output_size(width)
        interaction = (n + 1) * width + (n + 1) ** 2 + pairs
        per_example = self.n_dense + vectors + interaction
        for module in (self.bottom_mlp, self.top_mlp):
            if isinstance(module, FcOfFc):  # every operator's output, and each layer's
                outputs = sum(module.sizes)
                kept = 1 if module.recompute else len(module.sizes) + 1
                per_example += (module.n_node_layers * kept * outputs
                                + len(module.sizes) * (outputs + module.n_out))
            else:
                per_example += 2 * sum(module.sizes[1:])
        return 2 * 4 * batch_size * per_example

    # ----- parameter groups -------------------------------------------------------------------
    def weight_param_groups(self) -> dict[str, list[nn.Parameter]]:
        tables = list(self.embeddings.parameters())
        table_ids = {id(p) for p in tables}
        dense = [p for p in self.weight_parameters() if id(p) not in table_ids]
        return {"embeddings": tables, "dense": dense}

    def fuse_optimizer(self, settings: OptimizerSettings, where: str) -> FusedPart | None:
        """The ``emb_card`` candidate tables moved into fbgemm's TBE, their optimizer fused
        into the backward, as ``domain.embedding_kernel`` says (see
        :mod:`dnas_dlrm.models.tbe`); None leaves them to torch and the engine."""
        tables = self.embeddings.tables
        kernel = self.settings.embedding_kernel
        if kernel == "torch" or not isinstance(tables, HashedEmbeddings):
            return None
        required = kernel == "fbgemm"
        problem = None
        if tables.weight.device.type != "cpu":
            problem = f"fbgemm's tables run on the CPU here, this search on {tables.weight.device}"
        elif not tbe.fbgemm_available():
            problem = "fbgemm_gpu does not import; install dnas-dlrm[distributed]"
        if problem is not None:
            if required:
                raise ConfigError(f"domain.embedding_kernel: fbgemm: {problem}; or set "
                                  f"domain.embedding_kernel: torch")
            return None
        try:
            optimizer = tbe.fused_optimizer(settings, where, "fbgemm tables")
        except ConfigError as error:
            if required:
                raise ConfigError(f"{error} (domain.embedding_kernel: fbgemm; torch takes "
                                  f"any sparse-capable optimizer)") from None
            return None
        fused = tbe.TbeEmbeddings(tables.sizes, tables.dim, tables.weight, optimizer)
        self.embeddings.tables = fused
        return tbe.FusedTables(fused)

    # ----- architectures ----------------------------------------------------------------------
    def reference_choices(self) -> dict[str, Any] | None:
        """The hand-sized DLRM the space is built around: every embedding at
        ``embedding_dim`` (the nearest option), full tables, the fixed MLP shapes (None when
        an MLP space cannot express them)."""
        choices: dict[str, Any] = {}
        if "emb_dim" in self.searched:
            target = self.settings.embedding_dim
            best = min(range(len(self.dim_options)),
                       key=lambda i: (abs(self.dim_options[i] - target), i))
            choices["emb_dim"] = [best] * self.n_sparse
        if "emb_card" in self.searched:
            choices["emb_card"] = [max(range(len(sizes)), key=lambda i: (sizes[i], -i))
                                   for sizes in self.row_options]
        for part, hidden in (("bottom_mlp", self.settings.bottom_mlp),
                             ("top_mlp", self.settings.top_mlp)):
            module = getattr(self, part)
            if isinstance(module, FcOfFc):
                layers = module.choices_for(hidden)
                if layers is None:
                    return None
                choices.update({f"{part}.{k}": v for k, v in layers.items()})
        return choices

    def decode(self, choices: Mapping[str, Any]) -> dict[str, Any]:
        """Raw choices -> the spec of the sampled model (see ``dnas_dlrm.models``)."""
        if "emb_dim" in self.searched:
            dims = [self.dim_options[int(c)] for c in choices["emb_dim"]]
        else:
            dims = [self.width] * self.n_sparse
        if "emb_card" in self.searched:
            rows = [self.row_options[j][int(c)] for j, c in enumerate(choices["emb_card"])]
        else:
            rows = list(self.rows)
        ends = self.mlp_ends(max(dims))
        bottom = self._layers(self.bottom_mlp, choices, "bottom_mlp.")
        top = self._layers(self.top_mlp, choices, "top_mlp.")
        # the sampled model pads to its own widest table, not the supernet's widest option
        bottom[-1], top[0] = ends["bottom_mlp"][1], ends["top_mlp"][0]
        return {"emb_dims": dims, "hash_sizes": rows, "bottom_mlp": bottom, "top_mlp": top}

    @staticmethod
    def _layers(part: nn.Module, choices: Mapping[str, Any], prefix: str) -> list[int]:
        if isinstance(part, FcOfFc):
            return part.layers(choices, prefix)
        return list(part.sizes)
