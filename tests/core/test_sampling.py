import pytest
import torch

from dnas_core.engine.sampling import hard_sample, most_likely, soft_sample, weighted_sum
from dnas_core.engine.supernet import Decision


def test_soft_sample_is_per_example_and_normalised():
    theta = torch.zeros(26, 5)
    weights = soft_sample(theta, 64, 1.0, torch.Generator().manual_seed(0))
    assert weights.shape == (64, 26, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(64, 26))
    # fresh noise per example: no two examples share their weights
    assert torch.cdist(weights[:, 0], weights[:, 0]).fill_diagonal_(1).min() > 0


def test_low_temperature_approaches_one_hot_at_softmax_frequencies():
    theta = torch.tensor([0.0, 1.0, 2.0])
    weights = soft_sample(theta, 40_000, 0.01, torch.Generator().manual_seed(1))
    assert float(weights.max(-1).values.mean()) > 0.99
    freq = torch.bincount(weights.argmax(-1), minlength=3).float() / 40_000
    torch.testing.assert_close(freq, torch.softmax(theta, 0), atol=0.01, rtol=0)


def test_hard_sample_frequencies_match_softmax():
    theta = torch.tensor([[0.5, -1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    gen = torch.Generator().manual_seed(3)
    draws = torch.stack([hard_sample(theta, gen) for _ in range(20_000)])
    for row in range(2):
        freq = torch.bincount(draws[:, row], minlength=4).float() / len(draws)
        # 20k draws: binomial standard error <= 0.0036, so 0.015 is over 4 sigma
        torch.testing.assert_close(freq, torch.softmax(theta[row], 0), atol=0.015, rtol=0)


def test_most_likely_is_argmax():
    theta = torch.tensor([[0.1, 0.9, 0.3], [2.0, -1.0, 0.0]])
    assert most_likely(theta).tolist() == [1, 0]


def test_weighted_sum_mixes_per_example():
    a, b = torch.ones(3, 2), torch.full((3, 2), 10.0)
    w = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    torch.testing.assert_close(weighted_sum(w, [a, b]), torch.tensor([[1.0] * 2, [5.5] * 2,
                                                                      [10.0] * 2]))
    with pytest.raises(ValueError):
        weighted_sum(w, [a])


def test_temperature_must_be_positive():
    with pytest.raises(ValueError):
        soft_sample(torch.zeros(2), 1, 0.0)


def test_decision_modes():
    d = Decision(3, groups=2)
    d._state.mode = "expected"
    torch.testing.assert_close(d.mix_weights(4), torch.full((4, 2, 3), 1 / 3))
    assert d.last_weights.shape == (4, 2, 3)
