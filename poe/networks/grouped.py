"""N WRN expert heads as one module: their convolutions stacked as grouped convolutions.

Experts of a pool all read the same library features and never interact, so N of them can run
as one network whose every layer holds the N experts side by side: a convolution of expert i
becomes group i of a grouped convolution (`groups=N`), a BatchNorm of expert i becomes channels
[i·C, (i+1)·C) of one BatchNorm, and the N classifiers become one "segmented" linear layer. One
forward/backward then moves the data once for all experts, in a few large kernels instead of
many tiny ones.

The stacking is exact: every output element, gradient, BatchNorm statistic and SGD update of
expert i depends only on expert i's weights (BatchNorm statistics are per channel; SGD, momentum
and weight decay are per element), so training the stack equals training the N experts on the
same batches. `from_heads` / `state_dicts` convert to and from N `WRNHead` state_dicts with the
authors' key names (`block3.layer.j.*`, `bn1.*`, `fc.*`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .wrn import WRNHead


def head_shape(head: nn.Module) -> tuple[int, int, int, int, int] | None:
    """(in_channels, width, num_blocks, stride, num_classes) of a WRNHead, None for other heads."""
    if not isinstance(head, WRNHead):
        return None
    first = head.block3.layer[0]
    return (first.bn1.num_features, head.bn1.num_features, len(head.block3.layer), first.conv1.stride[0],
            head.fc.out_features)


class GroupedBlock(nn.Module):
    """N pre-activation BasicBlocks side by side (input and output: N·C channels, expert-major)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(n * in_planes)
        self.conv1 = nn.Conv2d(n * in_planes, n * out_planes, 3, stride, 1, bias=False, groups=n)
        self.bn2 = nn.BatchNorm2d(n * out_planes)
        self.conv2 = nn.Conv2d(n * out_planes, n * out_planes, 3, 1, 1, bias=False, groups=n)
        needs_projection = in_planes != out_planes or stride != 1
        self.convShortcut = (nn.Conv2d(n * in_planes, n * out_planes, 1, stride, 0, bias=False, groups=n)
                             if needs_projection else None)

    def forward(self, x):  # same arithmetic as wrn.BasicBlock
        pre = F.relu(self.bn1(x))
        if self.convShortcut is None:
            return x + self.conv2(F.relu(self.bn2(self.conv1(pre))))
        main, shortcut = self._conv1_and_shortcut(pre)
        return shortcut + self.conv2(F.relu(self.bn2(main)))

    def _conv1_and_shortcut(self, pre):
        """conv1 (3×3, pad 1) and the 1×1 projection read the same pixels at the same stride: run
        both as one convolution, the 1×1 kernel as the centre tap of a 3×3 one (zeros elsewhere).
        Small strided 1×1 convolutions are slow on CPUs; this one is nearly free."""
        n, out_planes = self.conv1.groups, self.conv1.out_channels // self.conv1.groups
        w_main = self.conv1.weight.view(n, out_planes, -1, 3, 3)
        w_short = F.pad(self.convShortcut.weight, (1, 1, 1, 1)).view(n, out_planes, -1, 3, 3)
        weight = torch.cat([w_main, w_short], 1).flatten(0, 1)               # (N·2·W, C, 3, 3)
        both = F.conv2d(pre, weight, None, self.conv1.stride, 1, groups=n)    # (B, N·2·W, H', W')
        b, _, h, w = both.shape
        both = both.view(b, n, 2, out_planes, h, w)
        return both[:, :, 0].reshape(b, n * out_planes, h, w), both[:, :, 1].reshape(b, n * out_planes, h, w)


class SegmentedLinear(nn.Module):
    """N linear layers (W -> k_i) on N feature groups, outputs concatenated: (B, N·W) -> (B, Σk_i).

    Row r of `weight` belongs to expert `segment[r]` and only sees that expert's W features."""

    def __init__(self, n: int, width: int, out_features: list[int]):
        super().__init__()
        self.n, self.width = n, width
        self.weight = nn.Parameter(torch.empty(sum(out_features), width))
        self.bias = nn.Parameter(torch.zeros(sum(out_features)))
        segment = torch.repeat_interleave(torch.arange(n), torch.tensor(out_features))
        self.register_buffer("segment", segment, persistent=False)

    def forward(self, x):  # (B, N·W) -> (B, K)
        per_row = x.view(x.shape[0], self.n, self.width)[:, self.segment, :]  # (B, K, W)
        return (per_row * self.weight).sum(-1) + self.bias


