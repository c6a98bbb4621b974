"""``dnas export``: a trained architecture of a run as an artifact that needs only PyTorch.

The sampled module is rebuilt exactly as its trial built it (the trial's ``config.yaml``,
the plugin's ``dnas_make_sampled`` hook, the best checkpoint), then traced with
``torch.export`` on the plugin's example inputs (``dnas_example_inputs``; a domain without
that hook gets its first test rows). The ``.pt2`` program keeps those inputs, so

    ep = torch.export.load(path); ep.module()(*ep.example_inputs[0])

runs where nothing but torch is installed. The batch dimension is dynamic. ONNX is written
too when the ``onnx`` package is importable. A JSON sidecar says what the program expects
and what it is: the architecture, its inputs and feature order, the preprocessing its data
went through, its costs and metrics.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnas_core.engine.rowsets import first_rows
from dnas_core.runner.runs import RunError, check_run_dir, ranked, read_rows, read_study
from dnas_core.runner.study import ARCHITECTURES
from dnas_core.runner.worker import trial_dir_of

#: rows in the example inputs kept in the program
EXAMPLE_BATCH = 4
SIDECAR_VERSION = 1
#: weights up to this size are kept inside the .onnx file
ONNX_INLINE_BYTES = 1 << 30


class Positional(nn.Module):
    """Takes a model's input tuple as separate positional tensors: the exported program is
    called ``program(dense, sparse)``, not with a nested tuple."""

    def __init__(self, model: nn.Module, as_tuple: bool):
        super().__init__()
        self.model = model
        self.as_tuple = as_tuple

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(tuple(inputs) if self.as_tuple else inputs[0])


def choose_row(rows: list[dict[str, Any]], arch_id: str | None) -> dict[str, Any]:
    """The row to export: the given architecture's best trained row (any role), else the
    searched architecture with the best validation metric."""
    primary = next((r["primary_metric"] for r in rows if r.get("primary_metric")),
                   "val_logloss")
    if arch_id is None:
        best = ranked(rows, primary)
        if not best:
            raise RunError("no searched architecture has finished training in this run yet")
        return best[0]
    mine = [r for r in rows if r.get("arch_id") == arch_id and r.get("status", "ok") == "ok"
            and r.get(primary) is not None]
    if not mine:
        known = sorted({r["arch_id"] for r in rows if r.get("status", "ok") == "ok"})
        raise RunError(f"--arch {arch_id!r}: no trained architecture with this id in the run; "
                       f"trained: {', '.join(known) or 'none'}")
    return min(mine, key=lambda r: r[primary])


def trial_directory(run_dir: Path, row: dict[str, Any]) -> Path:
    """The trial directory that trained ``row``: by its trial number in the study, or (no
    study.db, e.g. an external storage) the only one holding its checkpoint."""
    study = read_study(run_dir)
    trial = next((t for t in (study or {}).get("trials", {}).get(ARCHITECTURES, [])
                  if t["number"] == row.get("trial")), None)
    if trial is not None:
        return trial_dir_of(run_dir, trial["attrs"])
    found = sorted(run_dir.glob(f"trials/arch-{row['arch_id']}-*/checkpoints/"
                                f"{row['arch_id']}.pt"))
    if len(found) != 1:
        raise RunError(f"{run_dir}: cannot tell which trial trained {row['arch_id']} "
                       f"({len(found)} checkpoints and no study.db)")
    return found[0].parent.parent


def example_inputs(registry: Any, spec: Any, built: Any, batch_size: int) -> Any:
    """The plugin's example inputs, else the first test rows (a domain without the hook)."""
    example = registry.hook.dnas_example_inputs(
        domain=spec.domain.name, settings=spec.domain_settings, data_info=built.data.info,
        batch_size=batch_size)
    if example is None:
        example, _ = built.data.table.gather(first_rows(built.data.splits["test"], batch_size))
    return example


def own_storage(model: nn.Module) -> None:
    """Give each buffer that is a view of a larger tensor (e.g. DLRM's two rows of one
    ``triu_indices``) its own copy: ``torch.export.save`` stores views as an incomplete
    group and every load of the program then warns about it."""
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer._base is not None:
                setattr(module, name, buffer.clone())


