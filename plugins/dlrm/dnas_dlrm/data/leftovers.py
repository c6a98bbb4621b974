"""Temporary directories of killed prepares: recognised, removed, or pointed at.

``prepare`` writes into ``.NAME.prepare-PID-HEX`` next to ``out`` and records in it, in
:data:`OWNER`, the host and process that own it. A SIGKILL or a power cut leaves that
directory behind, often gigabytes of arrays, hidden by its leading dot. The next prepare
into the same ``out`` removes each one whose owner is a process of this host that no
longer exists, and says so. Nothing else is removed: a directory whose owner is alive, on
another host, or not recorded (written by an older version) is only named, so that the
user can decide.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

OWNER = ".dnas-prepare-owner"


def claim(tmp: Path) -> None:
    """Record this process as the owner of the temporary directory ``tmp``."""
    (tmp / OWNER).write_text(f"{socket.gethostname()}:{os.getpid()}\n")


def release(tmp: Path) -> None:
    """Drop the owner record before ``tmp`` becomes the finished data set."""
    (tmp / OWNER).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clear(out_dir: Path) -> list[str]:
    """Remove the dead temporary directories of earlier prepares into ``out_dir``; one
    sentence for each one found, removed or not."""
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.prepare-(\d+)-[0-9a-f]{{8}}")
    notes = []
    for path in sorted(out_dir.parent.iterdir()):
        named = pattern.fullmatch(path.name)
        if named is None or path.is_symlink() or not path.is_dir():
            continue
        try:
            host, _, pid = (path / OWNER).read_text().strip().rpartition(":")
        except OSError:
            notes.append(f"note: {path} looks like the temporary directory of an earlier "
                         "prepare but records no owner; remove it if no prepare is running")
            continue
        ours = host == socket.gethostname() and pid == named.group(1)
        if ours and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            notes.append(f"removed {path}: the temporary directory of a prepare (pid {pid}) "
                         "that was killed before it finished")
        else:
            notes.append(f"note: {path} belongs to a prepare still running (pid {pid} on "
                         f"{host or 'an unknown host'}); left alone")
    return notes
