"""A plain CNN for one sampled architecture, built from its spec alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from dnas_cnn.supernet import conv_bn_relu, skip_path


class SampledCNN(nn.Module):
    """Stem, the chosen layers with their real widths, global average pool, classifier."""

    def __init__(self, spec: Mapping[str, Any]):
        super().__init__()
        stem = spec["stem"]
        self.stem = conv_bn_relu(spec["in_channels"], stem["width"], 3, stem["stride"])
        channels = stem["width"]
        layers: list[nn.Module] = []
        for layer in spec["layers"]:
            if layer["op"] == "skip":
                layers.append(skip_path(layer["stride"]))
            elif layer["op"] == "conv":
                layers.append(conv_bn_relu(channels, layer["width"], layer["kernel"],
                                           layer["stride"]))
                channels = layer["width"]
            else:
                raise ValueError(f"unknown layer op {layer['op']!r} in architecture spec")
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(channels, spec["classes"])

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.layers(self.stem(images)).mean(dim=(2, 3)))
