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
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from dnas_core.config.settings import OptimizerSettings
from dnas_core.engine.sampling import hard_sample, most_likely, soft_sample

SamplingMode = Literal["soft", "expected", "fixed"]
_MASKED = -1e4  # a logit offset whose softmax weight is exactly 0 in float32


@dataclass
class SamplingState:
    """How every Decision of one supernet turns theta into mixing weights right now."""

    mode: SamplingMode = "expected"
    temperature: float = 1.0
    generator: torch.Generator | None = None
    #: a distributed rank's rows of the global batch: soft sampling draws the noise of the
    #: whole global batch (the generator stays in step on every rank) and keeps these rows
    global_batch: int | None = None
    rows: slice | None = None


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
        # 0 for an allowed option, _MASKED for an option that duplicates another (see restrict)
        self.register_buffer("offset", torch.zeros(shape), persistent=False)
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

    def restrict(self, allowed: Tensor) -> None:
        """Allow only some options (a bool tensor shaped like theta), e.g. one of several
        options that build the same operator: a disallowed option gets no probability, so
        duplicates do not split it between them."""
        # checked on the host: a supernet may be built on the meta device, to be measured
        allowed = torch.as_tensor(allowed, dtype=torch.bool, device="cpu")
        if allowed.shape != self.theta.shape or not bool(allowed.any(dim=-1).all()):
            raise ValueError(f"allowed must have shape {tuple(self.theta.shape)} and allow "
                             f"at least one option per choice")
        self.offset = torch.where(allowed, 0.0, _MASKED).to(self.theta.device)

    def allowed(self) -> Tensor:
        return self.offset == 0

    def logits(self) -> Tensor:
        """theta with disallowed options pushed to zero probability."""
        return self.theta + self.offset

    def probabilities(self) -> Tensor:
        return torch.softmax(self.logits().detach(), dim=-1)

    def entropy(self) -> Tensor:
        """Entropy of softmax(theta) per choice over its allowed options, divided by the
        uniform distribution's: 1 means the search has not moved this choice at all."""
        p = self.probabilities()
        n = self.allowed().sum(dim=-1).double()
        h = -(p.double() * torch.log(p.double().clamp_min(1e-30))).sum(dim=-1)
        return torch.where(n > 1, h / torch.log(n.clamp_min(2)), torch.zeros_like(h))

    def mix_weights(self, batch_size: int) -> Tensor:
        """Mixing weights of shape (batch, [groups,] n_options) under the current mode.

        The result is also kept in ``last_weights`` so that cost models can read the very
        weights the forward pass used.
        """
        state = self._state
        if state.mode == "soft" and state.rows is not None and state.global_batch:
            weights = soft_sample(self.logits(), state.global_batch, state.temperature,
                                  state.generator)[state.rows]
        elif state.mode == "soft":
            weights = soft_sample(self.logits(), batch_size, state.temperature,
                                  state.generator)
        elif state.mode == "expected":
            weights = torch.softmax(self.logits(), dim=-1).expand(batch_size,
                                                                  *self.theta.shape)
        else:
            if self._fixed is None:
                raise RuntimeError("fixed sampling mode without a fixed choice")
            one_hot = nn.functional.one_hot(self._fixed.to(self.theta.device), self.n_options)
            weights = one_hot.to(self.theta.dtype).expand(batch_size, *self.theta.shape)
        self.last_weights = weights
        return weights


class FusedPart(Protocol):
    """Weights a plugin trains with an optimizer fused into their backward pass (e.g.
    fbgemm's table-batched embeddings) instead of the engine's optimizer.

    They are not parameters of the supernet (the engine neither steps nor clips them),
    but their values and optimizer state are buffers of it, so a checkpoint of the
    supernet's ``state_dict`` carries them.
    """

    #: what runs them, as printed in the trial log
    summary: str

    def set_trainable(self, trainable: bool) -> None:
        """Weights chunks train them; architecture chunks must leave them alone."""

    def set_epoch(self, epoch: float) -> None:
        """Apply the learning-rate schedule of the weights optimizer at this epoch."""


class SuperNet(nn.Module):
    """Base class of every supernet: sampling control, parameter sets, architectures.

    Subclasses build their operators and Decisions in ``__init__``, call
    ``decision.mix_weights(batch)`` inside ``forward`` and implement :meth:`decode`, which
    turns raw per-decision choices into the architecture spec their sampled module takes.
    """

    #: weight groups a distributed run splits across devices (e.g. embedding tables); the
    #: other weights and theta are replicated on every device
    sharded_groups: frozenset[str] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self._sampling = SamplingState()

    def activation_bytes(self, batch_size: int) -> int | None:
        """About how much memory a training step's activations (and sparse gradients)
        take at ``batch_size``, for the memory check before a search; None: not known."""
        return None

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

    def fuse_optimizer(self, settings: OptimizerSettings, where: str) -> FusedPart | None:
        """Hand some weights to an optimizer fused into their backward pass, as
        ``settings`` (the weights optimizer, reported under ``where``) says to train
        them; called once by a single-process search, after the supernet is on its
        device and before the engine's optimizer is built. None: nothing fused."""
        return None

    # ----- sampling control ---------------------------------------------------------------
    def _apply_state(self) -> None:
        for decision in self.decisions().values():
            decision._state = self._sampling

    def sample_soft(self, temperature: float, generator: torch.Generator | None) -> None:
        """Per-example Gumbel-softmax sampling at ``temperature`` (training)."""
        self._sampling = SamplingState("soft", temperature, generator)
        self._apply_state()

    def slice_batch(self, global_batch: int, rows: slice) -> None:
        """The next forward sees only ``rows`` of a global batch (one rank's share): its
        Gumbel noise is those rows of the global batch's, as a single process draws it."""
        self._sampling.global_batch, self._sampling.rows = global_batch, rows

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
            logits = decision.logits()
            chosen = most_likely(logits) if argmax else hard_sample(logits, generator)
            picks[name] = chosen.tolist()
        return picks

    def uniform_choices(self, generator: torch.Generator) -> dict[str, Any]:
        """A draw with every allowed option equally likely: the random-search baseline,
        independent of what theta has learnt."""
        picks = {}
        for name, decision in self.decisions().items():
            picks[name] = hard_sample(torch.where(decision.allowed(), 0.0, _MASKED),
                                      generator).tolist()
        return picks

    def reference_choices(self) -> dict[str, Any] | None:
        """The choices of the hand-sized model this space is built around (e.g. every
        embedding at the default width), trained as a baseline in every report; None when
        the space has none."""
        return None

    def entropies(self) -> dict[str, list[float]]:
        """Normalised entropy of each choice (see :meth:`Decision.entropy`), per decision."""
        return {name: [float(v) for v in d.entropy().reshape(-1)]
                for name, d in self.decisions().items()}

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
