"""The DLRM plugin's models: supernets for every search space, sampled models, costs.

The spec of an architecture (what ``SuperNet.decode`` returns and :func:`build_sampled`
takes) is a JSON-ready mapping that describes the sampled model completely::

    {"emb_dims":   [26 ints],   # width of each feature's table
     "hash_sizes": [26 ints],   # rows of each feature's table; ids looked up at id mod rows
     "bottom_mlp": [n_dense, ..., max(emb_dims)],
     "top_mlp":    [interaction outputs, ..., 1]}

Parts not searched are filled in from the fixed settings. Embeddings narrower than the
widest are zero-padded to it for the dot interaction (the paper's choice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dnas_core.engine.cost import CostModel
from dnas_core.engine.latency import LatencyTable
from dnas_core.engine.supernet import SuperNet
from dnas_dlrm.models import costs
from dnas_dlrm.models.backbone import n_pairs, table_rows
from dnas_dlrm.models.sampled import SampledDlrm
from dnas_dlrm.models.supernet import DlrmSuperNet
from dnas_dlrm.settings import DlrmSettings

EMBEDDING_PARTS = {"emb_dim", "emb_card"}
MLP_PARTS = {"bottom_mlp", "top_mlp"}


def build_supernet(settings: DlrmSettings, cardinalities: list[int], n_dense: int) -> SuperNet:
    """The supernet searching ``settings.search`` (any combination of the four parts)."""
    return DlrmSuperNet(settings, cardinalities, n_dense)


def build_sampled(settings: DlrmSettings, spec: dict[str, Any], cardinalities: list[int],
                  n_dense: int) -> torch.nn.Module:
    """The stand-alone DLRM a spec describes, ready to train from scratch."""
    if len(spec.get("emb_dims", ())) != len(cardinalities):
        raise ValueError(f"spec emb_dims describes {len(spec.get('emb_dims', ()))} sparse "
                         f"features, the data has {len(cardinalities)}")
    return SampledDlrm(spec, n_dense, self_interaction=settings.self_interaction,
                       sparse=settings.sparse_embeddings)


def plain_spec(settings: DlrmSettings, cardinalities: Sequence[int], n_dense: int
               ) -> dict[str, Any]:
    """The spec of the unsearched backbone at the fixed settings (a baseline model)."""
    rows = table_rows(cardinalities, settings.max_rows)
    dim = settings.embedding_dim
    pairs = n_pairs(len(rows), settings.self_interaction)
    return {"emb_dims": [dim] * len(rows), "hash_sizes": rows,
            "bottom_mlp": [n_dense, *settings.bottom_mlp, dim],
            "top_mlp": [dim + pairs, *settings.top_mlp, 1]}


def cost_models(settings: DlrmSettings, cardinalities: list[int],
                supernet: SuperNet) -> list[CostModel]:
    """``emb_params``, ``emb_bytes``, ``mlp_flops``, and ``latency`` when
    ``settings.latency_device`` is set (measured now, cached in
    ``$DNAS_LATENCY_CACHE`` or ``~/.cache/dnas/latency.json``)."""
    if not isinstance(supernet, DlrmSuperNet):
        raise TypeError("cost_models needs the supernet built by build_supernet")
    models: list[CostModel] = [costs.emb_params(supernet), costs.emb_bytes(supernet),
                               costs.mlp_flops(supernet)]
    if settings.latency_device:
        table = LatencyTable(costs.latency_cache_path(), settings.latency_device)
        models.append(costs.latency(supernet, table))
    return models


def default_cost(settings: DlrmSettings) -> str:
    """Embedding parameters when any embedding part is searched, else MLP FLOPs."""
    return "emb_params" if EMBEDDING_PARTS & set(settings.search) else "mlp_flops"


def default_cost_terms(settings: DlrmSettings) -> dict[str, float]:
    """The cost terms of the loss: one cost, or for a search over embedding and MLP parts
    both costs, each normalised by its scale by the core's CombinedCost."""
    searched = set(settings.search)
    if EMBEDDING_PARTS & searched and MLP_PARTS & searched:
        return {"emb_params": 1.0, "mlp_flops": 1.0}
    return {default_cost(settings): 1.0}


__all__ = ["DlrmSuperNet", "SampledDlrm", "build_sampled", "build_supernet", "cost_models",
           "default_cost", "default_cost_terms", "plain_spec"]
