"""The run's human-readable report: every trained architecture in one table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dnas_core.architecture import Architecture


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e4 or abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def write_report(run_dir: Path, spec: Any, architectures: Sequence[Architecture],
                 rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> Path:
    units_path = run_dir / "units.json"
    units = json.loads(units_path.read_text()) if units_path.exists() else {}
    metric_keys = sorted({k for r in rows for k in r if k.startswith("val_")})
    cost_keys = sorted({k for r in rows for k in r.get("costs", {})})
    primary = summary["primary_metric"]
    lines = [f"# dnas run: {spec.domain.name} / {spec.space}", "",
             f"Seed {spec.settings.seed}; {len(architectures)} architectures sampled; "
             f"ranked by {primary}.", "",
             "## Sampled architectures", ""]
    header = (["arch_id"] + metric_keys + [f"{c} ({units.get(c, '?')})" for c in cost_keys]
              + ["params", "train_seconds"])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in sorted(rows, key=lambda r: r[primary]):
        cells = ([f"[{row['arch_id']}](architectures/{row['arch_id']}.json)"]
                 + [_fmt(row[k]) for k in metric_keys]
                 + [_fmt(row.get("costs", {}).get(c, "")) for c in cost_keys]
                 + [_fmt(row["params"]), _fmt(row["train_seconds"])])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"## Test metrics of the best architecture ({summary['best_arch_id']})", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in summary.items() if k.startswith("test_")]
    heatmaps = sorted((run_dir / "heatmaps").glob("*.png"))
    if heatmaps:
        lines += ["", "## Architecture distribution (softmax of theta)", ""]
        lines += [f"![{p.stem}](heatmaps/{p.name})" for p in heatmaps]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
