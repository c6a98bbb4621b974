"""``search.compile`` where torch.compile cannot compile the model: torch 2.13 fails on the
sparse backward of ``embedding_bag`` (the emb_card tables on torch's kernel; fbgemm's
tables compile, with graph breaks); the error names the setting instead of ending in an
inductor traceback."""

from __future__ import annotations

import pytest
import torch

from dnas_core.config.settings import SearchSettings
from dnas_core.engine.data import DataBundle
from dnas_core.engine.search import SearchManager
from dnas_core.engine.tasks import BinaryClassification
from dnas_dlrm.data import NUM_DENSE, CriteoArrays, generate
from dnas_dlrm.models import build_supernet, cost_models
from dnas_dlrm.settings import DlrmSettings


@pytest.mark.slow
def test_a_model_torch_compile_cannot_compile_fails_naming_the_setting(tmp_path):
    # about 15 s on 2 shared CPU cores: the compile fails while tracing the backward
    table = CriteoArrays.from_synthetic(generate(2000, seed=1))
    settings = DlrmSettings(search=["emb_card"], embedding_dim=8, max_rows=100,
                            bottom_mlp=[16], top_mlp=[16], embedding_kernel="torch")
    cards = list(table.cardinalities)
    torch.manual_seed(1)
    net = build_supernet(settings, cards, NUM_DENSE)
    models = {m.name: m for m in cost_models(settings, cards, net)}
    manager = SearchManager(net, DataBundle(table, table.splits()), BinaryClassification(),
                            models["emb_params"], models,
                            SearchSettings(batch_size=256, compile=True), domain="dlrm",
                            space="emb_card", seed=1, device=torch.device("cpu"),
                            run_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"^search.compile: torch.compile cannot compile "
                                           r"this model \(.+\); set search.compile: false$"):
        manager.run()
