"""The experiment pipeline: stage-1 supernets and stage-2 architectures on the trial pool.

A coordinator claims trials from the two studies whenever a pool slot is free (stage 2
first, so finished supernets' architectures start at once, with no barrier between the
stages), records each outcome in the study and the run directory, and queues a finished
supernet's architectures x their training grid. Every worker, on any machine, runs this
same loop against the shared storage; ``dnas search`` is the one-worker case.

Nothing is lost to a crash or SIGKILL: results live in the storage and in atomically
written files, trial directories are named by parameters so a rerun continues from the
checkpoints of the attempt before, and on start the coordinator recovers the trials that
a dead worker left RUNNING.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from dnas_core.engine.architecture import Architecture
from dnas_core.engine.paths import UnsafeName
from dnas_core.runner import tpe
from dnas_core.runner.comparison import (
    Entry,
    Verdict,
    as_json,
    budget_note,
    compare_space,
    random_mean,
)
from dnas_core.runner.jobs import Job, Outcome
from dnas_core.runner.pool import TrialPool
from dnas_core.runner.report import write_report
from dnas_core.runner.study import ARCHITECTURES, SUPERNETS, Liveness, Studies
from dnas_core.runner.watch import Monitor, Watcher
from dnas_core.runner.worker import result_path, trial_dir

CLAIM_INTERVAL = 1.0


@dataclass
class PoolSettings:
    devices: list[str] | str = "auto"
    jobs_per_device: int = 1
    timeout: float | None = None
    max_oom_retries: int = 2
    liveness: Liveness = Liveness()
    #: ranks per supernet trial: >1 launches it with torchrun on that many devices
    nproc_per_trial: int = 1


class Coordinator:
    """Runs an experiment's trials from one storage until nothing is left to claim.

    ``watcher`` (if any) is told each trial's start and end and, a few times a second,
    where the experiment stands (:mod:`dnas_core.runner.watch`)."""

    def __init__(self, run_dir: Path, studies: Studies, pool: PoolSettings,
                 watcher: Watcher | None = None):
        self.run_dir = Path(run_dir)
        self.studies = studies
        self.pool_settings = pool
        self.monitor = Monitor(watcher, studies)
        self.running: dict[str, tuple[str, FrozenTrial]] = {}
        self._next_beat = 0.0
        self._next_claim = 0.0

    # ----- jobs ----------------------------------------------------------------------------
    def _job(self, name: str, trial: FrozenTrial) -> Job:
        argv = [sys.executable, "-m", "dnas_core.runner.worker", "--storage", self.studies.url,
                "--study", name, "--trial", str(trial.number), "--run-dir", str(self.run_dir)]
        ranks = self.pool_settings.nproc_per_trial
        if ranks > 1 and name == SUPERNETS:  # a distributed search; see engine.distributed
            argv = [sys.executable, "-m", "dnas_core.runner.ranks", "--standalone",
                    "--nproc_per_node", str(ranks), *argv[1:]]  # torchrun + exit codes
        directory = trial_dir(self.run_dir, trial)
        directory.mkdir(parents=True, exist_ok=True)
        return Job(f"{name}/{trial.number}", argv, directory / "log.txt",
                   timeout=self.pool_settings.timeout)

    def next_job(self) -> Job | None:
        """Claim the next trial (architectures first); asked whenever a slot is free.
        After finding nothing, the storage is asked again only a second later."""
        if time.monotonic() < self._next_claim:
            return None
        for name in (ARCHITECTURES, SUPERNETS):
            claimed = self.studies.claim(name)
            if claimed is not None:
                frozen = self.studies.studies[name].get_trials(deepcopy=False)[claimed.number]
                try:
                    job = self._job(name, frozen)
                except UnsafeName as exc:
                    self._refuse(name, frozen, exc)
                    return None
                self.running[job.key] = (name, frozen)
                self.monitor.trial_started(job.key, name, frozen, job.log_path.parent)
                return job
        self._next_claim = time.monotonic() + CLAIM_INTERVAL
        return None

    def on_poll(self) -> None:
        """Between the pool's polls: keep the running trials alive in the storage and
        tell the watcher where things stand."""
        self.heartbeat()
        self.monitor.tick()

    def heartbeat(self) -> None:
        if time.monotonic() < self._next_beat:
            return
        self._next_beat = time.monotonic() + self.studies.liveness.heartbeat / 2
        for _, trial in self.running.values():
            self.studies.heartbeat(trial._trial_id)

    # ----- outcomes ------------------------------------------------------------------------
    def _record(self, name: str, trial: FrozenTrial, result: dict[str, Any]) -> None:
        """Store a finished trial's result: files first, then the study (idempotent)."""
        study = self.studies.studies[name]
        if name == SUPERNETS:
            key = trial.user_attrs["key"]
            for data in result["architectures"]:
                Architecture.from_dict(data).save(self.run_dir / "architectures")
            # per search space: a joint space's cost is normalised, the others' are not
            path = self.run_dir / "units.json"
            units = json.loads(path.read_text()) if path.exists() else {}
            units[result["space"]] = result["units"]
            path.write_text(json.dumps(units, sort_keys=True))
            study.set_user_attr(f"supernet:{key}", {
                k: result.get(k) for k in ("supernet_val", "search_seconds", "entropies",
                                           "constant", "test_row_losses", "test_rows")}
                | {"trial": trial.number})
            self.studies.enqueue_architectures(key, result["architectures"])
            if self.studies.experiment.baselines:
                self._queue_baselines(key, result)
        else:
            study.set_user_attr(f"row:{trial.number}", result["row"])
            with (self.run_dir / "results.jsonl").open("a") as handle:
                handle.write(json.dumps(result["row"], sort_keys=True) + "\n")
            self._tell_tpe(trial, result)
        if result["value"] is None:  # diverged: kept as a row, never as a value to rank
            self.studies.storage.set_trial_user_attr(trial._trial_id, "final", True)
            self.studies.storage.set_trial_user_attr(trial._trial_id, "error", "diverged")
            study.tell(trial.number, state=TrialState.FAIL)
        else:
            study.tell(trial.number, result["value"])

    def _queue_baselines(self, key: str, result: dict[str, Any]) -> None:
        """The reference model and, per black-box baseline, as many architectures as the
        search sampled; :meth:`_top_up` adds those the supernet's training time would buy.
        Random search trains a prefix of the supernet's pool of uniform draws; TPE gets
        as many trials, each asking for its architecture when it starts (:mod:`.tpe`)."""
        kinds = self.studies.experiment.baselines
        pool = result.get("random_pool") or []
        n_first = min(len(pool), len(result["architectures"]))
        budget = {"n_search": n_first, "extra": None, "cap": len(pool),
                  "search_seconds": result.get("search_seconds", 0.0)}
        supernets = self.studies.studies[SUPERNETS]
        first = [result["reference"]] if result.get("reference") else []
        if "random" in kinds:
            first += pool[:n_first]
            supernets.set_user_attr(f"random:{key}", {**budget, "pool": pool})
        if tpe.ROLE in kinds:
            first += tpe.slots(result["space"], key, range(n_first))
            supernets.set_user_attr(tpe.info_key(key), {
                **budget, "space": result["space"], "startup": tpe.startup_trials(n_first),
                "choice_options": result["choice_options"]})
        self._enqueue(key, first)

    def _enqueue(self, key: str, architectures: list[dict[str, Any]]) -> None:
        for data in architectures:
            if "spec" in data:  # a TPE trial's architecture is saved once it has asked
                Architecture.from_dict(data).save(self.run_dir / "architectures")
        self.studies.enqueue_architectures(key, architectures)

    def _top_up(self) -> None:
        """Once a supernet's first architectures are all trained, queue for each baseline
        the architectures its training time would have bought: search seconds / mean
        seconds of one baseline architecture (over its training grid; random and TPE ones
        pooled, so the two get the same number), at most the pool of uniform draws."""
        supernets = self.studies.studies[SUPERNETS]
        pending = {k: v for k, v in supernets.user_attrs.items()
                   if k.startswith(("random:", "tpe:")) and v["extra"] is None}
        if not pending:
            return
        trials = self.studies.trials(ARCHITECTURES)
        rows = self.studies.studies[ARCHITECTURES].user_attrs
        grid = max(1, self.studies.experiment.architectures.trial_count())
        baselines = self.studies.experiment.baselines
        for attr, info in pending.items():
            kind, key = attr.split(":", 1)
            mine = [t for t in trials if t.user_attrs.get("supernet") == key]
            if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in mine):
                continue
            # both baselines' first architectures: random and TPE get the same count
            seconds = [rows[f"row:{t.number}"]["train_seconds"] for t in mine
                       if t.user_attrs.get("role") in baselines and f"row:{t.number}" in rows
                       and rows[f"row:{t.number}"].get("status") == "ok"]
            per_arch = statistics.fmean(seconds) * grid if seconds else 0.0
            wanted = round(info["search_seconds"] / per_arch) if per_arch > 0 else 0
            start = info["n_search"]
            cap = info.get("cap", len(info.get("pool", ())))  # runs from before TPE
            numbers = range(start, start + min(wanted, cap - start))
            chosen = [info["pool"][n] for n in numbers] if kind == "random" else \
                tpe.slots(info["space"], key, numbers)
            supernets.set_user_attr(attr, {**info, "extra": len(numbers), "extra_wanted": wanted,
                                           "seconds_per_arch": per_arch})
            self._enqueue(key, chosen)

    def _tell_tpe(self, trial: FrozenTrial, result: dict[str, Any] | None) -> None:
        """Tell TPE how the architecture it proposed did (no result: it failed)."""
        attrs = self.studies.storage.get_trial(trial._trial_id).user_attrs
        if attrs.get("role") != tpe.ROLE or "tpe_trial" not in attrs:
            return  # not a TPE trial, or one that failed before it asked
        arch = None if result is None else Architecture.from_dict(result["architecture"])
        if arch and not (self.run_dir / "architectures" / f"{arch.arch_id}.json").exists():
            arch.save(self.run_dir / "architectures")  # a searched one keeps its own record
        tpe.tell(self.studies.storage, tpe.study_name(attrs["supernet"],
                                                      self.studies.params(trial)),
                 attrs["tpe_trial"], None if result is None else result["value"])

    def on_done(self, outcome: Outcome) -> None:
        name, trial = self.running.pop(outcome.job.key)
        self._next_claim = 0.0  # a finished supernet may have queued architectures
        study = self.studies.studies[name]
        result = None
        if outcome.status == "ok":
            result = json.loads(result_path(self.run_dir, trial).read_text())
            self._record(name, trial, result)
        elif outcome.status == "pruned":
            study.tell(trial.number, state=TrialState.PRUNED)
        else:
            storage = self.studies.storage
            storage.set_trial_user_attr(trial._trial_id, "final", True)
            storage.set_trial_user_attr(trial._trial_id, "error",
                                        f"{outcome.status}: {outcome.message}"[-2000:])
            study.tell(trial.number, state=TrialState.FAIL)
        if name == ARCHITECTURES and outcome.status != "ok":
            self._tell_tpe(trial, None)
        self.monitor.trial_ended(outcome.job.key, outcome.status, outcome.seconds, result,
                                 outcome.message)
        if name == ARCHITECTURES:
            self._top_up()

    def _refuse(self, name: str, trial: FrozenTrial, exc: UnsafeName) -> None:
        """A trial whose ids in the storage were tampered with fails; nothing runs."""
        self.studies.storage.set_trial_user_attr(trial._trial_id, "final", True)
        self.studies.storage.set_trial_user_attr(trial._trial_id, "error", f"refused: {exc}")
        self.studies.studies[name].tell(trial.number, state=TrialState.FAIL)

    def recover(self) -> None:
        """Finish what a dead worker left RUNNING: record a written result, else rerun."""
        for name, trial in self.studies.orphans():
            try:
                path = result_path(self.run_dir, trial)
            except UnsafeName as exc:
                self._refuse(name, trial, exc)
                continue
            if path.exists():
                self._record(name, trial, json.loads(path.read_text()))
            else:
                self.studies.requeue(name, trial)

    def unfinished(self) -> bool:
        """Trials still waiting or running anywhere (other workers may queue more)."""
        return any(self.studies.trials(name, [TrialState.WAITING, TrialState.RUNNING])
                   for name in (SUPERNETS, ARCHITECTURES))

    def run(self) -> None:
        """Run trials until the whole experiment is finished, by this worker or others."""
        pool = TrialPool(self.pool_settings.devices, self.pool_settings.jobs_per_device,
                         max_oom_retries=self.pool_settings.max_oom_retries,
                         devices_per_trial=self.pool_settings.nproc_per_trial)
        self.monitor.slots = pool.slots
        while True:
            self.recover()
            self._top_up()
            pool.run(on_done=self.on_done, source=self.next_job, on_poll=self.on_poll)
            if not self.unfinished():
                self.monitor.tick(final=True)
                return
            self.monitor.tick()
            time.sleep(CLAIM_INTERVAL)  # another worker's trials are still running
            self._next_claim = 0.0

    # ----- report --------------------------------------------------------------------------
    def failures(self) -> list[dict[str, str]]:
        """The trials that failed for good: which, the line that says why, their log."""
        out = []
        for name in (SUPERNETS, ARCHITECTURES):
            for t in self.studies.trials(name, [TrialState.FAIL]):
                error = t.user_attrs.get("error")
                if not t.user_attrs.get("final") or error == "diverged":
                    continue
                try:
                    log = str(trial_dir(self.run_dir, t).relative_to(self.run_dir) / "log.txt")
                except UnsafeName:
                    log = "-"
                out.append({"trial": f"{name}/{t.number}", "error": error_line(error or ""),
                            "log": log})
        return out

    def report(self) -> dict[str, Any]:
        """Write results.jsonl (from the storage, the source of truth), report.md and
        summary.json. Only the searched architectures that trained are ranked; the
        baselines are compared with them, the diverged ones listed apart."""
        store = self.studies.studies[ARCHITECTURES].user_attrs
        all_rows = [store[f"row:{t.number}"] for t in self.studies.trials(ARCHITECTURES)
                    if f"row:{t.number}" in store]
        ok = [r for r in all_rows if r.get("status", "ok") == "ok"]
        rows = [r for r in ok if r.get("role", "search") == "search"]
        diverged = [r for r in all_rows if r.get("status") == "diverged"]
        failed = self.failures()
        if not rows:
            first = f"; first: {failed[0]['trial']}: {failed[0]['error']} (log: " \
                    f"{self.run_dir / failed[0]['log']})" if failed else ""
            raise ExperimentFailed(f"no searched architecture finished training "
                                   f"({len(failed)} trials failed, {len(diverged)} diverged)"
                                   f"{first}; see the trial logs under "
                                   f"{self.run_dir / 'trials'}")
        results = self.run_dir / "results.jsonl"
        tmp = results.with_name("results.jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in all_rows))
        tmp.replace(results)
        units_path = self.run_dir / "units.json"
        units = json.loads(units_path.read_text()) if units_path.exists() else {}
        primary = rows[0]["primary_metric"]
        metric = primary.removeprefix("val_")
        supernets = {k.removeprefix("supernet:"): v for k, v in
                     self.studies.studies[SUPERNETS].user_attrs.items()
                     if k.startswith("supernet:")}
        budgets: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for attr, info in self.studies.studies[SUPERNETS].user_attrs.items():
            if attr.startswith(("random:", "tpe:")):
                kind, key = attr.split(":", 1)
                budgets.setdefault(key, []).append((kind, info))
        comparisons: dict[str, tuple[list[Entry], list[Verdict], list[str]]] = {}
        for space in sorted({r["search_space"] for r in rows}):
            mine = [r for r in ok if r["search_space"] == space]
            keys = {r.get("supernet") for r in mine}
            entries, verdicts = compare_space(
                mine, [v for k, v in supernets.items() if k in keys], metric, self.run_dir)
            notes = [budget_note(kind, info) for k in sorted(keys, key=str)
                     for kind, info in sorted(budgets.get(k, []), key=lambda b: b[0])]
            mean = random_mean(mine, metric)
            if mean is not None:
                notes.append(f"Mean test {metric} of the random architectures: {mean:.4f}.")
            comparisons[space] = (entries, verdicts, notes)
        entropies = {f"trial {v['trial']}": v["entropies"] for v in supernets.values()
                     if v.get("entropies")}
        heatmaps = sorted(self.run_dir.glob("trials/supernet-*/heatmaps/*.png"))
        write_report(self.run_dir, f"dnas experiment: {self.studies.experiment.plugin}", rows,
                     primary, units, heatmaps, comparisons=comparisons, entropies=entropies,
                     diverged=diverged, failed=failed)
        best = min(rows, key=lambda r: r[primary])
        summary = {"best_arch_id": best["arch_id"], "primary_metric": primary,
                   primary: best[primary], "cost": best["cost"],
                   "trained_architectures": len(rows),
                   "baseline_architectures": len(ok) - len(rows),
                   "diverged_architectures": len(diverged),
                   "failed_trials": len(failed), "failed": failed,
                   "baselines": {space: as_json(e, v) for space, (e, v, _) in
                                 comparisons.items()}}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        return summary


class ExperimentFailed(RuntimeError):
    """No searched architecture finished: there is nothing to report (the message says
    how many trials failed, the first one's error and where its log is)."""


def error_line(error: str) -> str:
    """A failed trial's error in one line: how it ended and the last line its log holds
    (the exception, for a trial that raised)."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if len(lines) > 1:
        return f"{lines[0]}: {lines[-1]}"[:300]
    return lines[0][:300] if lines else "unknown error"


def run_experiment(run_dir: Path, experiment: Any, pool: PoolSettings,
                   storage: str | None = None, seed: int = 1,
                   watcher: Watcher | None = None) -> dict[str, Any]:
    """Run (or resume) an experiment in ``run_dir`` and write its report.

    The experiment is stored in the study: resuming with a different one is an error
    rather than a silent mix of results.
    """
    from dnas_core.config.validate import ConfigError, describe_differences
    from dnas_core.runner.preflight import make_run_dir
    from dnas_core.runner.study import default_storage

    run_dir = Path(run_dir)
    url = storage or default_storage(run_dir)
    if storage is None:  # the default storage lives in the run directory
        make_run_dir(run_dir)
    studies = Studies(url, experiment, seed=seed, liveness=pool.liveness)
    if studies.experiment.to_json() != experiment.to_json():
        stored, now = json.loads(studies.experiment.to_json()), json.loads(experiment.to_json())
        raise ConfigError(f"{url}: this study was made by another experiment "
                          f"({describe_differences(stored, now)}); use another --out or "
                          f"--storage, or the same settings to resume")
    make_run_dir(run_dir)  # only now for a --storage that cannot be opened or is another's
    coordinator = Coordinator(run_dir, studies, pool, watcher)
    coordinator.run()
    return coordinator.report()
