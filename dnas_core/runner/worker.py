"""Runs one trial in its own process (the trial pool starts it from an argument list).

    python -m dnas_core.runner.worker --storage URL --study NAME --trial NUMBER --run-dir DIR

The trial's parameters and the experiment come from the study storage, never from a
command string. The outcome is written as JSON into the trial's directory (atomically,
so a result file is always complete) and signalled by the exit code: see
:mod:`dnas_core.runner.pool` for the codes of out-of-memory, non-finite loss and pruning.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import optuna
import torch

from dnas_core.config.runspec import resolve
from dnas_core.engine.architecture import Architecture
from dnas_core.engine.distributed import DistEnv
from dnas_core.engine.memory import DoesNotFit
from dnas_core.engine.paths import ARCH_ID, PARAMS_KEY, checked, inside
from dnas_core.engine.search import NonFiniteLoss
from dnas_core.plugins.registry import make_registry
from dnas_core.runner import tpe
from dnas_core.runner.jobs import EXIT_NONFINITE, EXIT_OOM, EXIT_PRUNED
from dnas_core.runner.processes import watch_parent
from dnas_core.runner.progress import ProgressWriter
from dnas_core.runner.study import Studies


def trial_dir(run_dir: Path, trial: optuna.trial.FrozenTrial) -> Path:
    """Named by the parameters, not the trial number: a retried trial finds the
    checkpoints of the attempt before it and continues from them."""
    return trial_dir_of(run_dir, trial.user_attrs, trial.number)


def trial_dir_of(run_dir: Path, attrs: dict[str, Any], number: int | None = None) -> Path:
    """:func:`trial_dir` from the trial's user attributes (as ``dnas export`` reads them).

    The ids come from the storage, which others may write: only validated ids name the
    directory, and it must lie inside the run directory (else :class:`UnsafeName`)."""
    where = f"trial {number}" if number is not None else "the trial"
    key = checked(attrs.get("key"), PARAMS_KEY, f"key of {where}")
    if attrs.get("kind") == "arch":
        arch_id = checked(attrs.get("arch_id"), ARCH_ID, f"arch_id of {where}")
        name = f"arch-{arch_id}-{key}"
    else:
        name = f"supernet-{key}"
    return inside(run_dir, run_dir / "trials" / name)


def result_path(run_dir: Path, trial: optuna.trial.FrozenTrial) -> Path:
    return trial_dir(run_dir, trial) / "result.json"


def write_result(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, sort_keys=True))
    os.replace(tmp, path)


def _row_losses(directory: Path, run_dir: Path, built: Any) -> dict[str, Any]:
    """Where the trial left its per-row test losses (relative to the run directory) and
    how many test rows there are, if it left them."""
    from dnas_core.runner.pipeline import ROW_LOSSES

    path = directory / ROW_LOSSES
    if not path.exists():
        return {}
    return {"test_row_losses": str(path.relative_to(run_dir)),
            "test_rows": len(built.data.splits["test"])}


def run_trial(studies: Studies, study_name: str, frozen: optuna.trial.FrozenTrial,
              run_dir: Path) -> dict[str, Any]:
    # imported here: the pipeline imports plugins' heavy dependencies
    from dnas_core.runner.pipeline import (
        architecture_from_choices,
        build_data,
        prepare_run_dir,
        run_search,
        test_architecture,
        train_architecture,
    )

    study = studies.studies[study_name]
    experiment = studies.experiment
    registry = make_registry()
    values = {**experiment.set, **studies.params(frozen)}
    spec = resolve(registry, experiment.plugin,
                   config=Path(experiment.config) if experiment.config else None,
                   preset=experiment.preset, values=values, data_path=experiment.data_path)
    directory = trial_dir(run_dir, frozen)
    if DistEnv.from_environ().writer:  # the other ranks of a distributed trial only read
        prepare_run_dir(spec, directory)
    else:
        directory.mkdir(parents=True, exist_ok=True)
    progress = ProgressWriter(directory)
    progress.phase("data")
    built = build_data(registry, spec)
    if frozen.user_attrs.get("kind") == "supernet":
        outcome = run_search(registry, spec, directory, built, reporter=progress)
        primary = built.task.primary
        return {"value": outcome.val_metrics[primary], **_row_losses(directory, run_dir, built),
                "supernet_val": outcome.val_metrics, "units": outcome.units, "space": spec.space,
                "architectures": [a.to_dict() for a in outcome.architectures],
                "search_seconds": outcome.search_seconds, "entropies": outcome.entropies,
                "constant": outcome.constant,
                "reference": outcome.reference.to_dict() if outcome.reference else None,
                "random_pool": [a.to_dict() for a in outcome.random_pool or []],
                "choice_options": outcome.choice_options}

    asked: dict[str, Any] = {}
    if frozen.user_attrs.get("role") == tpe.ROLE:
        asked = tpe.propose(studies, frozen, spec.settings.seed)
        arch = architecture_from_choices(registry, spec, built, asked.pop("choices"),
                                         {"role": tpe.ROLE, **asked})
    else:
        arch = Architecture.from_dict(json.loads(frozen.user_attrs["arch_json"]))
    trial = optuna.Trial(study, frozen._trial_id)

    def report(epoch: int, metrics: dict[str, float]) -> None:
        trial.report(metrics[built.task.primary], epoch)
        if experiment.architectures.prune and trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    row = train_architecture(registry, spec, arch, directory, built, reporter=progress,
                             on_epoch=report)
    if row["status"] == "ok":
        progress.phase("test")
        row.update({f"test_{k}": v for k, v in
                    test_architecture(registry, spec, arch, directory, built).items()})
        row.update(_row_losses(directory, run_dir, built))
    row.update({"trial": frozen.number, "supernet": frozen.user_attrs.get("supernet"),
                "hyperparameters": studies.params(frozen), **asked})
    # a diverged architecture has no value: the study records it as failed, the report
    # lists it under its own heading
    return {"value": row.get(f"val_{built.task.primary}"), "row": row,
            **({"architecture": arch.to_dict()} if asked else {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnas_core.runner.worker")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--trial", type=int, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    watch_parent()
    try:
        studies = Studies(args.storage)
        frozen = studies.studies[args.study].get_trials(deepcopy=False)[args.trial]
        result = run_trial(studies, args.study, frozen, args.run_dir)
        if DistEnv.from_environ().writer:  # under torchrun, rank 0 reports for all ranks
            write_result(result_path(args.run_dir, frozen), result)
    except NonFiniteLoss as exc:
        print(f"non-finite loss: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    except torch.cuda.OutOfMemoryError as exc:
        print(f"CUDA out of memory: {exc}", file=sys.stderr)
        return EXIT_OOM
    except DoesNotFit as exc:  # said in full; nothing was allocated
        print(exc, file=sys.stderr)
        return 1
    except optuna.TrialPruned as exc:
        print(f"pruned: {exc}", file=sys.stderr)
        return EXIT_PRUNED
    except Exception:  # noqa: BLE001 - any other failure: print it, fail this trial only
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
