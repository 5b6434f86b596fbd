"""Attention pyramids of APNet (APNET.md 1.3-1.5).

APNet-C (channel-wise, as released; APNET.md 1.4)
    * :class:`SplitAttention` ("SAMS"): split the channels into ``radix`` groups, attend with a shared
      squeeze (GAP of the group sum -> 1x1 conv to d = max(C*r/4, 32) -> BN -> ReLU -> 1x1 conv to C),
      softmax over the group axis, merge by concatenating the re-weighted groups.
    * :class:`FrozenBiasBatchNorm2d`: BatchNorm2d whose bias stays 0 (``requires_grad=False``), after each SAMS.
    * :class:`SEAttention`: level-1 global attention, squeeze-and-excitation, reduction 8, bias-free Linears.
    * :class:`AttentionPyramidC`: level l chains SAMS(r=2^(l-1))+BN, ..., SAMS(r=2)+BN, SE (fine -> coarse,
      as released). Level 3 uses r=4 then r=2 (the released code would use r=3 twice and cannot run).

APNet-S (spatial; not released, built from APNET.md 1.5). Choices where the paper is silent:
    * the part agent is RGA-S (:class:`RGASpatial`: relation-aware global spatial attention, ratios 8/8/8,
      bias-free 1x1 convs + BN, sigmoid mask) applied to each stripe on its own (relations within the stripe);
    * level l splits the map along the height into 2^(l-1) equal stripes; every stripe has its **own** agent
      (weights not shared); the stripe masks are concatenated along the height and multiply the map;
    * levels are chained fine -> coarse like APNet-C (``coarse_to_fine`` reverses), purely multiplicative
      (no identity residual), and no extra BatchNorm after a spatial level (RGA-S already ends in BN);
    * inserted at the same five points as APNet-C (after the stem and after layer1..4);
    * hidden sizes are floored at 1 so that tiny maps (tests, stripes of one row) still build.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from apnet_edge.errors import ConfigError

ORDERS = ("fine_to_coarse", "coarse_to_fine")


class FrozenBiasBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with the bias fixed at 0 (not trainable); the weight is learnable and starts at 1."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        self.bias.requires_grad_(False)


class FrozenBiasBatchNorm1d(nn.BatchNorm1d):
    """BNNeck: BatchNorm1d with the bias fixed at 0 (not trainable), weight initialised to 1."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        self.bias.requires_grad_(False)


