"""TensorBoard logging and the architecture-distribution heatmaps (paper Fig. 9, 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def heatmap_figure(matrix: np.ndarray, rows: list[str], cols: list[str], title: str) -> Figure:
    """softmax(theta) per row, one column per option, with a colour scale."""
    matrix = np.atleast_2d(matrix)
    height = max(2.5, 0.25 * len(rows) + 1.2)
    fig = Figure(figsize=(max(4.0, 0.7 * len(cols) + 2.5), height))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows, fontsize=7 if len(rows) > 20 else 9)
    ax.set_xlabel("option")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="probability")
    fig.tight_layout()
    return fig


def save_heatmap(path: Path, matrix: np.ndarray, rows: list[str], cols: list[str],
                 title: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    heatmap_figure(matrix, rows, cols, title).savefig(path, dpi=110)
    return path


class RunLogger:
    """A thin TensorBoard writer; ``None`` directory means logging is off."""

    def __init__(self, log_dir: Path | None):
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(log_dir))

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}{name}", value, step)

    def heatmaps(self, step: int, maps: dict[str, tuple[np.ndarray, list[str], list[str]]]) -> None:
        if self.writer is None:
            return
        for name, (matrix, rows, cols) in maps.items():
            self.writer.add_figure(f"architecture/{name}",
                                   heatmap_figure(matrix, rows, cols, name), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
