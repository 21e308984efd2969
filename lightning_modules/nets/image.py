"""Image networks: frozen VGG16 fc7 + Linear (NIPS 2016, ACL 2017), VGG16 conv map (DAVEnet), ResNet-50 (ResDAVEnet).

References: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015;
He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; the visually grounded speech papers cited in
the audio nets. Official image branches: dharwath/DAVEnet-pytorch `models/ImageModels.py::VGG16`,
wnhsu/ResDAVEnet-VQ `models/ImageModels.py::Resnet50`.

The backbones are written out here (rather than wrapping torchvision) so that they can be shrunk with
`width_mult` for CPU demos; their state_dict keys are torchvision's, so torchvision ImageNet weights load directly.

    net              backbone                                         head                         output
    VGG16FC7Image    VGG16 features + avgpool + fc6, fc7 (frozen)     Linear(4096, 1024)           [B, 1024]
    VGG16ConvImage   VGG16 features without the last max-pool         Conv2d(512, 1024, 3x3, p 1)  [B, 1024, H/16, W/16]
    ResNet50Image    ResNet-50 conv1 .. layer4                        Conv2d(2048, 1024, 1x1)      [B, 1024, H/32, W/32]

`pretrained`: False (random init), True (torchvision's IMAGENET1K_V1 weights; needs a download or torch's hub
cache) or the path of a local torchvision-format state dict file such as `vgg16-397923af.pth`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..core.weights import compare_keys, read_state_dict
from .common import scaled_width

# VGG16 "configuration D": conv widths, "M" = 2x2 max-pool.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_features(width_mult: float = 1.0, batch_norm: bool = False, last_pool: bool = True) -> nn.Sequential:
    """torchvision's `vgg16().features` (or `vgg16_bn`) with the same module indices, widths scaled by width_mult."""
    layers: list[nn.Module] = []
    in_ch = 3
    spec = VGG16_LAYERS if last_pool else VGG16_LAYERS[:-1]
    for v in spec:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out_ch = scaled_width(v, width_mult)
        layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
        in_ch = out_ch
    return nn.Sequential(*layers)


def _init_like_torchvision(modules) -> None:
    """torchvision's VGG / ResNet initialisation, so that training from scratch starts where theirs does."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------------------------
# Loading torchvision weights


def _torchvision_weights(arch: str):
    from torchvision import models

    enums = {
        "vgg16": models.VGG16_Weights,
        "vgg16_bn": models.VGG16_BN_Weights,
        "resnet18": models.ResNet18_Weights,
        "resnet34": models.ResNet34_Weights,
        "resnet50": models.ResNet50_Weights,
    }
    return enums[arch].IMAGENET1K_V1


def read_torchvision_state_dict(pretrained: bool | str | os.PathLike, arch: str) -> tuple[dict[str, Tensor], str]:
    """The ImageNet state dict of torchvision's `arch` (download or hub cache) or of a local file, and its source."""
    if pretrained is True:
        weights = _torchvision_weights(arch)
        try:
            return dict(weights.get_state_dict(progress=False)), weights.url
        except Exception as err:  # no network, proxy, corrupt cache: all end the same way for the user
            filename = weights.url.rsplit("/", 1)[-1]
            raise RuntimeError(
                f"could not get torchvision's ImageNet weights for {arch} from {weights.url} ({err}). "
                f"Download {filename} on a machine with internet access and pass its path instead: "
                f"--model.pretrained_image /path/to/{filename} on the command line, pretrained='/path/to/{filename}' "
                f"in Python (or put it in torch's hub cache, {torch.hub.get_dir()}/checkpoints); "
                "--model.pretrained_image false trains the image net from scratch."
            ) from err
    path = os.fspath(pretrained)
    return read_state_dict(path, "pretrained weights file"), path


