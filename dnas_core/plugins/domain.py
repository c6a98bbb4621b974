"""What a plugin registers: a named domain with its typed settings and shipped YAML."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Domain:
    """A family of search spaces over one backbone, e.g. ``dlrm`` or ``cnn``.

    ``settings_type`` is the dataclass that validates the ``domain:`` section of a run's
    configuration. ``defaults`` is a YAML file of run settings merged over the core's
    defaults; ``presets`` are further YAML files selected with ``--preset NAME``.
    ``default_cost`` names the cost model used when the configuration picks none, or maps
    the domain's settings to weighted cost terms (e.g. a joint search combining two costs).
    """

    name: str
    settings_type: type
    default_cost: str | Callable[[Any], Mapping[str, float]]
    description: str = ""
    defaults: Path | None = None
    presets: Mapping[str, Path] = field(default_factory=dict)
    plugin: str = ""

    def preset_descriptions(self) -> dict[str, str]:
        """Each preset's one-line description, from its file's leading comment."""
        return {name: preset_description(path) for name, path in sorted(self.presets.items())}


#: a description longer than this is cut at its first colon (then with an ellipsis)
DESCRIPTION_CHARS = 110


def preset_description(path: Path) -> str:
    """The first sentence of a preset YAML file's leading comment (``# ...`` lines up to the
    first blank, indented or non-comment line), so a preset is described where it is
    written and nowhere else."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ""
    words: list[str] = []
    for line in lines:
        text = line.strip()
        if not text.startswith("#") or text.startswith("#  ") or not text.lstrip("# "):
            break
        words.append(text.lstrip("# "))
    sentence = re.split(r"(?<=\.)\s", " ".join(words), maxsplit=1)[0]
    if len(sentence) > DESCRIPTION_CHARS and ":" in sentence:
        sentence = sentence.split(":", 1)[0].rstrip()
    if len(sentence) > DESCRIPTION_CHARS:
        sentence = sentence[:DESCRIPTION_CHARS - 1].rstrip() + "…"
    return sentence.rstrip(".")
