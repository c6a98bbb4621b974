"""Past and running experiments as data: what ``dnas show``, ``dnas compare`` and ``dnas runs``
print.

Everything is read from the run directory (``results.jsonl``, ``summary.json``, the trials'
``config.yaml``) and its ``study.db``, never written: a run may still be going, in this
process or on other machines. The functions return plain JSON-ready dictionaries, so the
``--json`` output of the commands is exactly what they compute and the terminal tables are
only a rendering of it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from dnas_core.runner.study import ARCHITECTURES, SUPERNETS, default_storage, owner_is_dead


class RunError(Exception):
    """A path that is not a readable run directory (the message names the path and why)."""


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("study.db", "summary.json"))


def check_run_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such directory")
    if not is_run_dir(run_dir):
        raise RunError(f"{run_dir}: not a run directory (it has no study.db or summary.json)")
    return run_dir


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable: {exc}") from None


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``results.jsonl`` (empty while nothing has trained); a line being
    appended right now (no newline yet) is skipped."""
    path = Path(run_dir) / "results.jsonl"
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(keepends=True), 1):
        if not line.endswith("\n"):
            break
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise RunError(f"{path}:{number}: not a JSON row") from None
    return rows


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "summary.json"
    return _json_file(path) if path.exists() else None


def read_study(run_dir: Path) -> dict[str, Any] | None:
    """The experiment stored in ``study.db`` and its trials per stage (state, number, user
    attributes), or None without a study.db (a run on an external storage)."""
    import optuna

    path = Path(run_dir) / "study.db"
    if not path.exists():
        return None
    try:
        storage = optuna.storages.RDBStorage(default_storage(run_dir))
        studies = {s.study_name: s for s in storage.get_all_studies()}
        if SUPERNETS not in studies:
            raise RunError(f"{path}: no dnas experiment in this storage")
        trials = {name: storage.get_all_trials(studies[name]._study_id, deepcopy=False)
                  for name in (SUPERNETS, ARCHITECTURES) if name in studies}
        experiment = json.loads(studies[SUPERNETS].user_attrs.get("experiment", "{}"))
    except RunError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken or foreign database: one clear line
        raise RunError(f"{path}: unreadable study: {exc}") from None
    return {"experiment": experiment,
            "trials": {name: [{"number": t.number, "state": t.state.name,
                               "attrs": dict(t.user_attrs)} for t in found]
                       for name, found in trials.items()}}


def run_state(study: dict[str, Any] | None, summary: dict[str, Any] | None) -> str:
    """``running`` (a trial waiting or running, claimed by a live worker or one we cannot
    check on another machine), ``stopped`` (trials left but no live worker on this
    machine: resume with ``dnas search`` or ``dnas worker``), ``finished`` (summary.json
    written) or ``failed`` (everything ended but no report)."""
    if study is not None:
        left = [t for trials in study["trials"].values() for t in trials
                if t["state"] in ("WAITING", "RUNNING")]
        if left:
            alive = [t for t in left if t["state"] == "RUNNING"
                     and not owner_is_dead(t["attrs"].get("owner"))]
            return "running" if alive else "stopped"
    return "finished" if summary is not None else "failed"


def trial_counts(study: dict[str, Any] | None) -> dict[str, dict[str, int]]:
    if study is None:
        return {}
    return {name: dict(sorted(Counter(t["state"] for t in trials).items()))
            for name, trials in study["trials"].items()}


def _primary(rows: list[dict[str, Any]], summary: dict[str, Any] | None) -> str:
    if summary and summary.get("primary_metric"):
        return str(summary["primary_metric"])
    return str(next((r["primary_metric"] for r in rows if r.get("primary_metric")),
                    "val_logloss"))


def ranked(rows: list[dict[str, Any]], primary: str) -> list[dict[str, Any]]:
    """The searched architectures that trained, best first by the primary validation
    metric (the rows a report ranks)."""
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r.get("role", "search") == "search"
          and r.get(primary) is not None]
    return sorted(ok, key=lambda r: r[primary])


def _brief(row: dict[str, Any] | None, primary: str) -> dict[str, Any] | None:
    """The numbers a user compares: validation and test metric, cost, size."""
    if row is None:
        return None
    metric = primary.removeprefix("val_")
    keys = ("arch_id", "search_space", primary, f"test_{metric}", f"test_{metric}_se",
            "test_auc", "cost", "params", "trial")
    return {k: row.get(k) for k in keys} | {"costs": row.get("costs") or {},
                                            "hyperparameters": row.get("hyperparameters")}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and all(isinstance(k, str) for k in data):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RunError(f"{path}: unreadable: {exc}") from None