class SplitAttention(nn.Module):
    """SAMS split-attention over ``radix`` channel groups: (N,C,H,W) -> (N,C,H,W).

    ``d = max(C * radix // 4, 32)`` hidden units (C/2 for radix 2).
    """

    def __init__(self, channels: int, radix: int, reduction: int = 4, min_hidden: int = 32) -> None:
        super().__init__()
        if radix < 1 or channels % radix:
            raise ConfigError(f"SAMS: {channels} channels cannot be split into {radix} equal groups")
        self.channels = channels
        self.radix = radix
        self.hidden = max(channels * radix // reduction, min_hidden)
        group = channels // radix
        self.fc1 = nn.Conv2d(group, self.hidden, 1)
        self.bn = nn.BatchNorm2d(self.hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(self.hidden, channels, 1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Group weights (N, radix, C/radix): softmax over the radix axis (sums to 1 per channel)."""
        r, g = self.radix, self.channels // self.radix
        s = x.reshape(x.shape[0], r, g, x.shape[2], x.shape[3]).sum(1).mean((2, 3), keepdim=True)  # (N,g,1,1)
        a = self.fc2(self.relu(self.bn(self.fc1(s))))  # (N,C,1,1)
        return a.reshape(-1, r, g).softmax(dim=1)

    def attention_from_mean(self, m: torch.Tensor) -> torch.Tensor:
        """:meth:`attention` from the input's spatial mean ``m`` (N,C) alone (sum and mean commute): (N, C).

        Radix 2 (APNet-C level 2): a softmax over two logits is the sigmoid of their difference, so fc2 is applied as
        one (C/2 -> C/2) layer with the difference of its two halves' weights: the same function with half of fc2's
        weights to read per image (what batch 1 on a CPU pays for) and no Reshape/Softmax in the exported graph."""
        r, g = self.radix, self.channels // self.radix
        s = m.reshape(-1, r, g).sum(1)[:, :, None, None]  # (N,g,1,1)
        h = self.relu(self.bn(self.fc1(s)))
        if r == 2:
            w, b = self.fc2.weight, self.fc2.bias
            d = F.conv2d(h, w[:g] - w[g:], b[:g] - b[g:]).flatten(1)  # a_0 - a_1: (N, g)
            return torch.sigmoid(torch.cat([d, -d], 1))
        a = self.fc2(h)
        return a.reshape(-1, r, g).softmax(dim=1).reshape(-1, self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        a = self.attention(x)
        y = x.reshape(n, self.radix, c // self.radix, h, w) * a[:, :, :, None, None]
        return y.reshape(n, c, h, w)


class SEAttention(nn.Module):
    """Squeeze-and-excitation gate: x * sigmoid(W2 ReLU(W1 GAP(x))), bias-free Linears C -> C/r -> C."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """(N,C,H,W) -> (N,C) weights in (0, 1)."""
        return self.fc(x.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ConfigError(f"pyramid order must be one of {ORDERS}, found {order!r}")


class AttentionPyramidC(nn.Module):
    """APNet-C pyramid at one insertion point: (N,C,H,W) -> (N,C,H,W).

    level 0: identity; 1: SE; 2: SAMS(r=2)+BN -> SE; 3: SAMS(r=4)+BN -> SAMS(r=2)+BN -> SE
    (``fine_to_coarse``); ``coarse_to_fine`` applies the same steps in reverse order.
    """

    def __init__(self, channels: int, level: int, order: str = "fine_to_coarse", se_reduction: int = 8) -> None:
        super().__init__()
        _check_order(order)
        if not 0 <= level <= 3:
            raise ConfigError(f"attention pyramid level must be 0..3, found {level!r}")
        self.level = level
        self.order = order
        steps: list[nn.Module] = []
        for lvl in range(level, 1, -1):  # finest first
            steps.append(nn.Sequential(SplitAttention(channels, 2 ** (lvl - 1)), FrozenBiasBatchNorm2d(channels)))
        if level >= 1:
            steps.append(SEAttention(channels, se_reduction))
        if order == "coarse_to_fine":
            steps.reverse()
        self.steps = nn.Sequential(*steps)

    @property
    def applies_affine(self) -> bool:
        """Whether :meth:`forward` applies the pyramid as one affine map (fused, eval mode, level >= 1)."""
        return self.fused and not self.training and self.level >= 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.applies_affine:
            # GlobalAveragePool in ONNX (ReduceMean would not be): INT8 runtimes run it on the uint8 map directly
            scale, shift = self.affine(F.adaptive_avg_pool2d(x, 1).flatten(1))
            return x * scale[:, :, None, None] + shift[:, :, None, None]
        return self.steps(x)

    fused = False
    """Inference only: apply the whole pyramid as one per-channel affine map (see :meth:`affine`). Set by the ONNX
    exporter: the same function, but one pass over the feature map instead of five, so INT8 / bf16 runtimes lose far
    less throughput to the attention. Training, hooks on the steps and the visualisations use the step-wise path."""

    def affine(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pyramid as ``y = x * scale + shift`` per channel, from the input's spatial mean ``m`` (N,C) (eval mode).

        Exact because every step is per channel given pooled statistics: SAMS multiplies each channel by its
        softmax weight (computed from the group sums of channel means), the frozen-bias BatchNorm (running stats)
        is a per-channel affine map, and SE multiplies each channel by a gate computed from the channel means, and
        the spatial mean of a per-channel affine map of x is the same affine map of the mean of x.

        Keep the ones/zeros start: a version without it (shift None for SE only, a (C,) shift after a first SAMS
        step) made OpenVINO 2026.4 crash (SIGFPE) while compiling the INT8 export of a trained ResNet-50.
        """
        scale = torch.ones_like(m)
        shift = torch.zeros_like(m)
        for step in self.steps:
            cur = m * scale + shift  # spatial mean of this step's input
            if isinstance(step, SEAttention):
                k = step.fc(cur)
                scale, shift = scale * k, shift * k
            else:
                sams, bn = step[0], step[1]
                a = sams.attention_from_mean(cur)
                inv = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                k = a * inv
                scale, shift = scale * k, shift * k + (bn.bias - bn.running_mean * inv)
        return scale, shift


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Affinity(nn.Module):
    """Pairwise relations: (N,N_pos,c) x (N,c,N_pos) -> (N,N_pos,N_pos). A module so MAC counters can hook it."""

    def forward(self, theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return torch.bmm(theta, phi)


class RGASpatial(nn.Module):
    """RGA-S agent for a (C, height, width) map: ``mask`` gives (N,1,h,w) in (0,1); forward multiplies x by it.

    theta/phi: 1x1 conv C->C/8 (+BN, ReLU); affinity P (N_pos x N_pos); each position stacks its incoming and
    outgoing relations (2*N_pos channels) -> 1x1 conv to N_pos/8 (+BN, ReLU); plus the channel mean of a
    C->C/8 embedding; concat (1+N_pos/8) -> 1x1 conv /8 -> BN -> ReLU -> 1x1 conv to 1 -> BN -> sigmoid.
    """

    def __init__(self, channels: int, height: int, width: int, cha_ratio: int = 8, spa_ratio: int = 8,
                 down_ratio: int = 8) -> None:
        super().__init__()
        self.height, self.width = height, width
        n = height * width
        inter_c = max(channels // cha_ratio, 1)
        inter_s = max(n // spa_ratio, 1)
        joint = 1 + inter_s
        self.theta = _conv_bn_relu(channels, inter_c)
        self.phi = _conv_bn_relu(channels, inter_c)
        self.affinity = Affinity()
        self.relation = _conv_bn_relu(2 * n, inter_s)
        self.embed = _conv_bn_relu(channels, inter_c)
        hidden = max(joint // down_ratio, 1)
        self.score = nn.Sequential(nn.Conv2d(joint, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                                   nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1, bias=False), nn.BatchNorm2d(1))

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """(N,C,h,w) -> (N,1,h,w) spatial attention in (0, 1)."""
        h, w = self.height, self.width
        n = h * w
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (N, n, c')
        phi = self.phi(x).flatten(2)  # (N, c', n)
        rel = self.affinity(theta, phi)  # (N, n, n): rel[:, i, j] = relation from i to j
        joint = torch.cat([rel.transpose(1, 2), rel], dim=1).reshape(-1, 2 * n, h, w)
        joint = self.relation(joint)
        g = self.embed(x).mean(dim=1, keepdim=True)
        return torch.sigmoid(self.score(torch.cat([g, joint], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask(x)


class StripeAttention(nn.Module):
    """One APNet-S level: ``parts`` height stripes, one RGA-S agent each; masks concatenated along the height."""

    def __init__(self, channels: int, height: int, width: int, parts: int) -> None:
        super().__init__()
        if height % parts:
            raise ConfigError(
                f"APNet-S: a feature map of height {height} cannot be split into {parts} equal stripes; use an "
                f"input height that makes every map height divisible by {parts} (e.g. 256x128) or a lower level")
        self.parts = parts
        self.agents = nn.ModuleList(RGASpatial(channels, height // parts, width) for _ in range(parts))

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """(N,C,H,W) -> (N,1,H,W)."""
        stripes = x.chunk(self.parts, dim=2)
        return torch.cat([agent.mask(s) for agent, s in zip(self.agents, stripes)], dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask(x)


class AttentionPyramidS(nn.Module):
    """APNet-S pyramid at one insertion point with a (channels, height, width) map: (N,C,H,W) -> (N,C,H,W).

    level l chains StripeAttention with 2^(l-1), ..., 2, 1 stripes (``fine_to_coarse``); level 0 is identity.
    """

    def __init__(self, channels: int, height: int, width: int, level: int, order: str = "fine_to_coarse") -> None:
        super().__init__()
        _check_order(order)
        if not 0 <= level <= 3:
            raise ConfigError(f"attention pyramid level must be 0..3, found {level!r}")
        self.level = level
        self.order = order
        steps = [StripeAttention(channels, height, width, 2 ** (lvl - 1)) for lvl in range(level, 0, -1)]
        if order == "coarse_to_fine":
            steps.reverse()
        self.steps = nn.Sequential(*steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.steps(x)
