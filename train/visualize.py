"""Attention of APNet's pyramid levels on person crops, like Figure 1 of the supplementary material
(``apnet-edge visualize attention``). One figure row per image: the crop, then one overlay per pyramid level
(level 1, level 2, ... as many as the model has; a level-0 model has no attention and is refused).

What a level's map is (``method``):

* ``mask`` (default for **APNet-S**): the spatial mask the level itself multiplies the feature map by, i.e. the
  sigmoid output of its RGA-S agents, one per height stripe (1 stripe at level 1, 2 at level 2, ...),
  concatenated along the height (:meth:`train.models.attention.StripeAttention.mask`). Nothing is derived.
* ``attention-cam`` (default for **APNet-C**): a channel attention has no spatial map of its own, it re-weights
  whole channels: O = w * X (SE: a sigmoid gate per channel; SAMS: a softmax over the channel groups). Plain
  Grad-CAM (``gradcam`` below) of O is unchanged by a per-channel rescaling (the gradient scales inversely), so
  the maps after consecutive levels come out nearly identical (correlation 0.92-0.999 measured on the demo
  model) and cannot show what a level adds. This method therefore applies Grad-CAM to the part of the feature
  that the level's attention contributes beyond a uniform weighting, D = (w - w_bar) * X, with w_bar = 1/r for
  SAMS of radix r (equal groups) and the image's mean gate for SE:
  ``map = ReLU(sum_c alpha_c D_c)``, ``alpha_c`` = spatial mean of dS/dO_c. It is the Grad-CAM (first-order,
  channel-pooled) estimate of where the level's re-weighting raises the score. On APNet-S it uses the mask as w
  and its spatial mean as w_bar.
* ``gradcam``: Grad-CAM (Selvaraju et al., ICCV 2017) of the attention output O of each level,
  ``ReLU(sum_c alpha_c O_c)``: where the features after the level drive the score (the APNet authors answered a
  request for their visualisation code with "Grad-CAM", APNET.md issue #3). Levels look alike, see above.

The score S is identity-free, so that it works for every checkpoint (with or without a classifier) and explains
what retrieval uses: ``S = <f, stopgrad(f)>`` with f the test feature before L2 normalisation (its gradient is
the feature's own direction; the L2-normalised embedding cannot be used, its norm is constant). Levels are
chained (fine -> coarse by default), so a level's map also reflects the levels applied before it.

Where: the pyramid at one insertion point (``stage`` 0..4 = after the stem, layer1, ..., layer4) or ``"all"``
(default): the mean over the five points of the per-point maps, each upsampled to the input size and normalised
first, so that the fine early maps and the coarse deep ones both count. Every map is upsampled (bilinear) to the
model's input size and min-max normalised to [0, 1] per image and level (a constant map becomes 0): overlays
show where a level looks *relative to the rest of that crop*, not absolute attention values.

The model is only observed through forward hooks that are removed afterwards; its outputs are unchanged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from apnet_edge.errors import ApnetError, CheckpointError, ConfigError
from train.models.attention import SEAttention, SplitAttention, StripeAttention

PathLike = Union[str, Path]
STAGE_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")
METHODS = ("auto", "mask", "attention-cam", "gradcam")


def pyramid_levels(pyramid: nn.Module) -> list[tuple[int, nn.Module]]:
    """(level, attention module) of each step of one pyramid, in execution order.

    APNet-C: :class:`SEAttention` is level 1, the :class:`SplitAttention` of radix r (first module of a
    ``Sequential(SAMS, BN)`` step) is level log2(r) + 1. APNet-S: a :class:`StripeAttention` with p stripes is
    level log2(p) + 1. Each module's output is its input times its attention weights.
    """
    out: list[tuple[int, nn.Module]] = []
    for step in getattr(pyramid, "steps", []):
        if isinstance(step, SEAttention):
            out.append((1, step))
        elif isinstance(step, StripeAttention):
            out.append((int(round(math.log2(step.parts))) + 1, step))
        elif isinstance(step, nn.Sequential) and len(step) and isinstance(step[0], SplitAttention):
            out.append((int(round(math.log2(step[0].radix))) + 1, step[0]))
        else:
            raise ConfigError(f"unknown attention step {type(step).__name__} in {type(pyramid).__name__}")
    return out


def attention_weights(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights an attention module multiplies its input ``x`` (N,C,h,w) by, broadcastable to ``x``, and
    their uniform reference: SE (N,C,1,1) gate and its channel mean; SAMS (N,C,1,1) group weights and 1/radix;
    APNet-S (N,1,h,w) mask and its spatial mean."""
    if isinstance(module, SEAttention):
        w = module.gate(x)[:, :, None, None]
        return w, w.mean(dim=1, keepdim=True)
    if isinstance(module, SplitAttention):
        w = module.attention(x).reshape(x.shape[0], -1)[:, :, None, None]
        return w, torch.full_like(w[:, :1], 1.0 / module.radix)
    if isinstance(module, StripeAttention):
        w = module.mask(x)
        return w, w.mean(dim=(2, 3), keepdim=True)
    raise ConfigError(f"no attention weights for {type(module).__name__}")


