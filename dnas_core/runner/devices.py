"""Device discovery for the trial pool, without initialising CUDA in the parent.

The pool's parent process only launches and watches trials; it never computes on a GPU.
Creating a CUDA context there would hold several hundred MiB on every GPU for the whole
run, so discovery and free-memory queries go through ``nvidia-smi`` (with a timeout, so a
wedged driver cannot hang the pool). ``torch.cuda.device_count()`` is the fallback for
discovery only (it asks NVML and does not create a context).

Device names used by the pool:

* ``"cpu"``: a CPU slot; the trial gets ``CUDA_VISIBLE_DEVICES=""``.
* a GPU id as ``CUDA_VISIBLE_DEVICES`` understands it: an index such as ``"0"`` or a UUID
  such as ``"GPU-6f3c..."``; ``"cuda:1"`` is accepted and normalised to ``"1"``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

CPU = "cpu"
NVIDIA_SMI_TIMEOUT = 10.0


def normalise_device(name: str) -> str:
    """``"cuda:1"`` -> ``"1"``, ``"CPU"`` -> ``"cpu"``; other ids are kept as given."""
    text = str(name).strip()
    if not text:
        raise ValueError("empty device name")
    if text.lower() == CPU:
        return CPU
    if text.lower().startswith("cuda:"):
        text = text[5:]
        if not text.isdigit():
            raise ValueError(f"bad CUDA device {name!r}")
    if text.lower() == "cuda":
        raise ValueError("say which GPU: '0', 'cuda:0', ... or 'auto'")
    return text


def device_label(device: str) -> str:
    """How a slot's device is reported: ``"cpu"`` or ``"cuda:<id>"`` (physical id)."""
    return CPU if device == CPU else f"cuda:{device}"


def _nvidia_smi(query: str) -> list[list[str]] | None:
    """Rows of ``nvidia-smi --query-gpu=<query>``, or None when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return [[cell.strip() for cell in line.split(",")]
            for line in done.stdout.splitlines() if line.strip()]


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ids for ``CUDA_VISIBLE_DEVICES``.

    A ``CUDA_VISIBLE_DEVICES`` already set in our environment is respected (its entries
    are returned as they are; an empty value means no GPU). Otherwise every GPU that
    ``nvidia-smi`` lists, else ``range(torch.cuda.device_count())``.
    """
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None:
        ids = [part.strip() for part in preset.split(",") if part.strip()]
        # CUDA stops at the first invalid entry such as "-1"; so do we.
        out: list[str] = []
        for part in ids:
            if part.startswith("-"):
                break
            out.append(part)
        return out
    rows = _nvidia_smi("index")
    if rows is not None:
        return [row[0] for row in rows if row and row[0].isdigit()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken torch install just means "no GPU"
        return []


def resolve_devices(devices: Sequence[str] | str) -> list[str]:
    """``"auto"`` -> all visible GPUs, or ``["cpu"]`` when there are none; a list is
    normalised, checked for duplicates and returned."""
    if isinstance(devices, str):
        if devices == "auto":
            return visible_gpus() or [CPU]
        devices = [part for part in devices.split(",") if part.strip()]
    out = [normalise_device(d) for d in devices]
    if not out:
        raise ValueError("no devices given")
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate devices in {list(devices)!r}")
    return out


def group_devices(devices: Sequence[str], per_trial: int) -> list[str]:
    """Slots of ``per_trial`` GPUs each for distributed trials (``["0", "1", "2", "3"]``,
    2 -> ``["0,1", "2,3"]``; GPUs left over are not used). The CPU stays one device: its
    trial starts ``per_trial`` processes there."""
    if per_trial < 1:
        raise ValueError(f"devices per trial must be >= 1, got {per_trial}")
    gpus = [d for d in devices if d != CPU]
    if per_trial == 1 or not gpus:
        return list(devices)
    if len(gpus) < per_trial:
        raise ValueError(f"{per_trial} GPUs per trial, but only {len(gpus)} given "
                         f"({', '.join(gpus)})")
    return [",".join(gpus[i:i + per_trial])
            for i in range(0, len(gpus) - per_trial + 1, per_trial)]


def check_available(devices: Sequence[str]) -> None:
    """Refuse a GPU index this machine does not show (a typo such as ``--devices 7`` on a
    four-GPU machine would otherwise fail every trial). UUIDs are left to CUDA."""
    visible = visible_gpus()
    for device in devices:
        if device != CPU and device.isdigit() and device not in visible:
            raise ValueError(f"GPU {device} is not visible here (visible: "
                             f"{', '.join(visible) or 'none'}); use 'auto' or cpu")


def free_memory_mb(gpus: Sequence[str]) -> dict[str, float]:
    """Free memory (MiB) of each GPU in ``gpus`` that ``nvidia-smi`` can see.

    GPUs it cannot report are missing from the result; the pool then places by the
    number of running trials. Ids are matched to ``nvidia-smi``'s index or UUID.
    """
    wanted = [g for g in gpus if g != CPU]
    if not wanted:
        return {}
    rows = _nvidia_smi("index,uuid,memory.free")
    if rows is None:
        return {}
    by_id: dict[str, float] = {}
    for row in rows:
        if len(row) < 3:
            continue
        try:
            free = float(row[2])
        except ValueError:  # "[N/A]" on some configurations
            continue
        by_id[row[0]] = free
        by_id[row[1]] = free
    return {g: by_id[g] for g in wanted if g in by_id}
