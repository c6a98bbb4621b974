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
            "negative_rate": table.negative_rate, "features": feature_order(),
            "preprocessing": preprocessing(settings, table)}
    return DataBundle(table, table.splits(), info)


def feature_order() -> dict[str, list[str]]:
    """The Criteo columns behind each input, in order: dense I1..I13, sparse C1..C26."""
    from dnas_dlrm.data.schema import DENSE_NAMES, SPARSE_NAMES

    return {"dense": list(DENSE_NAMES), "sparse": list(SPARSE_NAMES)}


def preprocessing(settings: DlrmSettings, table: Any) -> dict[str, Any]:
    """What was done to raw Criteo lines before the model saw them (a served model needs
    the same): from the prepared data's manifest, or the synthetic generator's name."""
    if table.manifest is None:
        return {"source": f"synthetic ({settings.data.synthetic})",
                "rows": settings.data.synthetic_rows}
    manifest = table.manifest
    layout = manifest.layout
    modes = sorted({str(e.get("mode")) for e in manifest.encodings})
    return {"source": "prepared", "path": str(settings.data.path),
            "dense_transform": layout.get("dense"), "sparse_ids": layout.get("sparse"),
            "hash_rule": layout.get("hash"), "vocab_rule": layout.get("vocab"),
            "missing_row": layout.get("missing_row"),
            "unknown_row_vocab": layout.get("unknown_row_vocab"),
            "vocabulary_modes": modes, "encodings": manifest.encodings,
            "cardinalities": manifest.cardinalities, "options": manifest.options}


@hookimpl
def dnas_check_data(domain: str, settings: DlrmSettings) -> list[str] | None:
    """A prepared directory's manifest, array sizes and row counts, before a run starts."""
    if domain != NAME or not settings.data.path:
        return None
    from dnas_dlrm.data.verify import problems

    return problems(settings.data.path)


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
def dnas_example_inputs(domain: str, settings: DlrmSettings, data_info: dict[str, Any],
                        batch_size: int) -> Any:
    """``(dense float32 [B, 13], sparse int64 [B, 26])``: transformed dense values and a
    valid row of each feature's table, as the prepared data holds them."""
    if domain != NAME:
        return None
    import torch

    generator = torch.Generator().manual_seed(0)
    dense = torch.rand(batch_size, data_info["n_dense"], generator=generator) * 5
    sparse = torch.stack([torch.randint(0, int(c), (batch_size,), generator=generator)
                          for c in data_info["cardinalities"]], dim=1)
    return dense, sparse


@hookimpl
def dnas_shard_supernet(domain: str, settings: DlrmSettings, supernet: Any, env: Any,
                        device: Any, optimizer: Any) -> Any:
    """The embedding tables sharded with TorchRec (``pip install dnas-dlrm[distributed]``)."""
    if domain != NAME:
        return None
    try:
        import torchrec  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"a distributed DLRM search shards its tables with TorchRec, "
                           f"which is not installed ({exc}); install dnas-dlrm[distributed]"
                           ) from None
    from dnas_dlrm.distributed import shard_supernet

    return shard_supernet(supernet, env, device, optimizer)


@hookimpl
def dnas_register_commands(cli: click.Group) -> None:
    from dnas_dlrm.data.cli import prepare_command

    @cli.group(name=NAME)
    def dlrm() -> None:
        """DLRM plugin commands (data preparation)."""

    dlrm.add_command(prepare_command, name="prepare")