class GroupedWRNHeads(nn.Module):
    """N WRNHead experts (same in_channels/width/depth, any class counts) computed as one.

    forward(features (B, C, H, W)) -> (B, Σk_i) logits, expert i's in columns `slices[i]`.
    """

    def __init__(self, in_channels: int, width: int, num_blocks: int, num_classes: list[int], stride: int = 2):
        super().__init__()
        n = len(num_classes)
        self.n, self.in_channels, self.width, self.num_blocks = n, in_channels, width, num_blocks
        self.stride, self.num_classes = stride, list(num_classes)
        self.blocks = nn.Sequential(*[GroupedBlock(n, in_channels if j == 0 else width, width,
                                                   stride if j == 0 else 1) for j in range(num_blocks)])
        self.bn1 = nn.BatchNorm2d(n * width)
        self.fc = SegmentedLinear(n, width, self.num_classes)
        bounds = torch.tensor([0, *self.num_classes]).cumsum(0).tolist()
        self.slices = [slice(bounds[i], bounds[i + 1]) for i in range(n)]

    def forward(self, features):  # (B, C, H, W) -> (B, Σk_i)
        # Each expert has its own first BatchNorm over the same input: give each its own copy.
        x = features.repeat(1, self.n, 1, 1)                             # (B, N·C, H, W)
        out = F.relu(self.bn1(self.blocks(x)))                           # (B, N·W, H', W')
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))  # (B, Σk_i)

    def split(self, logits) -> list[torch.Tensor]:
        """The joint output -> one (B, k_i) tensor per expert."""
        return [logits[:, s] for s in self.slices]

    # -- conversion to/from N separate WRNHead state_dicts (the authors' key names) -------------
    @classmethod
    def from_heads(cls, heads: list[nn.Module]) -> "GroupedWRNHeads":
        shapes = [head_shape(h) for h in heads]
        if not heads or any(s is None for s in shapes) or len({s[:4] for s in shapes}) != 1:
            raise ValueError("grouping needs WRNHead experts of one shape (in_channels, width, depth, stride)")
        c, w, nb, stride, _ = shapes[0]
        grouped = cls(c, w, nb, [s[4] for s in shapes], stride)
        grouped.load_heads([h.state_dict() for h in heads])
        return grouped

    def _pairs(self):
        """(grouped module, key prefix in a WRNHead state_dict) for every stacked layer."""
        for j, block in enumerate(self.blocks):
            for name in ("bn1", "conv1", "bn2", "conv2", "convShortcut"):
                if getattr(block, name) is not None:
                    yield getattr(block, name), f"block3.layer.{j}.{name}"
        yield self.bn1, "bn1"

    @torch.no_grad()
    def load_heads(self, states: list[dict]) -> None:
        if len(states) != self.n:
            raise ValueError(f"{self.n} experts in the group, {len(states)} state_dicts given")
        for module, prefix in self._pairs():
            for key, value in module.state_dict().items():
                parts = [s[f"{prefix}.{key}"] for s in states]
                if key == "num_batches_tracked":
                    value.copy_(parts[0])
                else:
                    value.copy_(torch.cat(parts, dim=0))
        self.fc.weight.copy_(torch.cat([s["fc.weight"] for s in states], dim=0))
        self.fc.bias.copy_(torch.cat([s["fc.bias"] for s in states], dim=0))

    @torch.no_grad()
    def state_dicts(self) -> list[dict]:
        """N WRNHead state_dicts (detached CPU copies), expert i's weights only."""
        out = [{} for _ in range(self.n)]
        for module, prefix in self._pairs():
            for key, value in module.state_dict().items():
                value = value.detach().cpu()
                for i in range(self.n):
                    out[i][f"{prefix}.{key}"] = (value.clone() if key == "num_batches_tracked"
                                                 else value.chunk(self.n, dim=0)[i].clone())
        for i, s in enumerate(self.slices):
            out[i]["fc.weight"] = self.fc.weight.detach().cpu()[s].clone()
            out[i]["fc.bias"] = self.fc.bias.detach().cpu()[s].clone()
        return out

    def heads(self, factory) -> list[nn.Module]:
        """N separate experts: `factory(num_classes)` builds an empty WRNHead, filled from the group."""
        experts = []
        for k, state in zip(self.num_classes, self.state_dicts()):
            head = factory(k)
            head.load_state_dict(state)
            experts.append(head)
        return experts
