"""The CNN search space as plain data: shared by the supernet, the sampled model and costs.

Backbone: ``stem`` (3x3 conv, BN, ReLU) -> searchable layers -> global average pool ->
linear classifier. Searchable layer ``l`` makes two independent choices:

- ``op[l]``: a ``k x k`` conv (BN, ReLU) for each ``k`` in ``kernels``, or ``skip``
  (identity; a parameter-free 3x3 average pool with stride 2 in a stride-2 layer);
- ``width[l]``: the conv's output channels, one of ``widths`` (ignored when skipped).

A layer's input width is the output width of the nearest earlier layer that did not skip
(or the stem's), so the FLOPs of a conv depend on earlier choices. The costs handle this
exactly by carrying the probability distribution of the channel count flowing between
layers (see :mod:`dnas_cnn.costs`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dnas_cnn.settings import CnnSettings


def out_size(size: int, stride: int) -> int:
    """Spatial size after a ``same``-padded odd conv (or 3x3 pool, padding 1) of ``stride``."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class LayerGeometry:
    stride: int
    in_size: int
    out_size: int
    in_widths: tuple[int, ...]   # channel counts its input can have, ascending


@dataclass(frozen=True)
class CnnSpace:
    in_channels: int
    image_size: int
    classes: int
    stem_width: int
    stem_stride: int
    kernels: tuple[int, ...]
    widths: tuple[int, ...]
    skip: bool
    layers: tuple[LayerGeometry, ...]

    @classmethod
    def build(cls, settings: CnnSettings, data_info: Mapping[str, Any]) -> CnnSpace:
        size = int(data_info["image_size"])
        stem_stride = settings.stem_stride or (1 if size <= 16 else size // 16)
        current = out_size(size, stem_stride)
        widths = tuple(sorted(settings.widths))
        possible: set[int] = {settings.stem_width}
        layers = []
        for stride in settings.layer_strides:
            after = out_size(current, stride)
            layers.append(LayerGeometry(stride, current, after, tuple(sorted(possible))))
            possible = (possible | set(widths)) if settings.skip else set(widths)
            current = after
        return cls(int(data_info["channels"]), size, int(data_info["classes"]),
                   settings.stem_width, stem_stride, tuple(settings.kernels), widths,
                   settings.skip, tuple(layers))

    # ----- shapes -----------------------------------------------------------------------
    @property
    def stem_size(self) -> int:
        return out_size(self.image_size, self.stem_stride)

    @property
    def op_labels(self) -> list[str]:
        return [f"conv{k}x{k}" for k in self.kernels] + (["skip"] if self.skip else [])

    @property
    def n_ops(self) -> int:
        return len(self.kernels) + int(self.skip)

    @property
    def channel_values(self) -> tuple[int, ...]:
        """Every channel count that can flow between layers, ascending."""
        return tuple(sorted({self.stem_width, *self.widths}))

    @property
    def final_widths(self) -> tuple[int, ...]:
        """Channel counts the classifier's input can have."""
        return tuple(sorted((set(self.layers[-1].in_widths) if self.skip else set())
                            | set(self.widths)))

    # ----- architectures ----------------------------------------------------------------
    def decode(self, ops: Sequence[int], widths: Sequence[int]) -> dict[str, Any]:
        """The sampled-architecture spec from raw per-layer op and width indices."""
        if len(ops) != len(self.layers) or len(widths) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} op and width choices, got "
                             f"{len(ops)} and {len(widths)}")
        layers = []
        for geometry, op, width in zip(self.layers, ops, widths, strict=True):
            if self.skip and op == len(self.kernels):
                layers.append({"op": "skip", "stride": geometry.stride})
            else:
                layers.append({"op": "conv", "kernel": self.kernels[op],
                               "width": self.widths[width], "stride": geometry.stride})
        return {"in_channels": self.in_channels, "classes": self.classes,
                "stem": {"width": self.stem_width, "stride": self.stem_stride},
                "layers": layers}

    def layer_options(self) -> list[tuple[int, int]]:
        """Distinct (op, width) index pairs of one layer (skip ignores the width)."""
        pairs = [(k, w) for k in range(len(self.kernels)) for w in range(len(self.widths))]
        return pairs + ([(len(self.kernels), 0)] if self.skip else [])

    def n_architectures(self) -> int:
        return len(self.layer_options()) ** len(self.layers)

    def enumerate_choices(self) -> Iterator[tuple[list[int], list[int]]]:
        """Every distinct architecture as (op indices, width indices); only for tiny spaces."""
        for combo in itertools.product(self.layer_options(), repeat=len(self.layers)):
            yield [op for op, _ in combo], [w for _, w in combo]

    def describe(self) -> list[str]:
        lines = [f"input: {self.in_channels}x{self.image_size}x{self.image_size}, "
                 f"{self.classes} classes",
                 f"stem: conv3x3 -> {self.stem_width} channels, stride {self.stem_stride}, "
                 f"{self.stem_size}x{self.stem_size}"]
        for i, layer in enumerate(self.layers):
            lines.append(f"layer {i}: {layer.in_size}x{layer.in_size} -> "
                         f"{layer.out_size}x{layer.out_size} (stride {layer.stride}); "
                         f"ops {', '.join(self.op_labels)}; widths "
                         f"{', '.join(map(str, self.widths))}; input widths "
                         f"{', '.join(map(str, layer.in_widths))}")
        lines.append(f"head: global average pool -> linear -> {self.classes}")
        lines.append(f"distinct architectures: {self.n_architectures():,}")
        return lines
