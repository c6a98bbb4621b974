"""Loads exported programs where dnas cannot be imported: what a serving stack would see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

#: no site processing (so no editable installs, no .pth files), only torch's own
#: site-packages on the path; checks that dnas is neither importable nor imported
LOADER = """
import sys
sys.path.append(sys.argv[1])
import torch
try:
    import dnas_core
    raise SystemExit("dnas_core is importable here")
except ImportError:
    pass
for program, rows, out in zip(*[iter(sys.argv[2:])] * 3):
    ep = torch.export.load(program)
    ep.module()(*ep.example_inputs[0])
    inputs = torch.load(rows, weights_only=True)["inputs"]
    with torch.no_grad():
        outputs = ep.module()(*(inputs if isinstance(inputs, (list, tuple)) else (inputs,)))
    torch.save({"outputs": outputs}, out)
assert not [m for m in sys.modules if m.startswith("dnas")], sorted(sys.modules)
"""


def run_without_dnas(jobs: list[tuple[Path, Path]], workdir: Path) -> list[torch.Tensor]:
    """Each (program, rows file) loaded and run on its rows in one fresh interpreter; the
    rows file holds ``{"inputs": tensor or tuple of tensors}``. Returns the outputs."""
    site = str(Path(torch.__file__).resolve().parents[1])
    outs = [workdir / f"outputs-{i}.pt" for i in range(len(jobs))]
    argv = [str(p) for (program, rows), out in zip(jobs, outs) for p in (program, rows, out)]
    done = subprocess.run([sys.executable, "-I", "-S", "-c", LOADER, site, *argv],
                          capture_output=True, text=True, cwd=workdir, timeout=300)
    assert done.returncode == 0, done.stderr
    return [torch.load(out, weights_only=True)["outputs"] for out in outs]
