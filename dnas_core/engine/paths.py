"""File names made from values that may come from a shared storage, checked before use.

Trial directories and architecture files are named by ids read back out of an Optuna
storage, which anyone with access to a shared database can write. Such a value is only
used as a file name after it matched its pattern, and every path built from it must
resolve to a place inside the directory it belongs to, so a crafted id such as
``x/../../../tmp/escaped`` can never make a worker write somewhere else.
"""

from __future__ import annotations

import re
from pathlib import Path

#: ``<space>-<10 hex digits>``; a space is a plain name such as ``emb_dim`` or ``joint``
ARCH_ID = re.compile(r"[A-Za-z0-9_]{1,64}-[0-9a-f]{10}")
#: a parameter combination's key (:func:`dnas_core.runner.experiment.params_key`)
PARAMS_KEY = re.compile(r"[0-9a-f]{12}")


class UnsafeName(ValueError):
    """A value that would name a file is malformed or leads outside its directory."""


def checked(value: object, pattern: re.Pattern[str], what: str) -> str:
    """``value`` if it is a string matching ``pattern`` in full, else :class:`UnsafeName`."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise UnsafeName(f"refusing {what} {value!r}: expected a value matching "
                         f"{pattern.pattern!r}")
    return value


def inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves to a place inside ``root`` (symbolic links followed)."""
    base = Path(root).resolve()
    target = Path(path).resolve()
    if target != base and not target.is_relative_to(base):
        raise UnsafeName(f"refusing path {path}: it leads outside {root}")
    return path
