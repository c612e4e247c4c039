"""Architectures for benchmarks/predictor.py, written out in torch (random weights; torchvision is not
installable beside torch 2.13): MobileNetV1/V2 and SqueezeNet 1.0 as published, and small networks of
several families (plain, residual, bottleneck, depthwise, inverted residual, SE, wide, narrow, fire, MLP).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


def cbr(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: type = nn.ReLU6) -> nn.Sequential:
    """Conv + BatchNorm + activation."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act())


class Head(nn.Sequential):
    """Global average pool, flatten, linear classifier."""

    def __init__(self, cin: int, classes: int = 1000) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def mobilenet_v1(width: float = 1.0, classes: int = 1000) -> nn.Module:
    """MobileNetV1 (Howard et al. 2017): 13 depthwise-separable blocks."""
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    c = int(32 * width)
    layers = [cbr(3, c, 3, 2)]
    for out, s in cfg:
        o = int(out * width)
        layers += [cbr(c, c, 3, s, groups=c), cbr(c, o, 1)]
        c = o
    return nn.Sequential(*layers, Head(c, classes))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project (+ residual when shapes match)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, se: bool = False,
                 act: type = nn.ReLU6) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [cbr(cin, hidden, 1, act=act)] if expand != 1 else []
        layers += [cbr(hidden, hidden, 3, stride, groups=hidden, act=act)]
        if se:
            layers.append(SqueezeExcite(hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(width: float = 1.0, classes: int = 1000, se: bool = False, act: type = nn.ReLU6) -> nn.Module:
    """MobileNetV2 (Sandler et al. 2018); ``se``/``act`` give a MobileNetV3-flavoured variant."""
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    c = int(32 * width)
    layers: list[nn.Module] = [cbr(3, c, 3, 2, act=act)]
    for t, out, n, s in cfg:
        o = int(out * width)
        for i in range(n):
            layers.append(InvertedResidual(c, o, s if i == 0 else 1, t, se=se, act=act))
            c = o
    last = max(1280, int(1280 * width))
    return nn.Sequential(*layers, cbr(c, last, 1, act=act), Head(last, classes))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: channel gates from a global pool."""

    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(c, max(8, c // r), 1), nn.ReLU(), nn.Conv2d(max(8, c // r), c, 1),
                                nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(self.pool(x))


class Fire(nn.Module):
    """SqueezeNet fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat([self.e1(x), self.e3(x)], 1)


def squeezenet(classes: int = 1000) -> nn.Module:
    """SqueezeNet 1.0 (Iandola et al. 2016)."""
    return nn.Sequential(
        nn.Conv2d(3, 96, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        Fire(96, 16, 64), Fire(128, 16, 64), Fire(128, 32, 128), nn.MaxPool2d(3, 2),
        Fire(256, 32, 128), Fire(256, 48, 192), Fire(384, 48, 192), Fire(384, 64, 256), nn.MaxPool2d(3, 2),
        Fire(512, 64, 256), nn.Conv2d(512, classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class Basic(nn.Module):
    """ResNet basic block (two 3x3 convolutions) with a projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(cbr(cin, cout, 3, stride, act=nn.ReLU), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck block: 1x1 reduce, 3x3, 1x1 expand, residual."""

    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.body = nn.Sequential(cbr(c, mid, 1, act=nn.ReLU), cbr(mid, mid, 3, act=nn.ReLU),
                                  nn.Conv2d(mid, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def resnet_small(widths: tuple[int, ...] = (32, 64, 128), blocks: int = 2, classes: int = 100) -> nn.Module:
    """A small ResNet of basic blocks."""
    layers: list[nn.Module] = [cbr(3, widths[0], 3, 2, act=nn.ReLU)]
    c = widths[0]
    for i, w in enumerate(widths):
        for j in range(blocks):
            layers.append(Basic(c, w, 2 if (j == 0 and i > 0) else 1))
            c = w
    return nn.Sequential(*layers, Head(c, classes))


def vgg_small(widths: tuple[int, ...] = (32, 64, 128, 128), classes: int = 100) -> nn.Module:
    """Plain VGG-style stack: two 3x3 convolutions per stage, max-pooling between stages."""
    layers: list[nn.Module] = []
    c = 3
    for w in widths:
        layers += [cbr(c, w, act=nn.ReLU), cbr(w, w, act=nn.ReLU), nn.MaxPool2d(2)]
        c = w
    return nn.Sequential(*layers, Head(c, classes))


def bottleneck_net(c: int = 128, mid: int = 32, blocks: int = 4, classes: int = 100) -> nn.Module:
    """Stem then a stack of bottleneck blocks at one resolution."""
    return nn.Sequential(cbr(3, c, 3, 2, act=nn.ReLU), *[Bottleneck(c, mid) for _ in range(blocks)], Head(c, classes))


def se_resnet(widths: tuple[int, ...] = (32, 64, 128), classes: int = 100) -> nn.Module:
    """Basic blocks each followed by squeeze-and-excitation."""
    layers: list[nn.Module] = [cbr(3, widths[0], 3, 2, act=nn.ReLU)]
    c = widths[0]
    for i, w in enumerate(widths):
        layers += [Basic(c, w, 2 if i > 0 else 1), SqueezeExcite(w)]
        c = w
    return nn.Sequential(*layers, Head(c, classes))


def plain_stack(c: int = 64, depth: int = 4, classes: int = 10) -> nn.Module:
    """A stem and ``depth`` 3x3 convolutions of ``c`` channels at one resolution."""
    return nn.Sequential(cbr(3, c, 3, 2, act=nn.ReLU), *[cbr(c, c, act=nn.ReLU) for _ in range(depth)],
                         Head(c, classes))


def dw_stack(widths: tuple[int, ...] = (32, 64, 128, 256), classes: int = 10) -> nn.Module:
    """Depthwise-separable stages with stride 2 between them."""
    layers: list[nn.Module] = [cbr(3, widths[0], 3, 2)]
    c = widths[0]
    for w in widths:
        layers += [cbr(c, c, 3, 2 if c != w else 1, groups=c), cbr(c, w, 1), cbr(w, w, 3, groups=w), cbr(w, w, 1)]
        c = w
    return nn.Sequential(*layers, Head(c, classes))


def mlp(sizes: tuple[int, ...] = (3 * 32 * 32, 1024, 512, 10)) -> nn.Module:
    """Flatten then fully connected layers."""
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def squeezenet_small(classes: int = 100) -> nn.Module:
    """A small SqueezeNet-like network of fire modules (concatenations)."""
    return nn.Sequential(nn.Conv2d(3, 64, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2), Fire(64, 16, 64), Fire(128, 16, 64),
                         nn.MaxPool2d(3, 2), Fire(128, 32, 128), Fire(256, 32, 128), nn.Conv2d(256, classes, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


class DenseConcat(nn.Module):
    """DenseNet-like: each 3x3 conv (hard-swish) sees the concatenation of all earlier outputs."""

    def __init__(self, c0: int = 32, growth: int = 16, n: int = 4) -> None:
        super().__init__()
        self.stem = cbr(3, c0, 3, 2, act=nn.Hardswish)
        self.convs = nn.ModuleList(cbr(c0 + i * growth, growth, act=nn.Hardswish) for i in range(n))
        self.head = Head(c0 + n * growth, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.stem(x)]
        for conv in self.convs:
            feats.append(conv(torch.cat(feats, 1)))
        return self.head(torch.cat(feats, 1))


def dense_concat() -> nn.Module:
    """A DenseNet-like block with hard-swish activations."""
    return DenseConcat()


def se_plain(c: int = 48, depth: int = 3, classes: int = 10) -> nn.Module:
    """A plain stack of 3x3 convolutions, each followed by squeeze-and-excitation."""
    layers: list[nn.Module] = [cbr(3, c, 3, 2, act=nn.ReLU)]
    for _ in range(depth):
        layers += [cbr(c, c, act=nn.ReLU), SqueezeExcite(c)]
    return nn.Sequential(*layers, Head(c, classes))


def vgg_fc_head(classes: int = 100) -> nn.Module:
    """VGG-style convolutions with a large fully connected head (8192 -> 2048 -> classes)."""
    body = vgg_small((32, 64, 128))
    return nn.Sequential(*list(body.children())[:-1], nn.Flatten(), nn.Linear(128 * 8 * 8, 2048), nn.ReLU(),
                         nn.Linear(2048, classes))


def pointwise_stack(act: type = nn.ReLU, se: bool = False) -> nn.Module:
    """Stem, then a 1x1 expansion to 128 channels (optionally gated by squeeze-and-excitation) and a
    1x1 projection: an op micro-benchmark whose cost beyond the convolutions is the activation's or the
    gate's."""
    return nn.Sequential(cbr(3, 32, 3, 2, act=act), cbr(32, 128, 1, act=act), *([SqueezeExcite(128)] if se else []),
                         cbr(128, 32, 1, act=act), Head(32, 10))


def pool_stack(widths: tuple[int, ...] = (16, 32, 64)) -> nn.Module:
    """One 3x3 convolution per stage, each followed by 2x2 max-pooling (an op micro-benchmark for pooling)."""
    layers: list[nn.Module] = []
    c = 3
    for w in widths:
        layers += [cbr(c, w, act=nn.ReLU), nn.MaxPool2d(2)]
        c = w
    return nn.Sequential(*layers, Head(c, 10))


class TwoBranchConcat(nn.Module):
    """A 1x1 and a 3x3 branch of the same input, concatenated (an op micro-benchmark for concatenation)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = cbr(c, c, 1, act=nn.ReLU), cbr(c, c, 3, act=nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], 1)


def branch_concat(c: int = 32) -> nn.Module:
    """Stem, one two-branch concatenation block, head."""
    return nn.Sequential(cbr(3, c, 3, 2, act=nn.ReLU), TwoBranchConcat(c), Head(2 * c, 10))


def _divisible(v: float, d: int = 8) -> int:
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


class V3Block(nn.Module):
    """MobileNetV3 bottleneck: 1x1 expand (skipped when exp == cin), kxk depthwise, SE, 1x1 project."""

    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, act: type, stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [cbr(cin, exp, 1, act=act)] if exp != cin else []
        layers.append(cbr(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(V3SqueezeExcite(exp, _divisible(exp // 4)))
        layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class V3SqueezeExcite(nn.Module):
    """MobileNetV3's SE: global pool, 1x1 squeeze + ReLU, 1x1 excite + hard-sigmoid, multiply."""

    def __init__(self, c: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(c, squeeze, 1), nn.ReLU(), nn.Conv2d(squeeze, c, 1), nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(self.pool(x))


_V3_LARGE = [(3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
             (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
             (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
             (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
             (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1)]
_V3_SMALL = [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
             (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
             (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
             (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)]


def mobilenet_v3(large: bool = True, classes: int = 1000) -> nn.Module:
    """MobileNetV3 Large or Small (Howard et al. 2019, Table 1 and 2), as torchvision defines it."""
    cfg, last, hidden = (_V3_LARGE, 960, 1280) if large else (_V3_SMALL, 576, 1024)
    layers: list[nn.Module] = [cbr(3, 16, 3, 2, act=nn.Hardswish)]
    c = 16
    for k, exp, out, se, nl, s in cfg:
        layers.append(V3Block(c, k, exp, out, se, nn.ReLU if nl == "RE" else nn.Hardswish, s))
        c = out
    layers += [cbr(c, last, 1, act=nn.Hardswish), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, hidden),
               nn.Hardswish(), nn.Linear(hidden, classes)]
    return nn.Sequential(*layers)


# name -> (factory, input side). The two sets share no architecture; the calibration set covers the
# op types the evaluation set uses (3x3/1x1/depthwise convolutions, adds, SE gates, concatenations,
# hard-swish, fully connected layers in and out of cache).
CALIBRATION = {
    "plain_stack_c64_s64": (lambda: plain_stack(64, 4), 64),
    "bottleneck_c128_s64": (lambda: bottleneck_net(128, 32, 4), 64),
    "dw_stack_s96": (lambda: dw_stack(), 96),
    "mlp_3072_1024": (lambda: mlp(), 32),
    "plain_stack_c16_s128": (lambda: plain_stack(16, 3), 128),
    "plain_stack_c256_s32": (lambda: plain_stack(256, 2), 32),
    "dense_concat_hswish_s64": (lambda: dense_concat(), 64),
    "se_plain_c48_s64": (lambda: se_plain(), 64),
    "mlp_3072_4096_2048": (lambda: mlp((3 * 32 * 32, 4096, 2048, 10)), 32),
    # op micro-benchmarks: each isolates one op type the networks above mix with others, so that the
    # fit cannot trade one op's cost for another's (int8 hard-swish, SE gates, concatenation, max-pooling)
    "pointwise_relu_s64": (lambda: pointwise_stack(nn.ReLU), 64),
    "pointwise_hswish_s64": (lambda: pointwise_stack(nn.Hardswish), 64),
    "pointwise_se_s64": (lambda: pointwise_stack(nn.ReLU, se=True), 64),
    "branch_concat_s64": (lambda: branch_concat(), 64),
    "pool_stack_s128": (lambda: pool_stack(), 128),
}
EVALUATION = {
    "vgg_small_s64": (lambda: vgg_small(), 64),
    "resnet_small_s96": (lambda: resnet_small(), 96),
    "se_resnet_s64": (lambda: se_resnet(), 64),
    "mobilenet_v1_x0.5_s128": (lambda: mobilenet_v1(0.5, 100), 128),
    "mobilenet_v2_x1.0_s128": (lambda: mobilenet_v2(1.0, 100), 128),
    "mnv3_like_se_hswish_s112": (lambda: mobilenet_v2(0.75, 100, se=True, act=nn.Hardswish), 112),
    "wide_resnet_c256_s32": (lambda: resnet_small((128, 256), 2), 32),
    "narrow_vgg_c8_s160": (lambda: vgg_small((8, 16, 16, 32)), 160),
    "squeezenet_small_s96": (lambda: squeezenet_small(), 96),
    "vgg_fc_head_s64": (lambda: vgg_fc_head(), 64),
}
