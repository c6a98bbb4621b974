"""``dnas plugin new NAME``: write a minimal, working third-party plugin to start from.

The files come from ``cli/templates/plugin`` (shipped as package data). Every template ends
in ``.tmpl`` so that no tool mistakes it for code of this project; ``package`` in a path
becomes the plugin's package name, and ``{{name}}``-style placeholders are filled in.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

TEMPLATES = Path(__file__).parent / "templates" / "plugin"
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ScaffoldError(ValueError):
    """The plugin cannot be written (bad name, or the target exists)."""


def check_name(name: str) -> str:
    """A plugin name must be a lower-case Python identifier (it names the package
    ``dnas_<name>``, the entry point and the domain)."""
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use a lower-case Python identifier (letters, "
            f"digits and underscores, starting with a letter), e.g. 'mine' or 'my_cnn'")
    return name


def placeholders(name: str) -> dict[str, str]:
    return {"name": name, "package": f"dnas_{name}",
            "distribution": f"dnas-{name.replace('_', '-')}",
            "title": name.replace("_", " ").title().replace(" ", "") + " plugin"}


def render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def template_files() -> list[Path]:
    files = sorted(p for p in TEMPLATES.rglob("*.tmpl") if p.is_file())
    if not files:
        raise ScaffoldError(f"no plugin templates found under {TEMPLATES}; "
                            f"is the dnas installation complete?")
    return files


def scaffold_plugin(name: str, destination: Path) -> Path:
    """Write the plugin ``dnas-<name>`` into the new directory ``destination/dnas-<name>``
    and return that directory. Refuses to touch an existing directory."""
    check_name(name)
    values = placeholders(name)
    target = Path(destination) / values["distribution"]
    if target.exists():
        raise ScaffoldError(f"{target} already exists; choose another --dir or remove it")
    files = template_files()
    for source in files:
        relative = source.relative_to(TEMPLATES).with_suffix("")  # drop .tmpl
        parts = [values["package"] if part == "package" else part for part in relative.parts]
        path = target.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(source.read_text(), values))
    return target
