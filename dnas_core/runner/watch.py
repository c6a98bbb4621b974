"""What a coordinator tells whoever watches an experiment: events and snapshots.

The coordinator (``dnas search``, ``dnas worker``) reports each trial it starts and each
outcome as an :class:`Event`, and a few times a second a :class:`Snapshot`: the stages'
counts (from the study, so other workers' trials count too), its own running trials with
the progress their processes wrote (:mod:`dnas_core.runner.progress`), the best validation
value so far and the time left. A :class:`Watcher` renders them; the core has none of its
own (the CLI draws a live view on a terminal, plain lines elsewhere). Watching reads only
files and the storage, so it cannot change a result.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from optuna.trial import FrozenTrial, TrialState

from dnas_core.runner.progress import TrialProgress, read_progress
from dnas_core.runner.study import ARCHITECTURES, SUPERNETS, Studies

EventKind = Literal["started", "finished", "diverged", "failed", "pruned"]

#: seconds between two snapshots, and between two reads of the stages' counts
SNAPSHOT_SECONDS = 0.5
COUNTS_SECONDS = 2.0


def short_id(arch_id: str) -> str:
    """An architecture id as a line shows it: its space and the first hex digits."""
    space, _, digest = arch_id.rpartition("-")
    return f"{space}-{digest[:6]}" if space else arch_id[:8]


@dataclass(frozen=True)
class Event:
    kind: EventKind
    key: str  # "supernets/0"
    title: str  # "supernet search.temperature_decay=0.1", "architecture 1a2b3c4d (search)"
    metric: str = ""  # "val logloss 0.4312"
    seconds: float | None = None
    message: str = ""
    elapsed: float = 0.0  # since the coordinator started


@dataclass(frozen=True)
class StageCounts:
    total: int = 0
    done: int = 0
    running: int = 0
    failed: int = 0
    diverged: int = 0
    pruned: int = 0


@dataclass(frozen=True)
class TrialView:
    key: str
    title: str
    elapsed: float
    progress: TrialProgress | None


@dataclass(frozen=True)
class Snapshot:
    elapsed: float
    stages: dict[str, StageCounts]
    trials: list[TrialView]
    best: str = ""  # "val logloss 0.4312 (architecture 1a2b3c4d, search)"
    left: float | None = None  # seconds until the experiment is done, if it can be told
    final: bool = False  # the last one: nothing is left to run


class Watcher(Protocol):
    def event(self, event: Event) -> None: ...

    def update(self, snapshot: Snapshot) -> None: ...


def title(trial: FrozenTrial, params: dict[str, Any]) -> str:
    """A trial as a person reads it: its stage and what sets it apart."""
    attrs = trial.user_attrs
    if attrs.get("kind") == "arch" and attrs.get("role") == "tpe":
        # its architecture is known only once it has asked TPE (see runner.tpe)
        source = json.loads(attrs.get("arch_json", "{}")).get("source", {})
        text = f"TPE proposal {source.get('slot', '?')}"
    elif attrs.get("kind") == "arch":
        arch = short_id(str(attrs.get("arch_id", "?")))
        text = f"architecture {arch} ({attrs.get('role', 'search')})"
    else:
        text = "supernet"
    shown = " ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{text} {shown}" if shown else text


def metric_text(name: str, value: float) -> str:
    """``val_logloss`` 0.43 -> ``val logloss 0.4300``."""
    return f"{name.replace('_', ' ')} {value:.4f}"


def _value_name(result: dict[str, Any]) -> str:
    """The name of a trial result's ``value``: an architecture row's primary metric, or the
    supernet's validation metric that equals it."""
    row = result.get("row")
    if row is not None:
        return str(row["primary_metric"])
    names = [k for k, v in (result.get("supernet_val") or {}).items() if v == result["value"]]
    return f"supernet val_{names[0]}" if names else "supernet val value"


def stage_counts(trials: list[FrozenTrial]) -> StageCounts:
    def failed(t: FrozenTrial, diverged: bool) -> bool:
        return t.state == TrialState.FAIL and bool(t.user_attrs.get("final")) and \
            (t.user_attrs.get("error") == "diverged") == diverged

    return StageCounts(total=len(trials),
                       done=sum(t.state == TrialState.COMPLETE for t in trials),
                       running=sum(t.state == TrialState.RUNNING for t in trials),
                       failed=sum(failed(t, False) for t in trials),
                       diverged=sum(failed(t, True) for t in trials),
                       pruned=sum(t.state == TrialState.PRUNED for t in trials))


def experiment_left(running_left: list[float | None], waiting: dict[str, float],
                    mean_seconds: dict[str, float | None], slots: int) -> float | None:
    """Seconds until the experiment ends: the running trials' time left, plus the trials
    still to run (``waiting`` per stage, expected ones included) at their stage's mean
    duration, shared over ``slots``; never less than the longest running trial. ``None``
    when a needed number is unknown."""
    if any(left is None for left in running_left):
        return None
    known = [left for left in running_left if left is not None]
    queued = 0.0
    for stage, count in waiting.items():
        if count <= 0:
            continue
        mean = mean_seconds.get(stage)
        if mean is None:
            return None
        queued += count * mean
    return max(max(known, default=0.0), (sum(known) + queued) / max(1, slots))


@dataclass
class _Running:
    name: str
    trial: FrozenTrial
    directory: Path
    title: str
    started: float


