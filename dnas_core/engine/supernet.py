"""The supernet base: architecture decisions kept apart from operator weights.

Every searchable choice lives in a :class:`Decision` module, which owns the architecture
parameters theta for that choice and nothing else. The weights optimizer is handed
``SuperNet.weight_parameters()``, which by construction excludes every Decision's theta, so
no optimizer configuration can move theta during warm-up or weight phases (defect 4 of the
original code).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from dnas_core.engine.sampling import hard_sample, most_likely, soft_sample

SamplingMode = Literal["soft", "expected", "fixed"]


@dataclass
class SamplingState:
    """How every Decision of one supernet turns theta into mixing weights right now."""

    mode: SamplingMode = "expected"
    temperature: float = 1.0
    generator: torch.Generator | None = None


class Decision(nn.Module):
    """One architectural choice, or ``groups`` independent choices with the same options.

    Grouping (for example one dimension choice per embedding table) lets one Gumbel draw of
    shape (batch, groups, n_options) serve all of them, which is much faster than a module
    per choice.
    """

    def __init__(self, n_options: int, groups: int | None = None,
                 labels: list[str] | None = None, group_labels: list[str] | None = None):
        super().__init__()
        if n_options < 1:
            raise ValueError("a decision needs at least one option")
        shape = (n_options,) if groups is None else (groups, n_options)
        self.theta = nn.Parameter(torch.zeros(shape))
        self.labels = labels or [str(i) for i in range(n_options)]
        self.group_labels = group_labels
        self._state = SamplingState()
        self._fixed: Tensor | None = None
        self.last_weights: Tensor | None = None

    @property
    def n_options(self) -> int:
        return self.theta.shape[-1]

    @property
    def grouped(self) -> bool:
        return self.theta.dim() == 2

    def probabilities(self) -> Tensor:
        return torch.softmax(self.theta.detach(), dim=-1)

    def mix_weights(self, batch_size: int) -> Tensor:
        """Mixing weights of shape (batch, [groups,] n_options) under the current mode.

        The result is also kept in ``last_weights`` so that cost models can read the very
        weights the forward pass used.
        """
        state = self._state
        if state.mode == "soft":
            weights = soft_sample(self.theta, batch_size, state.temperature, state.generator)
        elif state.mode == "expected":
            weights = torch.softmax(self.theta, dim=-1).expand(batch_size, *self.theta.shape)
        else:
            if self._fixed is None:
                raise RuntimeError("fixed sampling mode without a fixed choice")
            one_hot = nn.functional.one_hot(self._fixed.to(self.theta.device), self.n_options)
            weights = one_hot.to(self.theta.dtype).expand(batch_size, *self.theta.shape)
        self.last_weights = weights
        return weights


class SuperNet(nn.Module):
    """Base class of every supernet: sampling control, parameter sets, architectures.

    Subclasses build their operators and Decisions in ``__init__``, call
    ``decision.mix_weights(batch)`` inside ``forward`` and implement :meth:`decode`, which
    turns raw per-decision choices into the architecture spec their sampled module takes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sampling = SamplingState()

    # ----- decisions and parameter sets -------------------------------------------------
    def decisions(self) -> dict[str, Decision]:
        return {name: module for name, module in self.named_modules()
                if isinstance(module, Decision)}

    def arch_parameters(self) -> list[nn.Parameter]:
        return [d.theta for d in self.decisions().values()]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch_ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch_ids]

    def weight_param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of operator weights, each of which may get its own LR schedule.

        Subclasses split this (e.g. sparse embedding tables versus dense layers); every
        weight parameter must appear in exactly one group.
        """
        return {"default": self.weight_parameters()}

    # ----- sampling control ---------------------------------------------------------------
    def _apply_state(self) -> None:
        for decision in self.decisions().values():
            decision._state = self._sampling

    def sample_soft(self, temperature: float, generator: torch.Generator | None) -> None:
        """Per-example Gumbel-softmax sampling at ``temperature`` (training)."""
        self._sampling = SamplingState("soft", temperature, generator)
        self._apply_state()

    def sample_expected(self) -> None:
        """Use softmax(theta) itself as the mixing weights (noise-free evaluation)."""
        self._sampling = SamplingState("expected")
        self._apply_state()

    def fix(self, choices: Mapping[str, Any]) -> None:
        """Route every example through one architecture, given as raw decision choices."""
        decisions = self.decisions()
        missing = set(decisions) - set(choices)
        if missing:
            raise KeyError(f"no choice given for decisions {sorted(missing)}")
        for name, decision in decisions.items():
            decision._fixed = torch.as_tensor(choices[name], dtype=torch.long)
        self._sampling = SamplingState("fixed")
        self._apply_state()

    # ----- architectures ------------------------------------------------------------------
    def sample_choices(self, generator: torch.Generator | None = None,
                       argmax: bool = False) -> dict[str, Any]:
        """Hard-sample every decision: a draw from softmax(theta), or its argmax."""
        picks = {}
        for name, decision in self.decisions().items():
            chosen = most_likely(decision.theta) if argmax else hard_sample(decision.theta,
                                                                              generator)
            picks[name] = chosen.tolist()
        return picks

    def decode(self, choices: Mapping[str, Any]) -> dict[str, Any]:
        """Turn raw decision choices into the spec the sampled module is built from."""
        return dict(choices)

    def probabilities(self) -> dict[str, np.ndarray]:
        return {name: d.probabilities().cpu().numpy() for name, d in self.decisions().items()}

    def heatmaps(self) -> dict[str, tuple[np.ndarray, list[str], list[str]]]:
        """Matrices worth plotting (like the paper's Fig. 9 and 10): title -> (probabilities,
        row labels, column labels). By default every grouped decision."""
        maps = {}
        for name, decision in self.decisions().items():
            if decision.grouped:
                rows = decision.group_labels or [str(i) for i in range(decision.theta.shape[0])]
                maps[name] = (decision.probabilities().cpu().numpy(), rows, decision.labels)
        return maps
