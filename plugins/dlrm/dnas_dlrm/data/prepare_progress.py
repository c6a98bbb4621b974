"""How far ``dnas dlrm prepare`` is: percent of the input bytes read, rows/s, time left.

The percentage counts the input files' bytes as stored (compressed bytes for gzip, so it
tracks the reading, not the text inflated), which is known before the first line is read.
On a terminal a ``rich`` progress bar on stderr; elsewhere a line every ``every`` seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from dnas_core import format_duration, time_left

State = dict[str, Any]


def progress_line(state: State) -> str:
    """``day_0.gz: 42.1% of input bytes (compressed), 1,234,567 rows, 250,000 rows/s,
    3:21 left``."""
    fraction = state["bytes_read"] / state["bytes_total"] if state["bytes_total"] else 1.0
    elapsed = state["elapsed_s"]
    rate = state["rows"] / max(elapsed, 1e-9)
    kind = " (compressed)" if state.get("gzip") else ""
    return (f"{Path(state['file']).name}: {fraction:.1%} of input bytes{kind}, "
            f"{state['rows']:,} rows, {rate:,.0f} rows/s, "
            f"{format_duration(time_left(elapsed, fraction))} left")


@contextlib.contextmanager
def prepare_progress(quiet: bool, every: float = 5.0,
                     clock: Callable[[], float] = time.monotonic
                     ) -> Iterator[Callable[[State], None] | None]:
    """The ``progress`` callback of :func:`.prepare.prepare` for the command line."""
    if quiet:
        yield None
        return
    console = Console(stderr=True)
    if not console.is_terminal or console.is_dumb_terminal:
        last = [clock() - every]

        def lines(state: State) -> None:
            if clock() - last[0] >= every:
                last[0] = clock()
                console.file.write(progress_line(state) + "\n")
                console.file.flush()

        yield lines
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[text]}"))
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("reading", total=None, text="")

        def draw(state: State) -> None:
            rows_s = state["rows"] / max(state["elapsed_s"], 1e-9)
            fraction = state["bytes_read"] / max(state["bytes_total"], 1)
            left = format_duration(time_left(state["elapsed_s"], fraction))
            bar.update(task, description=Path(state["file"]).name,
                       completed=state["bytes_read"], total=state["bytes_total"],
                       text=f"{state['rows']:,} rows, {rows_s:,.0f} rows/s, {left} left")

        yield draw