class Monitor:
    """The coordinator's side of watching: it is told what starts and ends, and builds
    snapshots at most every :data:`SNAPSHOT_SECONDS` (the storage is asked for counts at
    most every :data:`COUNTS_SECONDS`). With no watcher it does nothing."""

    def __init__(self, watcher: Watcher | None, studies: Studies, slots: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.watcher = watcher
        self.studies = studies
        self.slots = slots
        self.clock = clock
        self.started = clock()
        self._running: dict[str, _Running] = {}
        self._seconds: dict[str, list[float]] = {}  # durations of finished trials, by stage
        self._next_snapshot = self._next_counts = 0.0
        self._counts: dict[str, StageCounts] = {}
        self._expected: float | None = 0.0  # architectures not queued yet (None: unknown)
        self._best = ""

    def _event(self, kind: EventKind, key: str, text: str, metric: str = "",
               seconds: float | None = None, message: str = "") -> None:
        assert self.watcher is not None
        self.watcher.event(Event(kind, key, text, metric, seconds, message,
                                 self.clock() - self.started))

    def trial_started(self, key: str, name: str, trial: FrozenTrial, directory: Path) -> None:
        if self.watcher is None:
            return
        text = title(trial, self.studies.params(trial))
        self._running[key] = _Running(name, trial, directory, text, self.clock())
        self._event("started", key, text)
        self._next_counts = 0.0

    def trial_ended(self, key: str, status: str, seconds: float, result: dict[str, Any] | None,
                    message: str = "") -> None:
        if self.watcher is None or key not in self._running:
            return
        running = self._running.pop(key)
        self._next_counts = self._next_snapshot = 0.0
        kind: EventKind = "finished" if status == "ok" else \
            "pruned" if status == "pruned" else "failed"
        metric = ""
        if kind == "finished" and result is not None:
            if result.get("value") is None:
                kind = "diverged"
            else:
                self._seconds.setdefault(running.name, []).append(seconds)
                metric = metric_text(_value_name(result), float(result["value"]))
            if "architecture" in result:  # what a TPE trial was proposed
                metric = f"architecture {short_id(result['architecture']['arch_id'])}" + \
                    (f": {metric}" if metric else "")
        lines = message.strip().splitlines()
        note = f"{status}: {lines[-1]}" if kind == "failed" and lines else status
        self._event(kind, key, running.title, metric, seconds,
                    note if kind == "failed" else "")

    def tick(self, final: bool = False) -> None:
        """Build and hand over a snapshot if one is due (``final``: the last, now)."""
        if self.watcher is None or (self.clock() < self._next_snapshot and not final):
            return
        now = self.clock()
        self._next_snapshot = now + SNAPSHOT_SECONDS
        if now >= self._next_counts or final:
            self._next_counts = now + COUNTS_SECONDS
            try:
                self._read_study()
            except Exception:  # noqa: BLE001 - a busy storage: the last counts stand
                pass
        views = [TrialView(key, r.title, now - r.started, read_progress(r.directory))
                 for key, r in self._running.items()]
        self.watcher.update(Snapshot(now - self.started, dict(self._counts), views,
                                     self._best, self._left(views), final))

    def _read_study(self) -> None:
        trials = {name: self.studies.trials(name) for name in (SUPERNETS, ARCHITECTURES)}
        self._counts = {name: stage_counts(found) for name, found in trials.items()}
        rows = [v for k, v in self.studies.studies[ARCHITECTURES].user_attrs.items()
                if k.startswith("row:") and v.get("status", "ok") == "ok"]
        if rows:
            best = min(rows, key=lambda r: r[r["primary_metric"]])
            self._best = (f"{metric_text(best['primary_metric'], best[best['primary_metric']])}"
                          f" (architecture {short_id(best['arch_id'])}, "
                          f"{best.get('role', 'search')})")
        supernets = self._counts[SUPERNETS]
        finished = supernets.done
        per_supernet = (self._counts[ARCHITECTURES].total / finished) if finished else None
        unfinished = supernets.total - finished - supernets.failed - supernets.diverged
        self._expected = (unfinished * per_supernet if per_supernet is not None
                          else None if unfinished else 0.0)

    def _left(self, views: list[TrialView]) -> float | None:
        """The experiment's time left; unknown until a supernet has finished (before, how
        many architectures it queues is not known)."""
        if self._expected is None:
            return None
        stage_of = {key: r.name for key, r in self._running.items()}
        mean: dict[str, float | None] = {}
        for name in (SUPERNETS, ARCHITECTURES):
            seconds = self._seconds.get(name) or [
                v.elapsed + v.progress.left for v in views if stage_of[v.key] == name
                and v.progress is not None and v.progress.left is not None]
            mean[name] = statistics.fmean(seconds) if seconds else None
        waiting = {name: float(c.total - c.done - c.running - c.failed - c.diverged - c.pruned)
                   for name, c in self._counts.items()}
        waiting[ARCHITECTURES] = waiting.get(ARCHITECTURES, 0.0) + self._expected
        running: list[float | None] = []
        for view in views:
            left = view.progress.left if view.progress is not None else None
            stage_mean = mean[stage_of[view.key]]
            if left is None and stage_mean is not None:
                left = max(0.0, stage_mean - view.elapsed)
            running.append(left)
        return experiment_left(running, waiting, mean, self.slots)
