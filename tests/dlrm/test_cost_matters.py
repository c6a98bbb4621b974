"""The cost term of the search loss changes what the search picks (issue 9).

The planted searches (``test_planted_search``) show that the data's pull is found; this
file shows the other half of eq. 6: the same cardinality search on the same planted data,
with the cost off, at coef 0.1 and at coef 1.0 on the ``emb_params`` cost. MANY features
(C10, C24, C26) lose their signal under any hashing, so without a cost the search keeps
their full tables; a large enough cost must overrule the data and hash them down, and the
pressure must grow with the coefficient. A search that dropped or mis-signed the cost
term, or ignored ``search.cost.coef``, fails here.

Small and seeded: 20k rows, the planted tests' settings (4 epochs, Adam), MLPs of width
16, one thread; about 3-4 s per search, three searches. Observed, seeds 1 / 2 / 3
(expected fraction sum_c p_c f_c, mean over MANY; expected emb_params under softmax(theta);
emb_params of the argmax architecture):

    cost off   many 0.72 / 0.71 / 0.62   expected 193k / 179k / 233k   argmax 51k / 39k / 145k
    coef 0.1   many 0.41 / 0.47 / 0.36   expected  45k /  49k /  46k   argmax 26k / 27k /  14k
    coef 1.0   many 0.04 / 0.05 / 0.05   expected  36k /  37k /  37k   argmax 4.3k / 4.8k / 4.2k

With the cost off the argmax kept every MANY table full at all three seeds; at coef 1.0 it
hashed every one to at most a tenth of its categories.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dnas_core.config.settings import CostSettings
from dnas_dlrm.data import CriteoArrays, generate
from dnas_dlrm.data.synthetic import MANY
from tests.dlrm.test_planted_search import SEED, run_search
from tests.dlrm.test_planted_search import _expected_flops as expected_cost  # any cost model

ROWS = 20_000
COEFS = (0.0, 0.1, 1.0)  # 0.0: search.cost.form=off


@pytest.fixture(scope="module")
def searches(tmp_path_factory: pytest.TempPathFactory) -> dict[float, dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster than 2 under contention on a shared 2-core box
    try:
        return _run_searches(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _run_searches(tmp_path_factory: pytest.TempPathFactory) -> dict[float, dict]:
    table = CriteoArrays.from_synthetic(generate(ROWS, seed=SEED))
    results = {}
    for coef in COEFS:
        cost = (CostSettings(form="off") if coef == 0
                else CostSettings(form="additive", coef=coef))
        run_dir: Path = tmp_path_factory.mktemp(f"coef{coef:g}")
        net, models, _ = run_search(table, run_dir, "emb_params", cost, search=["emb_card"],
                                    max_rows=None, embedding_dim=16, bottom_mlp=[16],
                                    top_mlp=[16])
        fractions = np.array(net.settings.emb_card_options)
        spec = net.decode(net.sample_choices(argmax=True))
        cards = np.array(table.cardinalities)
        results[coef] = {
            "start": float(fractions.mean()),
            "many": (net.probabilities()["emb_card"] @ fractions)[list(MANY)],
            "expected": expected_cost(net, table, models["emb_params"]),
            "argmax": float(sum(r * d for r, d in zip(spec["hash_sizes"], spec["emb_dims"]))),
            "many_rows": np.array(spec["hash_sizes"])[list(MANY)] / cards[list(MANY)],
        }
    return results


def test_without_cost_the_search_keeps_the_many_category_tables_full(searches):
    off = searches[0.0]
    assert (off["many"] > off["start"]).all() and off["many"].mean() > 0.5, off["many"]
    np.testing.assert_array_equal(off["many_rows"], 1.0)  # argmax: the full tables


def test_a_large_cost_overrules_the_data_and_hashes_them_down(searches):
    off, high = searches[0.0], searches[1.0]
    assert high["many"].max() < 0.5 * high["start"], high["many"]
    assert off["many"].mean() > 5 * high["many"].mean(), (off["many"], high["many"])
    assert (high["many_rows"] <= 0.1).all(), high["many_rows"]
    assert high["expected"] < 0.3 * off["expected"], (high["expected"], off["expected"])
    assert high["argmax"] < 0.2 * off["argmax"], (high["argmax"], off["argmax"])


def test_the_pressure_grows_with_the_coefficient(searches):
    for key in ("expected", "argmax"):
        values = [searches[c][key] for c in COEFS]
        assert values[0] > values[1] > values[2], (key, values)
    many = [float(searches[c]["many"].mean()) for c in COEFS]
    assert many[0] > many[1] > many[2], many
