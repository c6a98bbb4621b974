"""End-to-end: each DLRM search, run by the core's SearchManager on the planted synthetic
data (``dnas_dlrm.data.synthetic``), moves toward the structure planted in it.

Small and seeded (60k rows, 4 epochs, small MLPs, one thread) so the file runs in 60-85 s
on 2 shared CPU cores. Settings shared by the three searches, found by trial (seeds 1-3):
weights trained with dense Adam (lr 0.01; plain SGD at lr 1.0 did not learn the rich
interaction at this size and the rich features' dimensions fell), architecture Adam lr 0.1,
batch 512, warm-up 1 epoch, then alternating weight/arch epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dnas_core.config.settings import (
    CostSettings,
    GroupSchedule,
    OptimizerSettings,
    SearchSettings,
)
from dnas_core.engine.data import DataBundle
from dnas_core.engine.search import SearchManager
from dnas_core.engine.tasks import BinaryClassification
from dnas_dlrm.data import NUM_DENSE, CriteoArrays, generate
from dnas_dlrm.data.synthetic import FEW_GROUPS, MANY, NOISE, RICH, WEAK
from dnas_dlrm.models import build_supernet, cost_models, tbe
from dnas_dlrm.settings import DlrmSettings

ROWS = 60_000
SEED = 1
EPOCHS = 4


@pytest.fixture(scope="module")
def table():
    return CriteoArrays.from_synthetic(generate(ROWS, seed=SEED))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster than 2 under contention on a shared 2-core box
    yield
    torch.set_num_threads(threads)


def run_search(table, run_dir: Path, cost: str, cost_settings: CostSettings,
               weights_optimizer: OptimizerSettings | None = None, **domain):
    torch.manual_seed(SEED)
    settings = DlrmSettings(bottom_mlp=domain.pop("bottom_mlp", [64]),
                            top_mlp=domain.pop("top_mlp", [64]), sparse_embeddings=False,
                            **domain)
    cards = list(table.cardinalities)
    net = build_supernet(settings, cards, NUM_DENSE)
    models = {m.name: m for m in cost_models(settings, cards, net)}
    search = SearchSettings(
        warmup_epochs=1, total_epochs=EPOCHS, alternate_every=1,
        arch_sampling={float(EPOCHS - 1): 1}, batch_size=512,
        weights_optimizer=weights_optimizer or OptimizerSettings("Adam", lr=0.01,
                                                                 lr_decay=0.9),
        arch_optimizer=OptimizerSettings("Adam", lr=0.1), cost=cost_settings)
    manager = SearchManager(net, DataBundle(table, table.splits(), table.info()),
                            BinaryClassification(), models[cost], models, search,
                            domain="dlrm", space=settings.space, seed=SEED,
                            device=torch.device("cpu"), run_dir=run_dir)
    architectures = manager.run()
    return net, models, architectures


def test_emb_dim_search_widens_rich_features_and_narrows_noise(table, tmp_path):
    """Issue 2. RICH features (C1, C2, C5, C8) carry rank-32 pairwise interactions that a dot
    interaction of width d < 32 captures only d/32 of; NOISE features carry nothing. With
    the emb_params cost on, the search should keep the rich features wide and shrink the
    noise features. Start: uniform theta, expected width 49.6 for every feature.

    Observed at these settings (expected width, mean over the group), seeds 1 / 2 / 3:
    rich 50.3 / 44.3 / 70.7, weak 9.8 / 9.8 / 12.7, noise 9.4 / 9.9 / 12.3. Rich and noise
    tables are both tiny (48 vs <= 100 rows of ~100k total under max_rows 1000), so the
    log-total-parameters cost barely separates them: the gap is the data's doing.
    """
    net, _, _ = run_search(table, tmp_path, "emb_params",
                           CostSettings(form="additive", coef=0.003),
                           search=["emb_dim"], max_rows=1000)
    dims = np.array(net.dim_options, dtype=float)
    start = float(np.full(len(dims), 1 / len(dims)) @ dims)
    expected = net.probabilities()["emb_dim"] @ dims
    rich, weak, noise = (float(expected[list(g)].mean()) for g in (RICH, WEAK, NOISE))
    assert rich > 2.5 * noise and rich - noise > 20, (rich, noise, expected.round(1))
    assert rich > 2.5 * weak, (rich, weak)
    assert noise < 0.5 * start, (noise, start)  # the cost shrank what the data does not need


def test_emb_card_search_keeps_many_category_tables_and_hashes_few_category_ones(
        table, tmp_path):
    """Issue 3. MANY features (C10, C24, C26) lose their signal under any hashing (effects
    average to zero within every hash bucket); FEW features (C3, C12, C16, C21) keep it
    exactly under every candidate size while the full table must learn ~20k rows from few
    examples each. Known best: 1.0 for many, 0.001 for few.

    The cost is OFF here on purpose: the few-category tables are the largest (16k-30k rows),
    so any parameter cost would push them down by itself; without it the preference comes
    from the task loss alone. Start: uniform theta, expected fraction 0.278 everywhere.
    Observed in this test (expected fraction sum_c p_c f_c per feature): seed 1 many
    (0.94, 0.66, 0.99), few max 0.020; seed 2 many (0.98, 0.32, 0.97), few max 0.017;
    seed 3 many (0.97, 0.60, 0.98), few max 0.013. C24 (900 rows, hashed to 90 by 0.1) is
    the weakest of the many features, hence min(many) > 5 max(few) rather than a fixed bar.
    (With the cost on at coef 0.003 the picture is the same: many 0.86, few 0.014, seed 1.)
    """
    net, _, _ = run_search(table, tmp_path, "emb_params", CostSettings(form="off"),
                           search=["emb_card"], max_rows=None, embedding_dim=16,
                           embedding_kernel="torch")
    assert_many_kept_and_few_hashed(net)


@pytest.mark.skipif(not tbe.fbgemm_available(), reason="fbgemm_gpu does not import")
def test_emb_card_search_on_fbgemm_tables_finds_the_same(table, tmp_path):
    """The search above with the tables on fbgemm's TBE (domain.embedding_kernel), whose
    optimizer must be SGD or Adagrad: Adagrad at the defaults' 0.05 for the tables.
    Observed, seed 1: many (0.97, 0.74, 0.99), few max 0.026."""
    adagrad = OptimizerSettings("Adam", lr=0.01, lr_decay=0.9, groups={
        "embeddings": GroupSchedule(optimizer="Adagrad", lr=0.05)})
    net, _, _ = run_search(table, tmp_path, "emb_params", CostSettings(form="off"), adagrad,
                           search=["emb_card"], max_rows=None, embedding_dim=16,
                           embedding_kernel="fbgemm")
    assert isinstance(net.embeddings.tables, tbe.TbeEmbeddings)
    assert_many_kept_and_few_hashed(net)


def assert_many_kept_and_few_hashed(net) -> None:
    fractions = np.array(net.settings.emb_card_options)
    start = float(fractions.mean())
    expected = net.probabilities()["emb_card"] @ fractions
    many, few = expected[list(MANY)], expected[list(FEW_GROUPS)]
    assert many.mean() > 0.5 and few.max() < 0.05, (many, few)
    assert many.mean() > 20 * few.mean(), (many, few)
    assert (few < start).all() and many.min() > 5 * few.max(), (many, few, start)


def _expected_flops(net, table, model) -> float:
    net.sample_expected()
    with torch.no_grad():
        inputs, _ = table.gather(np.arange(2))
        net(inputs)
    return float(model.expected(net)[0])


def test_mlp_search_moves_to_the_small_shallow_mlp(table, tmp_path):
    """Issue 3. The dense part of the planted logit is a sum of 8 ReLU ridges: one hidden
    layer of width >= 8 represents it exactly, so the known best is the smallest width on
    offer and the fewest layers (more gains nothing). Here the FC-of-FC options are
    {16, 64, 256} with at most 3 layers (the paper's {128..1024} x 5 is too slow for a
    unit test; 16 >= 8 keeps the planted function representable by the smallest choice).

    Assertions: the expected MLP FLOPs under softmax(theta) fall to well under half of the
    uniform start; the argmax architecture is cheaper than the uniform expectation; and the
    argmax TOP MLP is exactly the planted choice, one hidden layer of the smallest width
    ([367, 16, 1]).
    Observed, seeds 1 / 2 / 3: expected FLOPs 126560 -> 29637 / 22030 / 26849 (ratio 0.23 /
    0.17 / 0.21); argmax top [367, 16, 1] every time; argmax bottom [13, 16, 256, 16] /
    [13, 256, 16, 16] / [13, 256, 16, 16]: the bottom MLP keeps one wide extra layer, so it
    is not asserted. With the cost OFF (seed 1) the ratio was also 0.23: the task loss alone
    prefers the small MLP at this size, so this checks that nothing in the search (cost
    sign, path probabilities, skips) fights the planted optimum rather than separating the
    data's pull from the cost's.
    """
    net, models, architectures = run_search(
        table, tmp_path, "mlp_flops", CostSettings(form="additive", coef=0.01),
        search=["bottom_mlp", "top_mlp"], max_rows=1000, embedding_dim=16,
        mlp_size_options=[16, 64, 256], mlp_max_layers=3)
    flops = models["mlp_flops"]
    after = _expected_flops(net, table, flops)
    trained = [d.theta.detach().clone() for d in net.decisions().values()]
    with torch.no_grad():
        for decision in net.decisions().values():
            decision.theta.zero_()
    start = _expected_flops(net, table, flops)
    with torch.no_grad():
        for decision, theta in zip(net.decisions().values(), trained):
            decision.theta.copy_(theta)
    spec = net.decode(net.sample_choices(argmax=True))
    argmax_flops = flops.layers_cost(spec["bottom_mlp"]) + flops.layers_cost(spec["top_mlp"])
    print(f"expected FLOPs {start:.0f} -> {after:.0f}; argmax {spec['bottom_mlp']} "
          f"{spec['top_mlp']} {argmax_flops:.0f}; sampled "
          f"{[(a.spec['bottom_mlp'], a.spec['top_mlp']) for a in architectures]}")
    assert after < 0.5 * start, (start, after)
    assert argmax_flops < start, (argmax_flops, start)
    smallest = min(net.settings.mlp_size_options)
    assert spec["top_mlp"] == [spec["top_mlp"][0], smallest, 1], spec["top_mlp"]
