"""The DLRM space's reference model, duplicate hash sizes as one option, and
``dnas train`` on a given architecture."""

import json
import os
import subprocess
import sys

import pytest
import torch

from dnas_dlrm.models import build_supernet, plain_spec
from dnas_dlrm.settings import DlrmSettings

CARDS = [3, 10, 100, 1000, 50_000] + [20] * 21


@pytest.mark.parametrize("search", [["emb_dim"], ["emb_card"], ["bottom_mlp", "top_mlp"],
                                    ["emb_dim", "emb_card", "bottom_mlp", "top_mlp"]])
def test_reference_is_the_hand_sized_model(search):
    settings = DlrmSettings(search=search, max_rows=None, embedding_dim=16,
                            emb_dim_options=[8, 16, 32], bottom_mlp=[256, 128],
                            top_mlp=[128], mlp_size_options=[128, 256, 512],
                            mlp_max_layers=4)
    supernet = build_supernet(settings, CARDS, 13)
    spec = supernet.decode(supernet.reference_choices())
    assert spec == plain_spec(settings, CARDS, 13)


def test_reference_is_none_when_the_mlp_space_cannot_express_it():
    settings = DlrmSettings(search=["bottom_mlp"], bottom_mlp=[300], mlp_size_options=[128])
    assert build_supernet(settings, CARDS, 13).reference_choices() is None


def test_fractions_giving_one_table_size_are_one_option():
    settings = DlrmSettings(search=["emb_card"], max_rows=None,
                            emb_card_options=[1.0, 0.1, 0.01, 0.001])
    supernet = build_supernet(settings, CARDS, 13)
    decision = supernet.emb_card
    # 10 values: 10 rows, then 1 row three times -> two options, not four
    assert supernet.row_options[1] == [10, 1, 1, 1]
    assert decision.allowed()[1].tolist() == [True, True, False, False]
    assert decision.allowed()[4].tolist() == [True] * 4
    probs = decision.probabilities()
    assert probs[1].tolist() == pytest.approx([0.5, 0.5, 0.0, 0.0])
    assert probs[4].tolist() == pytest.approx([0.25] * 4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        for choices in (supernet.uniform_choices(generator),
                        supernet.sample_choices(generator)):
            assert all(decision.allowed()[j, c] for j, c in enumerate(choices["emb_card"]))
    supernet.sample_soft(1.0, generator)
    weights = decision.mix_weights(64)
    assert float(weights[:, 1, 2:].detach().abs().max()) == 0.0
    assert torch.allclose(weights.sum(-1), torch.ones(64, 26))
    # the masked options get no gradient, so theta cannot drift there
    weights[:, 1, 0].sum().backward()
    assert float(decision.theta.grad[1, 2:].abs().max()) == 0.0


def test_entropy_shows_whether_theta_moved():
    supernet = build_supernet(DlrmSettings(search=["emb_card"], max_rows=None), CARDS, 13)
    assert all(v == pytest.approx(1.0) for v in supernet.entropies()["emb_card"])
    with torch.no_grad():
        supernet.emb_card.theta[4] = torch.tensor([5.0, 0.0, 0.0, 0.0])
    entropy = supernet.entropies()["emb_card"]
    assert entropy[4] < 0.2 and entropy[3] == pytest.approx(1.0)
    assert entropy[0] == 0.0 or entropy[0] == pytest.approx(1.0)  # 3 values: 2 options


def _dnas(*args):
    env = dict(os.environ, DNAS_PLUGINS="dlrm")
    return subprocess.run([sys.executable, "-m", "dnas_cli.main", *args], capture_output=True,
                          text=True, env=env, check=False)


TINY = ["domain.data.synthetic_rows=6000", "domain.max_rows=200", "train.epochs=3"]


def test_train_one_given_spec(tmp_path):
    settings = DlrmSettings(max_rows=200, bottom_mlp=[32], top_mlp=[32], embedding_dim=8)
    from dnas_dlrm.data import generate

    cards = generate(10, seed=1).cardinalities
    spec_path = tmp_path / "hand.json"
    spec_path.write_text(json.dumps(plain_spec(settings, cards, 13)))
    args = ["train", "--plugin", "dlrm", "--arch", str(spec_path), "--out", str(tmp_path / "t")]
    for item in TINY:
        args += ["--set", item]
    done = _dnas(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout)
    assert row["status"] == "ok" and row["role"] == "given"
    assert 0.3 < row["test_logloss"] < 0.7 and row["test_logloss_se"] > 0
    assert row == {k: v for k, v in json.loads((tmp_path / "t" / "result.json").read_text())
                   .items() if k != "history"}


def test_train_rejects_a_file_that_is_no_architecture(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    done = _dnas("train", "--plugin", "dlrm", "--arch", str(bad), "--out", str(tmp_path / "t"))
    assert done.returncode == 1
    assert f"{bad}: not a readable JSON file" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "t").exists()
