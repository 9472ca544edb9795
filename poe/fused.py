"""The fused task model: the consolidated model of a query rewritten for fast inference.

Same function as `consolidate.TaskModel` (library -> experts side by side -> logits in sorted
global class order), with
  * the experts' convolutions fused: expert i is group i of grouped convolutions over the
    concatenated expert channels, so n experts cost a few large kernels instead of n×(many small);
  * BatchNorm folded (eval mode): a BN that follows a convolution becomes that convolution's
    scale and bias; a BN that follows a residual sum (pre-activation) becomes one multiply-add;
  * in the experts' grouped blocks, the 1×1 projection shortcut run inside the 3×3 convolution
    (as the centre tap), one kernel instead of two;
  * the experts' classifiers as one block-diagonal linear layer whose rows are already in sorted
    class order (no gather at the end);
  * channels-last activations (oneDNN's native layout on CPUs: about 2x faster convolutions), and
    large CPU batches run in cache-sized chunks.
MobileNetV2 pools (ImageNet) get the same treatment: the library's BatchNorms folded into the
convolutions before them, channels-last; the experts' 1×1 convolutions (BN folded) as one matrix
product over the concatenated expert channels, then ReLU6, pooling and the block-diagonal classifier.
Folding is done once per library / expert (`fuse_library`, `fold_expert`, cached between queries
by poe.realtime); answering a query only concatenates the experts' folded tensors. `fuse()`
returns a task model of other networks unchanged. The module uses plain torch ops only, so
`torch.export` handles it and plain torch runs the export.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .consolidate import TaskModel
from .networks.grouped import channels_last_nchw as _nchw, side_by_side_affine_relu
from .networks.mobilenet import MobileNetV2Expert
from .networks.wrn import BasicBlock, WRNHead, WRNLibrary

CL = torch.channels_last


def bn_affine(state: dict, prefix: str, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = x·scale + shift, from a state_dict's `prefix.*` entries."""
    scale = state[f"{prefix}.weight"] / torch.sqrt(state[f"{prefix}.running_var"] + eps)
    return scale, state[f"{prefix}.bias"] - state[f"{prefix}.running_mean"] * scale


@torch.no_grad()
def fold_block(state: dict, prefix: str, eps: float = 1e-5) -> dict:
    """One pre-activation BasicBlock's eval-mode arithmetic as folded tensors:
    pre = relu(x·scale1 + shift1); main = conv(pre, weight1) + bias1 (bn2 folded into conv1);
    out = shortcut + conv(relu(main), weight2), shortcut = x or conv1×1(pre, weight_short)."""
    state = {k: v.detach().float() for k, v in state.items() if k.startswith(prefix + ".")}
    scale1, shift1 = bn_affine(state, f"{prefix}.bn1", eps)
    scale2, shift2 = bn_affine(state, f"{prefix}.bn2", eps)
    part = {"scale1": scale1, "shift1": shift1, "bias1": shift2, "width": scale2.shape[0],
            "weight1": (state[f"{prefix}.conv1.weight"] * scale2.view(-1, 1, 1, 1)).contiguous(),
            "weight2": state[f"{prefix}.conv2.weight"].clone()}
    if f"{prefix}.convShortcut.weight" in state:
        part["weight_short"] = state[f"{prefix}.convShortcut.weight"].clone()
    return part