def changed_settings(run_dir: Path, registry: Any) -> list[dict[str, Any]] | None:
    """Settings of the run's first supernet trial that differ from the plugin's defaults
    (its YAML over the core's, no preset or overrides); None when there is no trial
    config yet or the plugin is not installed here."""
    from dnas_core.config.runspec import resolve

    configs = sorted(Path(run_dir).glob("trials/supernet-*/config.yaml")) or \
        sorted(Path(run_dir).glob("trials/*/config.yaml"))
    if not configs or registry is None:
        return None
    used = _flatten(_yaml(configs[0]))
    try:
        defaults = _flatten(resolve(registry, str(used.get("plugin"))).to_dict())
    except Exception:  # noqa: BLE001 - plugin missing or changed: no diff, not an error
        return None
    return [{"key": k, "default": defaults.get(k), "value": used[k]}
            for k in sorted(used) if used[k] != defaults.get(k)]


def pareto(rows: list[dict[str, Any]], primary: str) -> list[dict[str, Any]]:
    """Per search space, the searched architectures no other beats on both cost and the
    primary validation metric, cheapest first."""
    from dnas_core.runner.report import pareto_front

    out = []
    candidates = [r for r in ranked(rows, primary) if r.get("cost") is not None]
    for space in sorted({r["search_space"] for r in candidates}):
        mine = [r for r in candidates if r["search_space"] == space]
        front = pareto_front([(r["cost"], r[primary]) for r in mine])
        out += [_brief(r, primary) for r in sorted((mine[i] for i in front),
                                                   key=lambda r: r["cost"])]
    return [r for r in out if r is not None]


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """As JSON reads it back (number keys become text): ``--json`` output round-trips."""
    return dict(json.loads(json.dumps(data)))


def show(run_dir: Path, registry: Any = None) -> dict[str, Any]:
    """What a user checks first about one run (``dnas show``)."""
    run_dir = check_run_dir(run_dir)
    study, summary, rows = read_study(run_dir), read_summary(run_dir), read_rows(run_dir)
    primary = _primary(rows, summary)
    best = ranked(rows, primary)
    experiment = (study or {}).get("experiment", {})
    failed = [{"stage": name, "trial": t["number"], "error": t["attrs"].get("error")}
              for name, trials in (study or {"trials": {}})["trials"].items() for t in trials
              if t["state"] == "FAIL" and t["attrs"].get("final")]
    return _plain({"run_dir": str(run_dir), "state": run_state(study, summary),
            "experiment": {k: experiment.get(k) for k in
                           ("plugin", "preset", "config", "data_path", "set", "baseline")}
            | {"grids": {stage: (experiment.get(stage) or {}).get("grid", {})
                         for stage in (SUPERNETS, ARCHITECTURES)}},
            "changed_settings": changed_settings(run_dir, registry),
            "trials": trial_counts(study), "failed": failed,
            "primary_metric": primary,
            "rows": dict(sorted(Counter(f"{r.get('role', 'search')}/{r.get('status', 'ok')}"
                                        for r in rows).items())),
            "best": _brief(best[0] if best else None, primary),
            "baselines": (summary or {}).get("baselines", {}),
            "pareto": pareto(rows, primary)})


def _verdicts(baselines: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per space and baseline: the search's margin on test and whether it beats the noise."""
    return {space: {v["baseline"]: {k: v[k] for k in ("margin", "noise", "beats",
                                                      "beyond_noise")}
                    for v in info.get("verdicts", [])}
            for space, info in baselines.items()}


def summarise(run_dir: Path) -> dict[str, Any]:
    """One run's line in ``dnas runs`` and column in ``dnas compare``."""
    run_dir = check_run_dir(run_dir)
    study, summary, rows = read_study(run_dir), read_summary(run_dir), read_rows(run_dir)
    primary = _primary(rows, summary)
    best = ranked(rows, primary)
    experiment = (study or {}).get("experiment", {})
    counts = trial_counts(study)
    return {"run_dir": str(run_dir), "name": run_dir.name,
            "state": run_state(study, summary),
            "plugin": experiment.get("plugin"), "preset": experiment.get("preset"),
            "spaces": sorted({r["search_space"] for r in rows if "search_space" in r}),
            "trials": {name: {"done": sum(n for s, n in c.items()
                                          if s in ("COMPLETE", "FAIL", "PRUNED")),
                              "total": sum(c.values())} for name, c in counts.items()},
            "trained": len(best), "primary_metric": primary,
            "best": _brief(best[0] if best else None, primary),
            "verdicts": _verdicts((summary or {}).get("baselines", {}))}


def compare(run_dirs: list[Path]) -> dict[str, Any]:
    """Several runs side by side (``dnas compare``)."""
    if not run_dirs:
        raise RunError("compare: name at least one run directory")
    return _plain({"runs": [summarise(Path(d)) for d in run_dirs]})


def list_runs(directory: Path) -> dict[str, Any]:
    """The run directories directly inside ``directory`` (``dnas runs``), by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RunError(f"{directory}: no such directory")
    runs = []
    for path in sorted(p for p in directory.iterdir() if is_run_dir(p)):
        try:
            runs.append(summarise(path))
        except RunError as exc:  # one broken directory does not hide the others
            runs.append({"run_dir": str(path), "name": path.name, "state": "unreadable",
                         "error": str(exc)})
    return _plain({"directory": str(directory), "runs": runs})
