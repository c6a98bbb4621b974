"""Random DLRM inputs shared by the model tests."""

import torch


def random_inputs(cards: list[int], n_dense: int, batch: int, seed: int = 0):
    """(dense [batch, n_dense], sparse ids [batch, len(cards)]) with each id below its
    own feature's cardinality."""
    gen = torch.Generator().manual_seed(seed)
    dense = torch.rand(batch, n_dense, generator=gen)
    sparse = torch.stack([torch.randint(0, c, (batch,), generator=gen) for c in cards], 1)
    return dense, sparse