def level_name(arch: str, level: int) -> str:
    """Column header of a level: what the level's attention is."""
    if arch == "apnet_s":
        parts = 2 ** (level - 1)
        return f"level {level} ({parts} stripe{'s' if parts > 1 else ''})"
    return f"level {level} ({'SE' if level == 1 else f'SAMS r={2 ** (level - 1)}'})"


@dataclass
class AttentionMaps:
    """Maps of :func:`attention_maps`: ``maps`` (N, L, H, W) float32 in [0, 1] at the model's input size, one
    per image and level, ``levels`` the L pyramid levels (ascending), ``feature_sizes`` the (h, w) of the map
    at each stage used, and ``description`` what the maps are (the figure title)."""

    maps: np.ndarray
    levels: tuple[int, ...]
    method: str
    stages: tuple[int, ...]
    feature_sizes: tuple[tuple[int, int], ...]
    description: str


def _normalise(m: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (H, W) map of an (N, L, H, W) tensor to [0, 1]; a constant map becomes 0."""
    flat = m.flatten(2)
    lo = flat.min(dim=2, keepdim=True).values
    hi = flat.max(dim=2, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 1e-12, (flat - lo) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return out.reshape(m.shape)


def _stages(stage: Union[int, str]) -> tuple[int, ...]:
    if isinstance(stage, str):
        if stage.strip().lower() == "all":
            return tuple(range(len(STAGE_NAMES)))
        try:
            stage = int(stage)
        except ValueError:
            raise ConfigError(f"stage must be 0..4 or 'all', found {stage!r}") from None
    if not 0 <= int(stage) < len(STAGE_NAMES):
        raise ConfigError(f"stage must be 0..4 ({', '.join(f'{i}={n}' for i, n in enumerate(STAGE_NAMES))}) or "
                          f"'all', found {stage!r}")
    return (int(stage),)


def _check_model(model: nn.Module) -> tuple[str, int]:
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "pyramids"):
        raise ConfigError(f"attention maps need an APNet model, found {type(model).__name__}")
    if int(cfg.level) < 1:
        raise CheckpointError(f"this {cfg.arch} model has pyramid level 0 (a plain {cfg.backbone}): it has no "
                              f"attention to show; use a checkpoint trained with model.level 1, 2 or 3")
    return cfg.arch, int(cfg.level)


def _raw_maps(model: nn.Module, x: torch.Tensor, method: str, modules: dict[tuple[int, int], nn.Module],
              captured: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]) -> dict[tuple[int, int], torch.Tensor]:
    """Run ``model`` on ``x`` (the hooks fill ``captured`` with each module's input and output) and turn every
    (stage, level) capture into an (n, h, w) map by ``method``."""
    raw: dict[tuple[int, int], torch.Tensor] = {}
    if method == "mask":
        with torch.no_grad():
            model.embed(x)
            for k, (inp, _) in captured.items():
                raw[k] = modules[k].mask(inp)[:, 0]
        return raw
    with torch.enable_grad():
        f = model._test_feature(x)  # test feature before L2 normalisation (see the module docstring)
        keys = list(captured)
        grads = torch.autograd.grad((f * f.detach()).sum(), [captured[k][1] for k in keys])
    with torch.no_grad():
        for k, g in zip(keys, grads):
            inp, out = captured[k]
            alpha = g.mean(dim=(2, 3), keepdim=True)
            if method == "gradcam":
                act = out
            else:
                w, w_bar = attention_weights(modules[k], inp)
                act = (w - w_bar) * inp
            raw[k] = F.relu((alpha * act).sum(dim=1))
    return raw


def attention_maps(model: nn.Module, crops: Sequence[np.ndarray], stage: Union[int, str] = "all",
                   method: str = "auto", batch_size: int = 16) -> AttentionMaps:
    """Attention of every pyramid level of ``model`` (an APNet) on BGR uint8 ``crops`` (see the module docstring).

    ``method``: ``"mask"`` (APNet-S only), ``"attention-cam"``, ``"gradcam"`` or ``"auto"`` (mask for APNet-S,
    attention-cam for APNet-C). ``stage``: 0..4 or ``"all"``. The model is put in eval mode and run on its own
    device; forward hooks are removed afterwards and no gradient is accumulated in its parameters.
    """
    from apnet_edge.preprocess import preprocess_crops

    arch, _ = _check_model(model)
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, found {method!r}")
    if method == "auto":
        method = "mask" if arch == "apnet_s" else "attention-cam"
    if method == "mask" and arch != "apnet_s":
        raise ConfigError(f"{arch} has channel attention without a spatial mask; use method 'attention-cam' or "
                          f"'gradcam'")
    if not len(crops):
        raise ApnetError("no crops to visualise")
    stages = _stages(stage)
    model.eval()
    device = next(model.parameters()).device
    card = model.card
    size = tuple(card.input_size)
    modules = {(s, lvl): m for s in stages for lvl, m in pyramid_levels(model.pyramids[s])}
    levels = tuple(sorted({lvl for _, lvl in modules}))
    feature_sizes = tuple(tuple(int(v) for v in model.sizes[s]) for s in stages)

    captured: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def hook_for(key: tuple[int, int]) -> Any:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            captured[key] = (inputs[0], output)
        return hook

    chunks: list[torch.Tensor] = []
    handles = [m.register_forward_hook(hook_for(k)) for k, m in modules.items()]
    try:
        for start in range(0, len(crops), batch_size):
            x = torch.from_numpy(preprocess_crops(crops[start:start + batch_size], card)).to(device)
            captured.clear()
            raw = _raw_maps(model, x, method, modules, captured)
            per_level = []
            for lvl in levels:
                ups = [F.interpolate(raw[(s, lvl)][:, None].float(), size=size, mode="bilinear", align_corners=False)
                       for s in stages]
                per_level.append(_normalise(torch.cat(ups, dim=1)).mean(dim=1, keepdim=True))  # (n, 1, H, W)
            chunks.append(_normalise(torch.cat(per_level, dim=1)).cpu())
    finally:
        for h in handles:
            h.remove()
        captured.clear()
    maps = torch.cat(chunks, dim=0).numpy().astype(np.float32)
    where = (f"at stage {stages[0]} ({STAGE_NAMES[stages[0]]}, {feature_sizes[0][0]}x{feature_sizes[0][1]} map)"
             if len(stages) == 1 else "mean over the 5 insertion points (stem, layer1..layer4)")
    what = {
        "mask": "the spatial attention mask of each level (RGA-S per height stripe)",
        "attention-cam": ("Grad-CAM of what each level's attention adds to the feature beyond uniform weights, "
                          "(w - mean w) * x, for the embedding"),
        "gradcam": "Grad-CAM of the embedding at the output of each level's attention",
    }[method]
    description = (f"{'APNet-C' if arch == 'apnet_c' else 'APNet-S'} ({model.cfg.backbone}, level {model.cfg.level},"
                   f" input {size[0]}x{size[1]}): {what}, {where}; min-max normalised per crop and level "
                   f"(blue low, red high)")
    return AttentionMaps(maps, levels, method, stages, feature_sizes, description)


@dataclass
class AttentionFigure:
    """What :func:`visualize_attention` drew: the figure, the maps and the image files (one row each)."""

    image: np.ndarray
    maps: AttentionMaps
    paths: list[Path]
    layout: Any
    path: Optional[Path] = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        where = f"wrote {self.path}" if self.path else "figure"
        return (f"{where}: {len(self.paths)} crops x levels {', '.join(map(str, self.maps.levels))} "
                f"({self.maps.method}, stage {'all' if len(self.maps.stages) > 1 else self.maps.stages[0]}; "
                f"{self.seconds:.1f} s)")


def render_attention(crops: Sequence[np.ndarray], maps: AttentionMaps, arch: str, names: Sequence[str],
                     cell_height: int = 256, input_size: Optional[tuple[int, int]] = None) -> tuple[np.ndarray, Any]:
    """The grid: per row the crop (as the model sees it: resized to the input size), then one overlay per level."""
    import cv2

    from apnet_edge.visualize import MARGIN, fit_text, new_canvas, overlay, put_cell, put_header, put_text

    h_in, w_in = input_size or maps.maps.shape[-2:]
    cell_w = max(int(round(cell_height * w_in / h_in)), 16)
    cols = 1 + len(maps.levels)
    canvas, layout = new_canvas(len(crops), cols, cell_height, cell_w, maps.description, labels=1)
    put_header(canvas, layout, 0, "crop")
    for j, lvl in enumerate(maps.levels):
        put_header(canvas, layout, 1 + j, level_name(arch, lvl))
    for r, crop in enumerate(crops):
        shown = cv2.resize(crop, (cell_w, cell_height), interpolation=cv2.INTER_LINEAR)
        put_cell(canvas, layout, r, 0, shown)
        x, y = layout.cell_origin(r, 0)
        put_text(canvas, fit_text(names[r], layout.size[1] - 2 * MARGIN), x, y + cell_height)  # whole row
        for j in range(len(maps.levels)):
            put_cell(canvas, layout, r, 1 + j, overlay(shown, maps.maps[r, j]))
    return canvas, layout


def visualize_attention(checkpoint: PathLike, images: Sequence[PathLike], out: Optional[PathLike] = None,
                        stage: Union[int, str] = "all", method: str = "auto", device: str = "cpu",
                        limit: Optional[int] = 16) -> AttentionFigure:
    """Load ``checkpoint``, compute :func:`attention_maps` on ``images`` (files and/or folders; at most
    ``limit``, spread evenly) and draw the figure; writes ``out`` (PNG) when given.

    Raises CheckpointError for an unusable checkpoint or one without attention (level 0), DatasetError for
    missing or unreadable images.
    """
    from apnet_edge.crops import read_images
    from apnet_edge.visualize import image_paths, write_png
    from train.checkpoint import model_from_checkpoint

    t0 = time.perf_counter()
    paths = image_paths(images, limit)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model_from_checkpoint(checkpoint, with_classifier=False, map_location=device)
    arch, _ = _check_model(model)
    crops = read_images(paths)
    maps = attention_maps(model, crops, stage=stage, method=method)
    canvas, layout = render_attention(crops, maps, arch, [p.stem for p in paths], input_size=model.cfg.input_size)
    fig = AttentionFigure(canvas, maps, paths, layout, extra={"checkpoint": str(checkpoint), "device": device})
    if out is not None:
        fig.path = write_png(out, canvas)
    fig.seconds = time.perf_counter() - t0
    return fig