def export_program(model: nn.Module, example: Any, path: Path) -> torch.export.ExportedProgram:
    """Trace ``model`` (eval mode, on CPU) with a dynamic batch dimension and save it."""
    own_storage(model)
    model.requires_grad_(False)  # an inference program: outputs without autograd history
    as_tuple = isinstance(example, (tuple, list))
    args = tuple(example) if as_tuple else (example,)
    wrapped = Positional(model.cpu().eval(), as_tuple).eval()
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad():  # the varargs are one argument to export: one tuple of shapes
            program = torch.export.export(wrapped, args,
                                          dynamic_shapes=(tuple({0: batch} for _ in args),))
    except Exception as exc:  # noqa: BLE001 - tracing failures are long; keep the first line
        raise RunError(f"torch.export failed on this model: {str(exc).splitlines()[0]}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path)
    return program


def export_onnx(program: torch.export.ExportedProgram, path: Path) -> str:
    """Write ONNX next to the program; returns what happened, in words."""
    if importlib.util.find_spec("onnx") is None:
        return "ONNX skipped: the onnx package is not installed (pip install onnx onnxscript)"
    weights = sum(t.numel() * t.element_size() for t in program.state_dict.values())
    try:  # one file unless the weights pass ONNX's 2 GB protobuf limit
        torch.onnx.export(program, (), str(path), dynamo=True, verbose=False,
                          external_data=weights > ONNX_INLINE_BYTES)
    except Exception as exc:  # noqa: BLE001 - ONNX is optional: say why, keep the .pt2
        path.unlink(missing_ok=True)
        return f"ONNX skipped: the exporter failed: {str(exc).splitlines()[0][:300]}"
    return f"wrote {path}"


def _describe(tensor: torch.Tensor) -> dict[str, Any]:
    return {"dtype": str(tensor.dtype).removeprefix("torch."),
            "shape": ["batch", *tensor.shape[1:]]}


@dataclass
class Trained:
    """A trained architecture of a run, rebuilt as its trial built it."""

    row: dict[str, Any]
    arch: Any  # Architecture
    spec: Any  # RunSpec
    built: Any  # pipeline.Built: the data bundle and the task
    model: nn.Module


def load_trained(registry: Any, run_dir: Path, arch_id: str | None = None) -> Trained:
    """The row :func:`choose_row` picks, its model with the best checkpoint loaded (eval
    mode, CPU), the trial's settings and data."""
    from dnas_core.config.runspec import resolve
    from dnas_core.config.validate import ConfigError
    from dnas_core.engine import checkpoint
    from dnas_core.engine.architecture import Architecture
    from dnas_core.runner.pipeline import build_data, make_sampled

    run_dir = check_run_dir(run_dir)
    row = choose_row(read_rows(run_dir), arch_id)
    directory = trial_directory(run_dir, row)
    config = directory / "config.yaml"
    weights = directory / "checkpoints" / f"{row['arch_id']}.pt"
    arch_file = run_dir / "architectures" / f"{row['arch_id']}.json"
    for needed in (config, weights, arch_file):
        if not needed.exists():
            raise RunError(f"{needed}: missing; cannot rebuild {row['arch_id']}")
    try:
        spec = resolve(registry, None, config=config)
    except ConfigError as exc:
        raise RunError(f"{config}: {exc}") from None
    try:
        built = build_data(registry, spec)
    except (OSError, ValueError) as exc:  # e.g. prepared data moved or incomplete
        raise RunError(f"{config}: cannot load the run's data: {exc}") from None
    try:
        arch = Architecture.load(arch_file)
        model = make_sampled(registry, spec, arch, built)
        model.load_state_dict(checkpoint.load(weights))
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint fails in many ways
        first = (str(exc).splitlines() or [""])[0]
        raise RunError(f"{weights}: cannot rebuild {row['arch_id']} from it (unreadable or "
                       f"another model's: {type(exc).__name__}: {first})") from None
    return Trained(row, arch, spec, built, model.cpu().eval())


def export_run(registry: Any, run_dir: Path, out: Path, arch_id: str | None = None,
               batch_size: int = EXAMPLE_BATCH, onnx: bool = True) -> dict[str, Any]:
    """Export one trained architecture of ``run_dir`` to ``out`` (``.pt2``), with ONNX
    (``.onnx``, unless ``onnx`` is false) where possible and the sidecar (``.json``);
    returns the sidecar."""
    out = Path(out)
    if out.suffix in (".json", ".onnx"):
        raise RunError(f"--out {out}: name the .pt2 program; the .json sidecar and .onnx "
                       f"are written next to it")
    trained = load_trained(registry, run_dir, arch_id)
    row, arch, spec, built = trained.row, trained.arch, trained.spec, trained.built
    example = example_inputs(registry, spec, built, batch_size)
    program = export_program(trained.model, example, out)
    onnx_path = out.with_suffix(".onnx")
    for stale in (onnx_path, Path(f"{onnx_path}.data")):  # never keep an older export's
        stale.unlink(missing_ok=True)
    notes = [export_onnx(program, onnx_path)] if onnx else []
    inputs = program.example_inputs[0]
    with torch.no_grad():
        output = program.module()(*inputs)
    info = built.data.info
    metrics = {k: v for k, v in row.items() if k.startswith(("val_", "test_"))
               and k != "test_row_losses"}
    sidecar = {
        "format": "dnas-export", "version": SIDECAR_VERSION,
        "program": out.name, "onnx": onnx_path.name if onnx_path.exists() else None,
        "usage": "ep = torch.export.load(program); outputs = ep.module()(*inputs)",
        "run_dir": str(Path(run_dir).resolve()), "trial": row.get("trial"),
        "arch_id": row["arch_id"], "domain": arch.domain, "search_space": arch.space,
        "role": row.get("role", "search"), "architecture": arch.to_dict(),
        "inputs": [_describe(t) for t in inputs], "output": _describe(output),
        "task": {"type": type(built.task).__name__, "primary": built.task.primary},
        "feature_order": info.get("features"), "preprocessing": info.get("preprocessing"),
        "cost": row.get("cost"), "costs": row.get("costs"), "params": row.get("params"),
        "metrics": metrics, "hyperparameters": row.get("hyperparameters"),
        "settings": spec.to_dict(), "torch": torch.__version__, "notes": notes}
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, sort_keys=True))
    return sidecar
