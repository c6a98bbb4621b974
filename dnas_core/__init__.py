"""dnas: Differentiable Neural Architecture Search with a plugin registry.

The names below are the public API that plugins build on; everything else is internal.
"""

from dnas_core.engine.architecture import Architecture
from dnas_core.engine.cost import CombinedCost, CostLoss, CostModel, DecisionCostTable
from dnas_core.engine.data import SPLITS, BatchSource, DataBundle, Table, TensorTable
from dnas_core.engine.progress import format_duration, time_left
from dnas_core.engine.rowsets import RowFilter, RowRanges
from dnas_core.engine.sampling import hard_sample, most_likely, soft_sample, weighted_sum
from dnas_core.engine.streaming import StreamingSource, batch_source
from dnas_core.engine.supernet import Decision, SuperNet
from dnas_core.engine.tasks import BinaryClassification, MulticlassClassification, Task
from dnas_core.plugins.domain import Domain
from dnas_core.plugins.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "SPLITS", "Architecture", "BatchSource", "BinaryClassification", "CombinedCost",
    "CostLoss", "CostModel", "DataBundle", "Decision", "DecisionCostTable", "Domain",
    "MulticlassClassification", "RowFilter", "RowRanges", "StreamingSource", "SuperNet",
    "Table", "Task", "TensorTable", "batch_source", "format_duration", "hard_sample",
    "hookimpl", "most_likely", "soft_sample", "time_left", "weighted_sum",
]