class FoldedBlock(nn.Module):
    """`groups` folded BasicBlocks side by side (grouped convolutions), from fold_block() parts.

    With several groups the 1×1 projection runs inside conv1's kernel as its centre tap (extra
    output channels [conv1 | shortcut] per group): grouped strided 1×1 convolutions are slow on
    CPUs. With one group two separate convolutions are faster (measured), so they stay apart."""

    def __init__(self, parts: list[dict], stride: int):
        super().__init__()
        self.groups, self.stride, self.width = len(parts), stride, parts[0]["width"]
        self.projection = "weight_short" in parts[0]
        self.combined = self.projection and self.groups > 1
        self.register_buffer("scale1", _cat(parts, "scale1").view(1, -1, 1, 1))
        self.register_buffer("shift1", _cat(parts, "shift1").view(1, -1, 1, 1))
        if self.combined:
            self.register_buffer("weight1", torch.cat([t for p in parts for t in (
                p["weight1"], F.pad(p["weight_short"], (1, 1, 1, 1)))]))
            self.register_buffer("bias1", torch.cat([t for p in parts for t in (
                p["bias1"], torch.zeros_like(p["bias1"]))]))
        else:
            self.register_buffer("weight1", _cat(parts, "weight1"))
            self.register_buffer("bias1", _cat(parts, "bias1"))
            if self.projection:
                self.register_buffer("weight_short", _cat(parts, "weight_short"))
        self.register_buffer("weight2", _cat(parts, "weight2"))
        for name in ("weight1", "weight2", "weight_short"):  # see _cl_weight
            if hasattr(self, name):
                setattr(self, name, _cl_weight(getattr(self, name)))

    def forward(self, x, pre=None):  # x: (B, G·C, H, W); `pre` given when already computed
        # In-place where a fresh tensor is overwritten: fewer allocations and memory passes.
        if pre is None:
            pre = torch.addcmul(self.shift1, x, self.scale1).relu_()
        out = F.conv2d(pre, self.weight1, self.bias1, self.stride, 1, groups=self.groups)
        if not self.combined:
            shortcut = x if not self.projection else \
                F.conv2d(pre, self.weight_short, None, self.stride, 0, groups=self.groups)
            return F.conv2d(out.relu_(), self.weight2, None, 1, 1, groups=self.groups).add_(shortcut)
        # channels of group g: [conv1 (W) | shortcut (W)]
        pairs = out.permute(0, 2, 3, 1).unflatten(3, (self.groups, 2, self.width))  # (B, H, W, G, 2, W)
        out = F.conv2d(_nchw(torch.relu(pairs[..., 0, :])), self.weight2, None, 1, 1, groups=self.groups)
        out_pixels = out.permute(0, 2, 3, 1).unflatten(3, (self.groups, self.width))  # a view when channels-last
        if out_pixels.is_contiguous():
            out_pixels.add_(pairs[..., 1, :])
            return out
        return out + _nchw(pairs[..., 1, :])


def _cl_weight(weight: torch.Tensor) -> torch.Tensor:
    """Convolution weights stored channels-last, the activations' layout: no per-call layout
    conversion of the weight (measured: batch-1 queries ~15 % faster on the 2-core CPU)."""
    return weight.contiguous(memory_format=CL)


def _cat(parts, key):
    return parts[0][key] if len(parts) == 1 else torch.cat([p[key] for p in parts])


class FusedWRNLibrary(nn.Module):
    """WRNLibrary in eval mode with BN folded, channels-last."""

    def __init__(self, library: WRNLibrary):
        super().__init__()
        state = library.state_dict()
        self.register_buffer("stem", _cl_weight(state["conv1.weight"].detach().float().clone()))
        self.stem_stride = library.conv1.stride[0]
        self.blocks = nn.Sequential(*[
            FoldedBlock([fold_block(state, f"{group}.layer.{j}", block.bn1.eps)], block.conv1.stride[0])
            for group in ("block1", "block2") for j, block in enumerate(getattr(library, group).layer)])

    def forward(self, x):  # (B, 3, H, W) -> (B, C, H', W') channels-last
        x = x.contiguous(memory_format=CL)
        return self.blocks(F.conv2d(x, self.stem, None, self.stem_stride, 1))

    def chunk(self, x) -> int:
        """Images per pass on CPUs (FusedTaskModel.forward). Measured on the 2-core CPU: 64-128
        CIFAR images and 32-64 Tiny-ImageNet ones are best (both libraries end at 16×16)."""
        return 64