def load_backbone_weights(
    net: nn.Module, state: Mapping[str, Tensor], source: str, skip_own: tuple[str, ...], skip_file: tuple[str, ...]
) -> None:
    """Copy torchvision weights into `net`'s backbone; a clear error for any missing, surplus or misshaped key.

    `skip_own`: prefixes of `net`'s keys that the file does not hold (the new head); `skip_file`: prefixes of file
    keys we drop on purpose (torchvision's classifier). BatchNorm's `num_batches_tracked` may be absent (old files).
    """
    own = {k: v for k, v in net.state_dict().items() if not k.startswith(skip_own)}
    given = {k: v for k, v in state.items() if not k.startswith(skip_file)}
    diff = compare_keys(own, given)
    missing, surplus = diff.missing, diff.unexpected
    misshaped = [f"{k} {theirs} vs {ours}" for k, theirs, ours in diff.misshaped]
    if diff:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys (e.g. {missing[:4]})")
        if surplus:
            problems.append(f"{len(surplus)} unexpected keys (e.g. {surplus[:4]})")
        if misshaped:
            problems.append(f"{len(misshaped)} keys with another shape (file vs model, e.g. {misshaped[:3]})")
        raise ValueError(
            f"{source}: does not match {type(net).__name__}'s backbone: " + "; ".join(problems)
            + ". Expected a torchvision-format state dict of the same architecture at width_mult=1."
        )
    net.load_state_dict(given, strict=False)


def _check_pretrained_size(pretrained, width_mult: float, net: str) -> None:
    if pretrained is not False and width_mult != 1.0:
        raise ValueError(f"{net}: pretrained weights exist only for width_mult=1.0, got width_mult={width_mult}")


# ----------------------------------------------------------------------------------------------------------------
# NIPS 2016 / ACL 2017


