"""The core's loader over memory-mapped Criteo arrays (issue 11 item 1): prefetched and
device-resident batches equal the synchronous gather's, dtypes included."""

from __future__ import annotations

import numpy as np
import torch

from dnas_core.config.settings import LoaderSettings
from dnas_core.engine.data import BatchSource
from dnas_core.engine.loader import Loader
from dnas_dlrm.data import CriteoArrays, generate


def mapped_table(tmp_path) -> CriteoArrays:
    data = generate(3000, seed=4)
    arrays = {"dense": data.dense, "sparse": data.sparse.astype(np.int32), "labels": data.labels}
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
    loaded = {name: np.load(tmp_path / f"{name}.npy", mmap_mode="r") for name in arrays}
    return CriteoArrays(loaded["dense"], loaded["sparse"], loaded["labels"], data.cardinalities)


def test_prefetched_and_resident_criteo_batches_equal_the_mapped_gather(tmp_path):
    table = mapped_table(tmp_path)
    assert isinstance(table.sparse, np.memmap)
    rows = table.splits()["weights"]
    plain = BatchSource(table, rows, 256, seed=3, name="weights")
    indices = range(len(plain) // 2, 3 * len(plain))  # from mid-epoch 0 through epoch 2
    for settings in (LoaderSettings(placement="host", prefetch=2),
                     LoaderSettings(placement="device")):
        loader = Loader(table, settings, torch.device("cpu"))
        source = loader.source(rows, 256, seed=3, name="weights")
        for index, ((dense, sparse), labels) in zip(indices, loader.stream(source, indices),
                                                    strict=True):
            (d, s), y = plain.batch(index)
            assert dense.dtype == torch.float32 and sparse.dtype == torch.int64
            assert torch.equal(dense, d) and torch.equal(sparse, s) and torch.equal(labels, y)
