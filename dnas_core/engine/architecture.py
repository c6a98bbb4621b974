"""A sampled architecture as a JSON-serialisable record."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dnas_core.engine.paths import ARCH_ID, checked, inside


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Architecture:
    """One architecture drawn from a trained supernet.

    ``choices`` holds the raw per-decision indices (enough to route a supernet through it),
    ``spec`` the domain's decoded description (what its sampled module is built from).
    """

    domain: str
    space: str
    choices: dict[str, Any]
    spec: dict[str, Any]
    costs: dict[str, float] = field(default_factory=dict)
    #: the cost it is ranked and plotted by, in the search loss's unit: one of ``costs``,
    #: or their normalised weighted sum when the loss combines several
    cost: float | None = None
    probabilities: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def arch_id(self) -> str:
        digest = hashlib.sha256(_canonical([self.domain, self.space, self.spec]).encode())
        return f"{self.space}-{digest.hexdigest()[:10]}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["arch_id"] = self.arch_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        fields = {k: v for k, v in data.items() if k != "arch_id"}
        arch = cls(**fields)
        if "arch_id" in data and data["arch_id"] != arch.arch_id:
            raise ValueError(f"architecture id {data['arch_id']!r} does not match its "
                             f"contents ({arch.arch_id!r})")
        return arch

    def save(self, directory: Path) -> Path:
        """Write ``<directory>/<arch_id>.json``; the id is checked first, as the record may
        have come from a shared storage (its space is part of the id)."""
        name = checked(self.arch_id, ARCH_ID, "architecture id")
        path = inside(directory, directory / f"{name}.json")
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> Architecture:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{path}: not an architecture file: {exc}") from exc
