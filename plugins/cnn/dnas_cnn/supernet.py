"""The CNN supernet: per-layer kernel/skip operators mixed per example, widths as masks.

Each searchable layer holds one conv per kernel size, every one at the layer's largest
width. The op decision mixes their outputs (and the skip path) per example, as in the
paper's eq. 2. The width decision is FBNetV2-style channel masking: the conv outputs are
multiplied by ``sum_j m_j * [c < widths[j]]``, so with a one-hot choice only the first
``widths[j]`` channels survive, exactly as in the sampled model's narrower conv. Tensors
between layers carry a fixed number of channels, zero beyond the active width, so a conv
reading them behaves like one with only the active input channels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dnas_cnn.space import CnnSpace
from dnas_core import Decision, SuperNet


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def skip_path(stride: int) -> nn.Module:
    """The skip operator: identity, or a parameter-free average pool where the layer
    downsamples (same output size as the strided convs)."""
    if stride == 1:
        return nn.Identity()
    return nn.AvgPool2d(3, stride, 1, count_include_pad=False)


def pad_channels(x: Tensor, channels: int) -> Tensor:
    extra = channels - x.shape[1]
    return x if extra == 0 else nn.functional.pad(x, (0, 0, 0, 0, 0, extra))


class SearchLayer(nn.Module):
    def __init__(self, space: CnnSpace, index: int, out_channels: int):
        super().__init__()
        geometry = space.layers[index]
        self.in_channels = max(geometry.in_widths)
        self.out_channels = out_channels
        max_width = max(space.widths)
        self.convs = nn.ModuleList(conv_bn_relu(self.in_channels, max_width, k, geometry.stride)
                                   for k in space.kernels)
        self.skip = skip_path(geometry.stride) if space.skip else None
        masks = torch.tensor([[1.0 if c < w else 0.0 for c in range(max_width)]
                              for w in space.widths])
        self.register_buffer("masks", masks, persistent=False)

    def forward(self, x: Tensor, op_weights: Tensor, width_weights: Tensor) -> Tensor:
        """op_weights: (batch, n_ops), width_weights: (batch, n_widths)."""
        n_kernels = len(self.convs)
        mixed = sum(op_weights[:, i].view(-1, 1, 1, 1) * conv(x)
                    for i, conv in enumerate(self.convs))
        mask = (width_weights @ self.masks.to(width_weights.dtype))[:, :, None, None]
        out = pad_channels(mixed * mask, self.out_channels)
        if self.skip is not None:
            out = out + op_weights[:, n_kernels].view(-1, 1, 1, 1) * pad_channels(
                self.skip(x), self.out_channels)
        return out


class CnnSuperNet(SuperNet):
    """Decisions: ``op`` (one group per layer: kernels then skip) and ``width``."""

    def __init__(self, space: CnnSpace):
        super().__init__()
        self.space = space
        n_layers = len(space.layers)
        self.stem = conv_bn_relu(space.in_channels, space.stem_width, 3, space.stem_stride)
        flowing = [max(layer.in_widths) for layer in space.layers] + [max(space.final_widths)]
        self.layers = nn.ModuleList(SearchLayer(space, i, flowing[i + 1])
                                    for i in range(n_layers))
        self.head = nn.Linear(flowing[-1], space.classes)
        group_labels = [f"layer{i}" for i in range(n_layers)]
        self.op = Decision(space.n_ops, groups=n_layers, labels=space.op_labels,
                           group_labels=group_labels)
        self.width = Decision(len(space.widths), groups=n_layers,
                              labels=[str(w) for w in space.widths], group_labels=group_labels)

    def forward(self, images: Tensor) -> Tensor:
        batch = images.shape[0]
        op_weights = self.op.mix_weights(batch)
        width_weights = self.width.mix_weights(batch)
        x = pad_channels(self.stem(images), self.layers[0].in_channels)
        for i, layer in enumerate(self.layers):
            x = layer(x, op_weights[:, i], width_weights[:, i])
        return self.head(x.mean(dim=(2, 3)))

    def decode(self, choices: Mapping[str, Any]) -> dict[str, Any]:
        return self.space.decode(choices["op"], choices["width"])

    def choices_for(self, ops: list[int], widths: list[int]) -> dict[str, Any]:
        """Raw decision choices (for ``fix``) from per-layer op and width indices."""
        return {"op": list(ops), "width": list(widths)}
