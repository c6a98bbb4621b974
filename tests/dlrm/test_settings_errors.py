"""The DLRM domain's settings errors name the key at fault and where it was set."""

import pytest

from dnas_core.config.runspec import resolve
from dnas_core.config.validate import ConfigError


@pytest.fixture
def dlrm_registry():
    from dnas_core.plugins.registry import make_registry
    from dnas_dlrm import plugin

    return make_registry([plugin], entry_points=False)


def test_the_emb_card_options_error_blames_that_key(tmp_path, dlrm_registry):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("domain:\n  search: [emb_dim]\n  emb_card_options: [2]\n")
    with pytest.raises(ConfigError) as err:
        resolve(dlrm_registry, "dlrm", config=cfg, overrides=["domain.search=[emb_card]"])
    assert str(err.value) == (f"{cfg} line 3: domain.emb_card_options: must be fractions "
                              f"in (0, 1]")
