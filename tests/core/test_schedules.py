import math

import pytest

from dnas_core.engine.schedules import plan_chunks, temperature


def kinds(chunks):
    return "".join("W" if c.kind == "weights" else "A" for c in chunks)


def test_paper_default_plan():
    chunks = plan_chunks(1, 5, 1, {4: 4})
    assert kinds(chunks) == "WWAWAWAWA"
    assert sum(c.stop - c.start for c in chunks if c.kind == "weights") == 5
    assert sum(c.stop - c.start for c in chunks if c.kind == "arch") == 4
    assert [c.sample_count for c in chunks] == [0] * 8 + [4]


def test_fractional_alternation_covers_every_batch_once():
    chunks = plan_chunks(0.5, 2, 0.25, {1.5: 2})
    assert kinds(chunks) == "W" + "WA" * 6
    batches = 10  # per epoch
    weight_batches = [b for c in chunks if c.kind == "weights" for b in c.batch_range(batches)]
    assert weight_batches == list(range(20))
    arch_batches = [b for c in chunks if c.kind == "arch" for b in c.batch_range(batches)]
    # 1.5 arch epochs of 10 batches: the chunk ranges tile them with no gap or overlap
    assert arch_batches == list(range(15))
    assert [c.stop for c in chunks if c.sample_count] == [1.5]


def test_temperature_decays_exponentially_per_arch_epoch():
    assert temperature(1.0, 0.1, 0) == 1.0
    assert math.isclose(temperature(2.0, 0.2, 3), 2.0 * math.exp(-0.6))
    chunks = plan_chunks(1, 3, 1, {2: 1})
    assert [c.arch_epochs_done for c in chunks] == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("args, message", [
    ((1, 5, 1, {9: 1}), "arch_sampling: key 9"),
    ((6, 5, 1, {}), "warmup_epochs"),
    ((1, 5, 0, {}), "alternate_every"),
    ((1, 0, 1, {}), "total_epochs"),
])
def test_invalid_plans_name_the_setting(args, message):
    with pytest.raises(ValueError, match=message):
        plan_chunks(*args)
