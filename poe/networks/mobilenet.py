"""ImageNet networks of the PoE paper, over torchvision's models.

  Oracle          torchvision WideResNet-101-2 (Zagoruyko & Komodakis 2016; He et al. 2016)
  library student torchvision MobileNetV2 (Sandler et al., CVPR 2018)
  library         MobileNetV2 `features[:-1]`: image -> 320 channels (7×7 for 224×224 inputs)
  student head    the rest of MobileNetV2: features[-1] (1×1 conv 320→1280) + pool + dropout + fc
  expert          1×1 conv 320→80 + BN + ReLU6 + global average pool + dropout 0.2 + fc

Both Oracle and library student come pretrained (torchvision's IMAGENET1K_V1 weights, the ones
of the paper's time, trained for resize-256/crop-224 inputs), so `pretrained = True` tells the
preprocessing to load them instead of training them.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import checkpoint
from ..errors import PoEError


class MobileNetV2Head(nn.Module):
    """MobileNetV2 after features[:-1]: `conv` (= features[-1]) -> pool -> `classifier`."""

    def __init__(self, conv: nn.Module, classifier: nn.Module):
        super().__init__()
        self.conv, self.classifier = conv, classifier

    def forward(self, features):  # (B, 320, H, W) -> (B, num_classes)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.conv(features), 1), 1))


class MobileNetV2Expert(nn.Module):
    """1×1 conv in→width + BN + ReLU6 + global average pool + dropout + fc."""

    def __init__(self, in_channels: int, width: int, num_classes: int, dropout: float = 0.2):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)
        # torchvision's MobileNetV2 initialisation
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features):  # (B, C, H, W) -> (B, num_classes)
        out = F.relu6(self.bn(self.conv(features)))
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)))


class MobileNetV2Architecture:
    """Same methods as WRNArchitecture; networks are torchvision's, weights pretrained."""

    pretrained = True
    library_channels = 320

    def __init__(self, num_classes: int = 1000, expert_width: int = 80, oracle: str = "wide_resnet101_2",
                 student: str = "mobilenet_v2"):
        self.num_classes, self.expert_width = num_classes, expert_width
        self.names = {"oracle": oracle, "student": student}

    def _build(self, kind: str) -> nn.Module:
        import torchvision

        return torchvision.models.get_model(self.names[kind], weights=None, num_classes=self.num_classes)

    def oracle(self):
        return self._build("oracle")

    def student(self):
        return self._build("student")

    def library(self):
        return self.student().features[:-1]

    def student_head(self):
        student = self.student()
        return MobileNetV2Head(student.features[-1], student.classifier)

    def expert(self, num_classes: int):
        return MobileNetV2Expert(self.library_channels, self.expert_width, num_classes)

    def split_student(self, state: dict):
        """MobileNetV2 state_dict -> (library state: features.0-17 as 0-17, head state: conv, classifier)."""
        last = f"features.{len(self.student().features) - 1}."
        library = {k[len("features."):]: v for k, v in state.items()
                   if k.startswith("features.") and not k.startswith(last)}
        head = {("conv." + k[len(last):] if k.startswith(last) else k): v for k, v in state.items()
                if k.startswith(last) or k.startswith("classifier.")}
        return library, head

    def describe(self) -> dict:
        return {"oracle": f"torchvision {self.names['oracle']}",
                "library": f"torchvision {self.names['student']} features[:-1] ({self.library_channels} ch)",
                "expert": f"1x1 conv {self.library_channels}->{self.expert_width} + BN + ReLU6 + pool + dropout 0.2 + FC"}

    # -- pretrained weights ------------------------------------------------------------------------
    def weights_enum(self, kind: str):
        import torchvision

        return torchvision.models.get_model_weights(self.names[kind]).IMAGENET1K_V1

    def cached_weights_path(self, kind: str) -> Path:
        """Where torchvision keeps the downloaded file (torch.hub's cache, $TORCH_HOME)."""
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(self.weights_enum(kind).url).path).name

    def load_pretrained(self, kind: str, path: str | Path | None = None, download: bool = False) -> nn.Module:
        """The Oracle ("oracle") or library student ("student") with pretrained weights from, in
        order: `path`; torchvision's cache; a download, only when `download` is set."""
        what = f"{'Oracle' if kind == 'oracle' else 'library student'} ({self.names[kind]})"
        model = self._build(kind)
        source = Path(path) if path else self.cached_weights_path(kind)
        if path or source.is_file():
            state, _ = checkpoint.state_and_meta(checkpoint.read(source), source, kind)
        elif download:
            try:
                state = self.weights_enum(kind).get_state_dict(progress=True)
            except Exception as exc:
                raise PoEError(f"could not download the {what} weights: {exc}") from None
        else:
            raise PoEError(f"no pretrained weights for the {what}: {source} is absent; rerun with --download "
                           f"(fetches torchvision's {self.weights_enum(kind)}) or pass --weights {kind}=PATH")
        checkpoint.load_into(model, state, source, what)
        print(f"[{kind}] pretrained {self.names[kind]} from {source}")
        return model.eval()