class FoldedConvLibrary(nn.Module):
    """A Sequential library (torchvision's MobileNetV2 features) in eval mode, each BatchNorm that
    directly follows a convolution folded into it, channels-last."""

    def __init__(self, library: nn.Sequential, copy_library: bool = True):
        super().__init__()
        if copy_library:  # False: the caller hands over a library of its own (saves a deep copy)
            library = copy.deepcopy(library)
        self.net = _fold_conv_bn(library.float().eval()).to(memory_format=CL).requires_grad_(False)

    def forward(self, x):  # (B, 3, H, W) -> (B, C, H', W') channels-last
        return self.net(x.contiguous(memory_format=CL))

    def chunk(self, x) -> int:
        """Images per pass on CPUs: 4 at 224×224 (measured: batch 32 as 8×4 ~2× faster than whole)."""
        return max(1, 4 * 224 * 224 // (x.shape[-2] * x.shape[-1]))


@torch.no_grad()
def _fold_conv_bn(module: nn.Module) -> nn.Module:
    """In place: inside every Sequential, Conv2d followed by BatchNorm2d -> one Conv2d (the BN an
    Identity). Exact in eval mode, as consecutive children feed each other."""
    for child in module.children():
        _fold_conv_bn(child)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module._modules[first], module._modules[second] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return module


def fuse_library(library: nn.Module, copy_library: bool = True) -> nn.Module | None:
    """The library's fused form, or None for networks poe.fused does not know. copy_library=False
    lets the folding reuse (and change) the given modules: for a library loaded just for this."""
    if isinstance(library, WRNLibrary) and all(
            isinstance(b, BasicBlock) for g in (library.block1, library.block2) for b in g.layer):
        return FusedWRNLibrary(library).eval()
    if isinstance(library, nn.Sequential):
        return FoldedConvLibrary(library, copy_library).eval()
    return None


def block_diagonal_classifier(experts) -> tuple[torch.Tensor, torch.Tensor]:
    """The experts' classifiers (each reading its own `width` features of the concatenation) as one
    linear layer whose row r is the r-th smallest class id of the query: no gather at the end."""
    width = experts[0].fc_weight.shape[1]
    concat = [c for e in experts for c in e.classes]
    weight = torch.zeros(len(concat), len(experts) * width)
    row = 0
    for i, e in enumerate(experts):
        weight[row:row + len(e.classes), i * width:(i + 1) * width] = e.fc_weight
        row += len(e.classes)
    order = torch.argsort(torch.tensor(concat))
    return weight[order].contiguous(), torch.cat([e.fc_bias for e in experts])[order].contiguous()


class FoldedWRNExpert:
    """One WRNHead expert's folded tensors (computed once; a query only concatenates them)."""

    heads = None  # the module that runs several side by side: FusedWRNHeads, set below

    def __init__(self, state: dict, classes: list[int], stride: int = 2, eps: float = 1e-5):
        state = {k: v.detach().float() for k, v in state.items()}
        num_blocks = len({k.split(".")[2] for k in state if k.startswith("block3.layer.")})
        self.blocks = [fold_block(state, f"block3.layer.{j}", eps) for j in range(num_blocks)]
        self.strides = [stride] + [1] * (num_blocks - 1)
        self.scale, self.shift = bn_affine(state, "bn1", eps)
        self.fc_weight, self.fc_bias = state["fc.weight"].clone(), state["fc.bias"].clone()
        self.classes = list(classes)
        self.shape = (self.blocks[0]["scale1"].shape[0], self.scale.shape[0], num_blocks, stride)


class FusedWRNHeads(nn.Module):
    """n WRNHead experts in eval mode as one grouped network; logits in sorted class order."""

    def __init__(self, experts: list[FoldedWRNExpert]):
        super().__init__()
        self.n = len(experts)
        self.blocks = nn.ModuleList([FoldedBlock([e.blocks[j] for e in experts], stride)
                                     for j, stride in enumerate(experts[0].strides)])
        self.register_buffer("scale", torch.cat([e.scale for e in experts]).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.cat([e.shift for e in experts]).view(1, -1, 1, 1))
        fc_weight, fc_bias = block_diagonal_classifier(experts)
        self.register_buffer("fc_weight", fc_weight)
        self.register_buffer("fc_bias", fc_bias)

    def forward(self, features):  # (B, C, H, W) -> (B, classes sorted)
        first = self.blocks[0]
        # Each expert's own first BN over the same features, the n results side by side.
        pre = side_by_side_affine_relu(features, first.scale1, first.shift1, self.n)  # (B, n·C, H, W)
        x = first(pre if first.projection else features.repeat(1, self.n, 1, 1), pre=pre)
        for block in self.blocks[1:]:
            x = block(x)
        x = torch.relu(torch.addcmul(self.shift, x, self.scale)).mean((2, 3))  # (B, n·W)
        return F.linear(x, self.fc_weight, self.fc_bias)


FoldedWRNExpert.heads = FusedWRNHeads


class FoldedConvExpert:
    """One MobileNetV2Expert's folded tensors: 1×1 convolution with its BN as a (width, C) matrix
    and bias, and its classifier (dropout is the identity in eval mode)."""

    heads = None  # the module that runs several side by side: FusedConvHeads, set below

    def __init__(self, state: dict, classes: list[int], eps: float = 1e-5):
        state = {k: v.detach().float() for k, v in state.items()}
        scale, shift = bn_affine(state, "bn", eps)
        self.weight = (state["conv.weight"].flatten(1) * scale[:, None]).contiguous()
        self.bias = shift
        self.fc_weight, self.fc_bias = state["fc.weight"].clone(), state["fc.bias"].clone()
        self.classes = list(classes)
        self.shape = tuple(self.weight.shape)


class FusedConvHeads(nn.Module):
    """n MobileNetV2 experts in eval mode: one matrix product over the library's channels for all
    experts' 1×1 convolutions, ReLU6, pooling, block-diagonal classifier in sorted class order."""

    def __init__(self, experts: list[FoldedConvExpert]):
        super().__init__()
        self.register_buffer("weight", torch.cat([e.weight for e in experts]))
        self.register_buffer("bias", torch.cat([e.bias for e in experts]))
        fc_weight, fc_bias = block_diagonal_classifier(experts)
        self.register_buffer("fc_weight", fc_weight)
        self.register_buffer("fc_bias", fc_bias)

    def forward(self, features):  # (B, C, H, W) -> (B, classes sorted)
        pixels = features.permute(0, 2, 3, 1)  # (B, H, W, C): a contiguous view when channels-last
        hidden = F.linear(pixels, self.weight, self.bias).clamp_(0, 6)  # ReLU6, (B, H, W, n·width)
        return F.linear(hidden.mean((1, 2)), self.fc_weight, self.fc_bias)


FoldedConvExpert.heads = FusedConvHeads


class FusedTaskModel(nn.Module):
    """Drop-in for TaskModel (same outputs, `class_ids`, `tasks`, `expert_classes`), faster."""

    def __init__(self, library: nn.Module, experts: list, tasks: list[str] | None = None,
                 shared_library: bool = False):
        super().__init__()
        # shared_library: `library` is also held by poe.realtime's cache and other queries' models;
        # it is copied (shallowly) the first time this model is converted (.to, .double, ...).
        self._shared_library = shared_library
        if not compatible(experts):
            raise ValueError("fused experts must be of one kind and shape (in_channels, width, depth, stride)")
        concat = torch.tensor([c for e in experts for c in e.classes], dtype=torch.long)
        if len(set(concat.tolist())) != len(concat):
            raise ValueError("experts' class lists overlap")
        self.library = library
        self.heads = type(experts[0]).heads(experts)
        self.register_buffer("class_ids", concat.sort().values, persistent=False)
        self.tasks = list(tasks) if tasks else [f"expert{i}" for i in range(len(experts))]
        self.expert_classes = [list(e.classes) for e in experts]

    def forward(self, x):  # (B, 3, H, W) -> (B, classes sorted)
        # Large batches run in chunks whose activations stay in the CPU caches (measured on the
        # 2-core EPYC: CIFAR batch 256 as 4×64 is ~20% faster, ImageNet batch 32 as 8×4 ~2×).
        # Images are independent in eval mode, so the logits are the same; an exported program
        # takes the plain path.
        chunk = self.library.chunk(x)
        if not torch.compiler.is_exporting() and x.device.type == "cpu" and x.shape[0] > chunk:
            return torch.cat([self.heads(self.library(part)) for part in x.split(chunk)])
        return self.heads(self.library(x))

    def _apply(self, fn, *args, **kwargs):  # behind .to(), .cuda(), .double(), ...: copy on write
        if self._shared_library:
            self.library, self._shared_library = shallow_clone(self.library), False
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        if self._shared_library:
            if self.library.training == mode:  # the cached library is kept in eval mode throughout
                self.training = mode
                self.heads.train(mode)
                return self
            self.library, self._shared_library = shallow_clone(self.library), False
        return super().train(mode)


def shallow_clone(module: nn.Module) -> nn.Module:
    """A new module tree holding the same tensors: moving or re-registering things on the clone
    leaves the original alone (weights are shared read-only, as a cache of folded pieces needs)."""
    clone = module.__class__.__new__(module.__class__)
    clone.__dict__ = module.__dict__.copy()
    # New Parameter objects over the same storage: `.double()` and the like assign `param.data`
    # in place, which would otherwise convert the cached original too.
    clone._parameters = {k: None if p is None else nn.Parameter(p.detach(), p.requires_grad)
                         for k, p in module._parameters.items()}
    clone._buffers = dict(module._buffers)
    clone._modules = {k: shallow_clone(m) if m is not None else None for k, m in module._modules.items()}
    return clone


@torch.no_grad()
def fold_expert(expert: nn.Module, classes: list[int], state: dict | None = None):
    """The expert's folded form (WRNHead, MobileNetV2Expert), or None for other networks. With
    `state`, the weights come from it and `expert` only gives the architecture (strides, eps)."""
    state = expert.state_dict() if state is None else state
    if isinstance(expert, WRNHead) and all(isinstance(b, BasicBlock) for b in expert.block3.layer):
        first = expert.block3.layer[0]
        return FoldedWRNExpert(state, classes, first.conv1.stride[0], first.bn1.eps)
    if isinstance(expert, MobileNetV2Expert):
        return FoldedConvExpert(state, classes, expert.bn.eps)
    return None


def compatible(folded: list) -> bool:
    """Folded experts that can run side by side: all known, of one kind and one shape."""
    return bool(folded) and all(e is not None for e in folded) and len({(type(e), e.shape) for e in folded}) == 1


@torch.no_grad()
def fuse(model: TaskModel) -> nn.Module:
    """The fused form of a TaskModel, or the TaskModel itself when its networks cannot fuse."""
    folded = [fold_expert(e, c) for e, c in zip(model.experts, model.expert_classes)]
    library = fuse_library(model.library) if compatible(folded) else None
    if library is None:
        return model
    device = next(model.parameters()).device
    return FusedTaskModel(library, folded, model.tasks).to(device).eval()
