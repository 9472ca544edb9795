"""Wide residual networks with the PoE authors' state-dict key names.

Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016), pre-activation BasicBlocks.
Key names (`conv1`, `block1.layer.0.bn1`, `...convShortcut`, `bn1`, `fc`) and shapes match the
authors' published checkpoints (shared/reference/poe-authors/checkpoint_layouts.json), so their
files load with strict=True.

A WRN is split in two for PoE:
  library = conv1 + block1 + block2      (shared, frozen generic features)
  head    = block3 + bn1 + relu + pool + fc  (an expert, or the library student's classifier)
`WideResNet` holds all of them flat (the Oracle and the library student); `WRNLibrary` and
`WRNHead` hold one part each with the same key names, so a student's state_dict splits into
both by key prefix.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus (projected) shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        # A projection is needed whenever the shape changes (channels or resolution).
        needs_projection = in_planes != out_planes or stride != 1
        self.convShortcut = (
            nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False) if needs_projection else None
        )

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        # With a projection the shortcut also starts from the pre-activation (as in the
        # reference WRN code); the identity shortcut carries the raw input.
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        return shortcut + out


class NetworkBlock(nn.Module):
    """One WRN group: `num_blocks` BasicBlocks, the first one changing width/stride."""

    def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
            for i in range(num_blocks)
        ])

    def forward(self, x):
        return self.layer(x)


@dataclass(frozen=True)
class WRNConfig:
    """Shape of a WRN-depth-widen. `stem_stride` 2 for 64×64 inputs (Tiny-ImageNet)."""

    depth: int = 16
    widen: int = 1
    stem_stride: int = 1

    @property
    def blocks_per_group(self) -> int:
        if (self.depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {self.depth}")
        return (self.depth - 4) // 6

    @property
    def widths(self) -> tuple[int, int, int, int]:
        return 16, 16 * self.widen, 32 * self.widen, 64 * self.widen

    @property
    def library_channels(self) -> int:
        return self.widths[2]


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class WRNLibrary(nn.Module):
    """conv1 + block1 + block2: image -> generic features (library_channels @ H/4 or H/8)."""

    def __init__(self, cfg: WRNConfig):
        super().__init__()
        w = cfg.widths
        n = cfg.blocks_per_group
        self.conv1 = nn.Conv2d(3, w[0], 3, cfg.stem_stride, 1, bias=False)
        self.block1 = NetworkBlock(n, w[0], w[1], 1)
        self.block2 = NetworkBlock(n, w[1], w[2], 2)
        _init_weights(self)

    def forward(self, x):  # (B, 3, H, W) -> (B, C2, H', W')
        return self.block2(self.block1(self.conv1(x)))


class WRNHead(nn.Module):
    """block3 + BN-ReLU + global average pool + fc: features -> logits.

    As an expert: `width` is small (16 for CIFAR-100) and `num_classes` = the task's classes.
    As the library student's classifier: `width` = 64·widen and `num_classes` = all classes.
    """

    def __init__(self, in_channels: int, width: int, num_classes: int, num_blocks: int):
        super().__init__()
        self.block3 = NetworkBlock(num_blocks, in_channels, width, 2)
        self.bn1 = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)
        _init_weights(self)

    def forward(self, features):  # (B, C, H, W) -> (B, num_classes)
        out = F.relu(self.bn1(self.block3(features)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class WideResNet(nn.Module):
    """A whole WRN (Oracle or library student) with flat key names conv1..fc."""

    def __init__(self, cfg: WRNConfig, num_classes: int):
        super().__init__()
        library = WRNLibrary(cfg)
        head = WRNHead(cfg.library_channels, cfg.widths[3], num_classes, cfg.blocks_per_group)
        self.conv1, self.block1, self.block2 = library.conv1, library.block1, library.block2
        self.block3, self.bn1, self.fc = head.block3, head.bn1, head.fc
        self.cfg = cfg

    def features(self, x):
        return self.block2(self.block1(self.conv1(x)))

    def forward(self, x):
        out = F.relu(self.bn1(self.block3(self.features(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


LIBRARY_PREFIXES = ("conv1.", "block1.", "block2.")


def split_state_dict(state: dict) -> tuple[dict, dict]:
    """Split a whole WRN state_dict into (library part, head part) by key prefix."""
    library = {k: v for k, v in state.items() if k.startswith(LIBRARY_PREFIXES)}
    head = {k: v for k, v in state.items() if not k.startswith(LIBRARY_PREFIXES)}
    return library, head
