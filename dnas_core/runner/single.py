"""Train and test one given architecture: ``dnas train --arch FILE.json``.

The same training code as a search's sampled architectures (optimizers, step budget,
early stopping, divergence retries), run in this process, so that any row of a report can
be reproduced and a hand-sized model trained for comparison.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dnas_core.config.runspec import RunSpec
from dnas_core.config.validate import ConfigError
from dnas_core.engine.architecture import Architecture
from dnas_core.engine.progress import Reporter
from dnas_core.plugins.registry import Registry
from dnas_core.runner.pipeline import (
    build_data,
    prepare_run_dir,
    test_architecture,
    train_architecture,
)
from dnas_core.runner.preflight import check_data, check_runnable
from dnas_core.runner.worker import write_result


def load_architecture(path: Path, spec: RunSpec) -> Architecture:
    """An architecture file saved by a search (``architectures/<id>.json``), or a bare spec
    of the domain's sampled model (for DLRM ``{"emb_dims": ..., "hash_sizes": ...,
    "bottom_mlp": ..., "top_mlp": ...}``)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object (an architecture or a spec)")
    if "spec" in data and "choices" in data:
        try:
            arch = Architecture.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: not an architecture file: {exc}") from None
        if arch.domain != spec.domain.name:
            raise ConfigError(f"{path}: the architecture is for domain {arch.domain!r}, "
                              f"not {spec.domain.name!r}")
        return arch
    return Architecture(spec.domain.name, "given", {}, data, source={"role": "given",
                                                                   "file": str(path)})


def train_one(registry: Registry, spec: RunSpec, arch_path: Path, out: Path,
              reporter: Reporter | None = None) -> dict[str, Any]:
    """Train ``arch_path``'s architecture under ``spec`` in ``out``; returns its row (also
    written to ``out/result.json``)."""
    check_runnable(spec)
    check_data(registry, spec)
    arch = load_architecture(arch_path, spec)
    prepare_run_dir(spec, out)
    built = build_data(registry, spec)
    row = train_architecture(registry, spec, arch, out, built, reporter=reporter)
    if row["status"] == "ok":
        row.update({f"test_{k}": v for k, v in
                    test_architecture(registry, spec, arch, out, built).items()})
    write_result(out / "result.json", row)
    return row
