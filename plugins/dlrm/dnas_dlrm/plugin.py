"""The DLRM plugin's hook implementations: the glue between dnas and this package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dnas_core import BinaryClassification, DataBundle, Domain, hookimpl
from dnas_dlrm import models
from dnas_dlrm.settings import DlrmSettings

NAME = "dlrm"
CONFIGS = Path(__file__).parent / "configs"


def _cost_terms(settings: DlrmSettings) -> dict[str, float]:
    return models.default_cost_terms(settings)


@hookimpl
def dnas_register_domains(register: Any) -> None:
    register(Domain(
        NAME, DlrmSettings, default_cost=_cost_terms,
        description="DLRM for CTR prediction: MLP, embedding dimension and cardinality spaces",
        defaults=CONFIGS / "defaults.yaml",
        presets={p.stem.removeprefix("preset_"): p for p in CONFIGS.glob("preset_*.yaml")}))


@hookimpl
def dnas_make_data(domain: str, settings: DlrmSettings, seed: int) -> DataBundle | None:
    if domain != NAME:
        return None
    from dnas_dlrm.data import NUM_DENSE, CriteoArrays, generate, generate_realistic

    if settings.data.path:
        table = CriteoArrays.open(settings.data.path)
    else:
        make = generate_realistic if settings.data.synthetic == "realistic" else generate
        table = CriteoArrays.from_synthetic(make(settings.data.synthetic_rows, seed=seed))
    info = {"cardinalities": list(table.cardinalities), "n_dense": NUM_DENSE,
            "negative_rate": table.negative_rate}
    return DataBundle(table, table.splits(), info)


@hookimpl
def dnas_make_supernet(domain: str, settings: DlrmSettings, data_info: dict[str, Any]) -> Any:
    if domain != NAME:
        return None
    return models.build_supernet(settings, data_info["cardinalities"], data_info["n_dense"])


@hookimpl
def dnas_make_sampled(domain: str, settings: DlrmSettings, architecture: Any,
                      data_info: dict[str, Any]) -> Any:
    if domain != NAME:
        return None
    return models.build_sampled(settings, architecture.spec, data_info["cardinalities"],
                                data_info["n_dense"])


@hookimpl
def dnas_cost_models(domain: str, settings: DlrmSettings, data_info: dict[str, Any],
                     supernet: Any) -> list[Any] | None:
    if domain != NAME:
        return None
    return models.cost_models(settings, data_info["cardinalities"], supernet)


@hookimpl
def dnas_make_task(domain: str, settings: DlrmSettings, data_info: dict[str, Any]) -> Any:
    if domain != NAME:
        return None
    return BinaryClassification(negative_rate=data_info.get("negative_rate"))


@hookimpl
def dnas_register_commands(cli: click.Group) -> None:
    from dnas_dlrm.data.cli import prepare_command

    @cli.group(name=NAME)
    def dlrm() -> None:
        """DLRM plugin commands (data preparation)."""

    dlrm.add_command(prepare_command, name="prepare")
