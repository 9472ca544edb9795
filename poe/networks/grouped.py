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

    def forward(self, x, pre=None):  # same arithmetic as wrn.BasicBlock; `pre` when computed already
        if pre is None:
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
        pairs = both.permute(0, 2, 3, 1).unflatten(3, (n, 2, out_planes))    # (B, H', W', N, 2, W)
        return channels_last_nchw(pairs[..., 0, :]), channels_last_nchw(pairs[..., 1, :])


def channels_last_nchw(t):
    """(B, H, W, G, C) -> (B, G·C, H, W) held in channels-last memory (oneDNN's native layout)."""
    return t.flatten(3).permute(0, 3, 1, 2)


def shared_input_bn_relu(bn: nn.BatchNorm2d, features, n: int):
    """relu(BN_i(features)) for the n BatchNorms held in channels [i·C, (i+1)·C) of `bn`, all over
    the same input, side by side as (B, n·C, H, W) in channels-last memory — without n copies of
    the input. In training mode the batch statistics (the same for every copy) are computed once
    and each copy's running statistics are updated with them, as n separate BatchNorms would."""
    b, _, h, w = features.shape
    if bn.training:
        var, mean = torch.var_mean(features, dim=(0, 2, 3), unbiased=False)
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            count = b * h * w
            bn.running_mean.mul_(1 - m).add_(mean.detach().repeat(n), alpha=m)
            bn.running_var.mul_(1 - m).add_(var.detach().repeat(n) * (count / max(count - 1, 1)), alpha=m)
        mean, inv_std = mean.repeat(n), torch.rsqrt(var + bn.eps).repeat(n)
    else:
        mean, inv_std = bn.running_mean, torch.rsqrt(bn.running_var + bn.eps)
    scale = bn.weight * inv_std                                                 # (n·C,)
    return side_by_side_affine_relu(features, scale, bn.bias - mean * scale, n)


def side_by_side_affine_relu(features, scale, shift, n: int):
    """relu(features·scale_i + shift_i) for n per-channel affines (scale, shift: n·C values) over the
    same input, side by side as (B, n·C, H, W) in channels-last memory: one broadcast multiply-add,
    no n copies of the input."""
    c = features.shape[1]
    pixels = features.permute(0, 2, 3, 1).unsqueeze(3)                          # (B, H, W, 1, C)
    return channels_last_nchw(torch.addcmul(shift.reshape(n, c), pixels, scale.reshape(n, c)).relu_())


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
        first = self.blocks[0]
        # Each expert has its own first BatchNorm over the same input.
        pre = shared_input_bn_relu(first.bn1, features, self.n)                     # (B, N·C, H, W)
        x = first(pre if first.convShortcut is not None else features.repeat(1, self.n, 1, 1), pre=pre)
        for block in self.blocks[1:]:
            x = block(x)
        out = F.relu(self.bn1(x))                                                   # (B, N·W, H', W')
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))            # (B, Σk_i)

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
