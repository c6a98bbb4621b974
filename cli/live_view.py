"""Showing a running experiment: a live view on a terminal, plain lines anywhere else.

The coordinator hands a :class:`~dnas_core.runner.watch.Watcher` events and snapshots;
this module draws them on stderr (stdout keeps the final JSON for scripts). On a terminal
:class:`LiveView` keeps a ``rich`` live table of the stages, the running trials' phases
and progress, elapsed time, time left and the best validation value, with one line per
event printed above it. Without a terminal (CI, ``nohup``, a pipe) :class:`PlainLines`
prints one line per event and a status line every ``status_every`` seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dnas_core.engine.progress import Reporter, Step, format_duration
from dnas_core.runner.study import ARCHITECTURES, SUPERNETS
from dnas_core.runner.watch import Event, Snapshot, TrialView, Watcher


def event_line(event: Event) -> str:
    """``[0:12] trial architectures/3 finished: architecture 1a2b3c4d (search): val
    logloss 0.4312 in 4.0 s``."""
    text = f"[{format_duration(event.elapsed)}] trial {event.key} {event.kind}: {event.title}"
    if event.metric:
        text += f": {event.metric}"
    if event.seconds is not None:
        text += f" in {event.seconds:.1f} s"
    if event.message:
        text += f" ({event.message})"
    return text


def stages_text(snapshot: Snapshot) -> str:
    """``supernets 1/1, architectures 2/7 done; 1 running, 0 failed, 0 diverged``."""
    counts = snapshot.stages
    done = ", ".join(f"{name} {counts[name].done}/{counts[name].total}"
                     for name in (SUPERNETS, ARCHITECTURES) if name in counts)
    running = sum(c.running for c in counts.values())
    failed = sum(c.failed for c in counts.values())
    diverged = sum(c.diverged for c in counts.values())
    return f"{done or 'no trials yet'} done; {running} running, {failed} failed, " \
           f"{diverged} diverged"


def trial_text(view: TrialView) -> str:
    """``architectures/3 train epoch 2/5 40% (3/10 batches)``."""
    progress = view.progress
    if progress is None:
        return f"{view.key} starting"
    text = f"{view.key} {progress.phase} {progress.label}".rstrip()
    if progress.batches:
        text += f" {progress.fraction:.0%} ({progress.batch}/{progress.batches} batches)"
    return text


class PlainLines:
    """One line per event, a status line every ``status_every`` seconds and one at the end."""

    def __init__(self, stream: IO[str], status_every: float) -> None:
        self.stream = stream
        self.status_every = status_every
        self._next_status = status_every

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def event(self, event: Event) -> None:
        self._print(event_line(event))

    def update(self, snapshot: Snapshot) -> None:
        if snapshot.elapsed < self._next_status and not snapshot.final:
            return
        self._next_status = snapshot.elapsed + self.status_every
        parts = [stages_text(snapshot)]
        parts += [trial_text(v) for v in snapshot.trials]
        if snapshot.best:
            parts.append(f"best {snapshot.best}")
        parts.append(f"elapsed {format_duration(snapshot.elapsed)}, "
                     f"left {format_duration(snapshot.left)}")
        self._print(f"[{format_duration(snapshot.elapsed)}] status: " + "; ".join(parts))


def render(snapshot: Snapshot) -> Group:
    """The live view of one snapshot."""
    head = Text(stages_text(snapshot), style="bold")
    head.append(f"   elapsed {format_duration(snapshot.elapsed)}, "
                f"left {format_duration(snapshot.left)}", style="")
    best = Text(f"best {snapshot.best}" if snapshot.best else "best: no architecture yet",
                style="green" if snapshot.best else "dim")
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("trial", "phase", "where", "progress", "batches", "elapsed", "left"):
        table.add_column(column, no_wrap=True)
    for view in snapshot.trials:
        progress = view.progress
        if progress is None:
            table.add_row(f"{view.key} {view.title}", "starting", "", "", "",
                          format_duration(view.elapsed), "?")
            continue
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=1.0, completed=progress.fraction, width=20),
                    f"{progress.fraction:>4.0%}")
        table.add_row(f"{view.key} {view.title}", progress.phase, progress.label,
                      bar if progress.batches else "",
                      f"{progress.batch}/{progress.batches}" if progress.batches else "",
                      format_duration(view.elapsed), format_duration(progress.left))
    return Group(head, best, table)


class LiveView:
    """A ``rich`` live table on a terminal, events printed above it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = Live(Text("starting"), console=console, refresh_per_second=4,
                         transient=False)

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def event(self, event: Event) -> None:
        self.live.console.print(event_line(event), highlight=False, markup=False)

    def update(self, snapshot: Snapshot) -> None:
        self.live.update(render(snapshot))


def on_terminal(console: Console) -> bool:
    return console.is_terminal and not console.is_dumb_terminal


@contextlib.contextmanager
def watching(quiet: bool, status_every: float) -> Iterator[Watcher | None]:
    """The watcher for ``dnas search`` and ``dnas worker``: none with ``--quiet``."""
    if quiet:
        yield None
        return
    console = Console(stderr=True)
    if on_terminal(console):
        with LiveView(console) as view:
            yield view
    else:
        yield PlainLines(console.file, status_every)


@contextlib.contextmanager
def step_bar() -> Iterator[Reporter | None]:
    """A progress bar for one training in this process (``dnas train``), on a terminal."""
    console = Console(stderr=True)
    if not on_terminal(console):
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.completed}/{task.total} batches"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def report(step: Step) -> None:
            bar.update(task, description=f"{step.phase} {step.label}", completed=step.done,
                       total=step.total)

        yield report
