"""Presets are discoverable: `dnas plugins` and `dnas search --help` list each with a line
taken from its file's leading comment."""

import json

import pytest
from click.testing import CliRunner

import dnas_cli.main as cli_main
from dnas_core.plugins.domain import preset_description
from dnas_core.plugins.registry import make_registry

DLRM_PRESETS = ["emb_card", "emb_dim", "joint", "kaggle_emb_card", "kaggle_emb_dim",
                "kaggle_joint", "kaggle_mlp", "mlp", "paper_emb_card", "paper_emb_dim",
                "paper_joint", "paper_mlp"]


@pytest.mark.parametrize("text, expected", [
    ("# Wide layers. Costs more.\nsearch: {}\n", "Wide layers"),
    ("# A search that\n# spans two lines.\n", "A search that spans two lines"),
    ("# Short: with a colon\n#   dnas search --preset x\n", "Short: with a colon"),
    ("# " + "long words " * 8 + ": " + "detail " * 20 + "\n", ("long words " * 8).strip()),
    ("search: {}\n", ""),
])
def test_description_is_the_first_sentence_of_the_leading_comment(tmp_path, text, expected):
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    assert preset_description(path) == expected


@pytest.fixture
def dlrm_cli(monkeypatch):
    from dnas_dlrm import plugin

    monkeypatch.setattr(cli_main, "_registry", make_registry([plugin], entry_points=False))
    for command in (cli_main.search, cli_main.train):
        monkeypatch.setattr(command, "epilog", command.epilog)

    def invoke(*args):
        return CliRunner().invoke(cli_main.cli, list(args))
    return invoke


def test_plugins_lists_presets_with_descriptions(dlrm_cli):
    done = dlrm_cli("plugins")
    assert done.exit_code == 0, done.output
    assert "dlrm presets (--preset NAME):" in done.output
    for name in DLRM_PRESETS:
        assert f"    {name} " in done.output
    assert "The paper's embedding-cardinality search (Table II, VII-B3; the authors' " \
           "defaults)" in done.output
    (dlrm,) = json.loads(dlrm_cli("plugins", "--json").output)
    assert sorted(dlrm["presets"]["dlrm"]) == DLRM_PRESETS
    assert dlrm["presets"]["dlrm"]["mlp"].startswith("FC-of-FC search of the bottom and top")


def test_search_help_lists_the_presets(dlrm_cli):
    cli_main.describe_presets(cli_main.search, cli_main.train)
    for command in ("search", "train"):
        done = dlrm_cli(command, "--help")
        assert done.exit_code == 0
        assert "dlrm presets:" in done.output
        lines = [line.split() for line in done.output.splitlines()]
        assert [w[0] for w in lines if w and w[0] in DLRM_PRESETS] == DLRM_PRESETS
        assert "Embedding-dimension search with the working training defaults" in done.output
