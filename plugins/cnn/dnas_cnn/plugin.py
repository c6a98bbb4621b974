"""The CNN domain's hook implementations: found by the core through the ``dnas`` entry point.

Uses nothing but the core's public plugin contract (``dnas_core`` top-level names).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from dnas_cnn.costs import flops_cost, latency_cost
from dnas_cnn.data import digits_available, make_data, resolve_dataset
from dnas_cnn.sampled import SampledCNN
from dnas_cnn.settings import CnnSettings
from dnas_cnn.space import CnnSpace
from dnas_cnn.supernet import CnnSuperNet
from dnas_core import Architecture, Domain, MulticlassClassification, hookimpl

DOMAIN = "cnn"
CONFIGS = Path(__file__).parent / "configs"


def latency_available() -> bool:
    return importlib.util.find_spec("dnas_core.engine.latency") is not None


@hookimpl
def dnas_register_domains(register):
    register(Domain(
        DOMAIN, CnnSettings, default_cost="flops",
        description="CNN image classification: per-layer kernel 3/5/7, width and skip "
                    "(scikit-learn digits, or the paper's random 3x50x50 images)",
        defaults=CONFIGS / "defaults.yaml",
        presets={"random": CONFIGS / "random.yaml", "latency": CONFIGS / "latency.yaml"}))


@hookimpl
def dnas_make_data(domain: str, settings: CnnSettings, seed: int):
    if domain != DOMAIN:
        return None
    return make_data(settings, seed)


@hookimpl
def dnas_make_supernet(domain: str, settings: CnnSettings, data_info: dict[str, Any]):
    if domain != DOMAIN:
        return None
    return CnnSuperNet(CnnSpace.build(settings, data_info))


@hookimpl
def dnas_make_sampled(domain: str, settings: CnnSettings, architecture: Architecture,
                      data_info: dict[str, Any]):
    if domain != DOMAIN:
        return None
    return SampledCNN(architecture.spec)


@hookimpl
def dnas_cost_models(domain: str, settings: CnnSettings, data_info: dict[str, Any], supernet):
    if domain != DOMAIN:
        return None
    space = CnnSpace.build(settings, data_info)
    models = [flops_cost(space)]
    if latency_available():
        cache = Path(settings.latency_cache).expanduser() if settings.latency_cache else None
        models.append(latency_cost(space, settings.latency_device, settings.latency_batch,
                                   cache))
    return models


@hookimpl
def dnas_make_task(domain: str, settings: CnnSettings, data_info: dict[str, Any]):
    if domain != DOMAIN:
        return None
    return MulticlassClassification()


@hookimpl
def dnas_example_inputs(domain: str, settings: CnnSettings, data_info: dict[str, Any],
                        batch_size: int):
    """Images as the model sees them: (batch, channels, size, size) float32."""
    if domain != DOMAIN:
        return None
    import torch

    size = data_info["image_size"]
    return torch.rand(batch_size, data_info["channels"], size, size,
                      generator=torch.Generator().manual_seed(0))


# ----- CLI: `dnas cnn info` ---------------------------------------------------------------
def _settings_from(section: dict[str, Any]) -> CnnSettings:
    from dnas_cnn.settings import RandomImages, SplitFractions

    section = dict(section)
    if "random" in section:
        section["random"] = RandomImages(**section["random"])
    if "splits" in section:
        section["splits"] = SplitFractions(**section["splits"])
    return CnnSettings(**section)


def _data_info(settings: CnnSettings) -> dict[str, Any]:
    """The shape facts the space needs, without loading any images."""
    if resolve_dataset(settings) == "digits":
        return {"dataset": "digits", "channels": 1, "image_size": 8, "classes": 10}
    r = settings.random
    return {"dataset": "random", "channels": r.channels, "image_size": r.size,
            "classes": r.classes}


@hookimpl
def dnas_register_commands(cli):
    import click
    import yaml

    @cli.group(DOMAIN)
    def cnn_group() -> None:
        """The CNN sample domain."""

    @cnn_group.command("info")
    @click.option("--config", "-c", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="A run YAML whose `domain:` section describes the space.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def info(config: Path | None, as_json: bool) -> None:
        """Print the CNN search space: layers, options, size and FLOPs range."""
        sections = [yaml.safe_load((CONFIGS / "defaults.yaml").read_text()) or {}]
        if config is not None:
            sections.append(yaml.safe_load(config.read_text()) or {})
        domain_section: dict[str, Any] = {}
        for section in sections:
            domain_section.update(section.get("domain") or {})
        try:
            settings = _settings_from(domain_section)
        except (TypeError, ValueError) as exc:
            raise click.ClickException(f"domain settings: {exc}") from exc
        data_info = _data_info(settings)
        space = CnnSpace.build(settings, data_info)
        low, high = flops_cost(space).bounds()
        if as_json:
            click.echo(json.dumps({
                "dataset": data_info["dataset"], "digits_available": digits_available(),
                "layers": [{"stride": g.stride, "in_size": g.in_size, "out_size": g.out_size,
                            "input_widths": list(g.in_widths)} for g in space.layers],
                "ops": space.op_labels, "widths": list(space.widths),
                "architectures": space.n_architectures(),
                "flops_min": low, "flops_max": high,
                "costs": ["flops"] + (["latency"] if latency_available() else [])}, indent=2))
            return
        click.echo(f"dataset: {data_info['dataset']}"
                   + ("" if digits_available() else " (scikit-learn not installed: digits "
                                                     "unavailable)"))
        for line in space.describe():
            click.echo(line)
        click.echo(f"FLOPs per image: {low:,.0f} to {high:,.0f}")
        click.echo("costs: flops" + (", latency (measured)" if latency_available() else ""))