class VGG16FC7Image(nn.Module):
    """Frozen VGG16 up to the fc7 ReLU (4096-d), then a trainable Linear to `embedding_dim`. Output [B, D].

    The backbone's keys are torchvision's `features.*`, `classifier.0.*` (fc6) and `classifier.3.*` (fc7); the head
    is `embedder`. With `freeze=True` (the papers' setting) the backbone has requires_grad=False, runs without
    autograd and stays in eval mode (no dropout, fixed BatchNorm) even when the parent calls `.train()`.
    The output is not normalised (NIPS 2016 normalises only the speech side).
    """

    pooled = True

    def __init__(
        self,
        embedding_dim: int = 1024,
        pretrained: bool | str = False,
        freeze: bool = True,
        width_mult: float = 1.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        _check_pretrained_size(pretrained, width_mult, type(self).__name__)
        self.embedding_dim = embedding_dim
        self.freeze = freeze
        self.features = vgg16_features(width_mult, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        conv_ch, fc_ch = scaled_width(512, width_mult), scaled_width(4096, width_mult)
        self.classifier = nn.Sequential(  # torchvision's indices: fc6, ReLU, Dropout, fc7, ReLU (fc8 dropped)
            nn.Linear(conv_ch * 7 * 7, fc_ch),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(fc_ch, fc_ch),
            nn.ReLU(inplace=True),
        )
        _init_like_torchvision(self.modules())
        self.embedder = nn.Linear(fc_ch, embedding_dim)
        if pretrained is not False:
            arch = "vgg16_bn" if batch_norm else "vgg16"
            state, source = read_torchvision_state_dict(pretrained, arch)
            load_backbone_weights(self, state, source, skip_own=("embedder.",), skip_file=("classifier.6.",))
        if freeze:
            for p in [*self.features.parameters(), *self.classifier.parameters()]:
                p.requires_grad_(False)
            self.train(self.training)

    def train(self, mode: bool = True) -> VGG16FC7Image:
        super().train(mode)
        if self.freeze:  # a frozen feature extractor stays deterministic: no dropout, no BatchNorm updates
            self.features.eval()
            self.classifier.eval()
        return self

    def fc7(self, image: Tensor) -> Tensor:
        """The fc7 features [B, 4096] of the backbone."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            x = self.avgpool(self.features(image))
            return self.classifier(torch.flatten(x, 1))

    def forward(self, image: Tensor) -> Tensor:
        return self.embedder(self.fc7(image))


# ----------------------------------------------------------------------------------------------------------------
# DAVEnet


class VGG16ConvImage(nn.Module):
    """VGG16 conv layers without the last max-pool, then a 3x3 conv to `embedding_dim` (no nonlinearity).

    Output [B, embedding_dim, H/16, W/16] (14 x 14 at 224 px). Keys: `features.0..28` as torchvision's
    `vgg16().features` (`features.0..42` with `batch_norm=True`, as `vgg16_bn`), the head `embedder`.
    The official DAVEnet-pytorch keys `image_model.N` map onto these in `lightning_modules.convert`.
    Parameters at paper size: 19,434,304.
    """

    pooled = False

    def __init__(
        self,
        embedding_dim: int = 1024,
        pretrained: bool | str = False,
        width_mult: float = 1.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        _check_pretrained_size(pretrained, width_mult, type(self).__name__)
        self.embedding_dim = embedding_dim
        self.features = vgg16_features(width_mult, batch_norm, last_pool=False)
        _init_like_torchvision(self.modules())
        self.embedder = nn.Conv2d(scaled_width(512, width_mult), embedding_dim, kernel_size=3, padding=1)
        if pretrained is not False:
            arch = "vgg16_bn" if batch_norm else "vgg16"
            state, source = read_torchvision_state_dict(pretrained, arch)
            load_backbone_weights(self, state, source, skip_own=("embedder.",), skip_file=("classifier.",))

    def forward(self, image: Tensor) -> Tensor:
        return self.embedder(self.features(image))


# ----------------------------------------------------------------------------------------------------------------
# ResDAVEnet


class BasicBlock(nn.Module):
    """ResNet-18/34 block: 3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> BN -> + shortcut -> ReLU."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """ResNet-50 block (torchvision's "v1.5": the stride sits on the 3x3 conv): 1x1 -> 3x3 -> 1x1 (x4 channels)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))


RESNET_ARCHS = {  # block type and blocks per stage
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet50Image(nn.Module):
    """ResNet-50 without avgpool and fc, then a 1x1 conv `embedder` to `embedding_dim`. Output [B, D, H/32, W/32].

    Backbone keys equal torchvision's `resnet50()` without `fc.*`, so its ImageNet weights and the official
    ResDAVEnet-VQ image checkpoints (after stripping `module.`) load directly. Parameters at paper size: 25,606,208.

    CPU presets: `arch="resnet18"` / `"resnet34"` swap in those torchvision layouts (and weights), and
    `width_mult` scales every stage's width (64, 128, 256, 512 planes; random init only), e.g.
    `arch="resnet18", width_mult=0.125` has 0.18 M backbone parameters.
    """

    pooled = False

    def __init__(
        self,
        embedding_dim: int = 1024,
        pretrained: bool | str = False,
        arch: str = "resnet50",
        width_mult: float = 1.0,
    ):
        super().__init__()
        if arch not in RESNET_ARCHS:
            raise ValueError(f"arch must be one of {sorted(RESNET_ARCHS)}, got {arch!r}")
        _check_pretrained_size(pretrained, width_mult, type(self).__name__)
        self.embedding_dim = embedding_dim
        block, depths = RESNET_ARCHS[arch]
        stem = scaled_width(64, width_mult)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = stem
        for i, depth in enumerate(depths):
            planes = scaled_width(64 * 2**i, width_mult)
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(depth):
                blocks.append(block(in_ch, planes, stride if j == 0 else 1))
                in_ch = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        _init_like_torchvision(self.modules())
        self.embedder = nn.Conv2d(in_ch, embedding_dim, kernel_size=1)
        if pretrained is not False:
            state, source = read_torchvision_state_dict(pretrained, arch)
            load_backbone_weights(self, state, source, skip_own=("embedder.",), skip_file=("fc.",))

    def backbone(self, image: Tensor) -> Tensor:
        """layer4 features [B, 2048, H/32, W/32] (512 channels for resnet18/34)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(image))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, image: Tensor) -> Tensor:
        return self.embedder(self.backbone(image))
