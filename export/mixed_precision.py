"""Which parts of a model to keep in float so that its INT8 copy stays within a cosine target (``keep_float="auto"``).

A per-model search instead of a fixed list of layers: the presets of :data:`export.quantize.KEEP_FLOAT_PRESETS` were
chosen on one ResNet-50 and missed the 0.98 gate on the next one (docs/benchmarks.md). The search:

1. groups the quantizable nodes by module (:func:`layer_groups`: a ResNet block, an attention pyramid, the stem, the
   head; torch.onnx names nodes by module path, e.g. ``/layer3/layer3.2/conv1/Conv``);
2. (unless the whole model already reaches the target in INT8: then that is the answer, after one trial)
   measures each group's error alone: ``1 - mean cosine`` to FP32 when only that group is INT8;
3. orders the groups by error per multiply-accumulate (cheap-to-quantize, compute-heavy groups first);
4. bisects for the longest prefix of that order whose INT8 model still reaches the target mean cosine
   (:func:`longest_passing_prefix`), starting at the prefix whose summed errors fit the budget.

Measured on a ResNet-50 APNet-C: the error is concentrated in the attention pyramids, the head, the stem and layer1,
while layer3/layer4, most of the compute, lose almost nothing; the search keeps the former in float.

This module is pure (no ONNX Runtime): the caller passes the functions that quantize and evaluate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
HEAD_GROUP = "/"  # torch.onnx nodes of the top-level module (APNet: the last pyramid on the pooled feature, BNNeck)
MIN_GROUPS = 2
SEGMENTS = 16  # groups made of consecutive nodes when the graph has no module-path names
MAC_FLOOR = 0.01  # a group's compute counts at least this share of the total when ordering (error per MAC)


@dataclass(frozen=True)
class LayerGroup:
    """Quantizable nodes of one module. ``macs``: multiply-accumulates per image of its Conv/Gemm/MatMul nodes."""

    name: str
    nodes: tuple[str, ...]
    macs: int


@dataclass(frozen=True)
class KeepFloatSearch:
    """What the search found. ``errors[i]``: ``1 - mean cosine`` with only ``groups[i]`` in INT8 (None when the
    whole model passed at once and no group was measured alone);
    ``quantized``: names of the groups left in INT8; ``mean_cosine``/``worst_cosine``: the chosen model on the
    search crops; ``trials``: ``(number of INT8 groups, mean cosine)`` of every prefix evaluated."""

    target_cosine: float
    groups: tuple[LayerGroup, ...]
    errors: tuple[Optional[float], ...]
    quantized: tuple[str, ...]
    mean_cosine: float
    worst_cosine: float
    search_crops: int
    overlaps_calibration: bool
    trials: tuple[tuple[int, float], ...] = field(default_factory=tuple)
    seconds: float = 0.0

    @property
    def float_nodes(self) -> tuple[str, ...]:
        """Nodes of the groups kept in float."""
        return float_nodes(self.groups, self.quantized)

    @property
    def int8_mac_share(self) -> float:
        """Share of the groups' multiply-accumulates that run in INT8."""
        total = sum(g.macs for g in self.groups) or 1
        keep = set(self.quantized)
        return sum(g.macs for g in self.groups if g.name in keep) / total

    def to_dict(self) -> dict[str, Any]:
        keep = set(self.quantized)
        return {
            "target_cosine": self.target_cosine, "mean_cosine": round(self.mean_cosine, 6),
            "worst_cosine": round(self.worst_cosine, 6), "search_crops": self.search_crops,
            "overlaps_calibration": self.overlaps_calibration, "int8_mac_share": round(self.int8_mac_share, 4),
            "groups": [{"name": g.name, "nodes": len(g.nodes), "macs": g.macs,
                        "error_alone": round(e, 6) if e is not None else None,
                        "int8": g.name in keep} for g, e in zip(self.groups, self.errors)],
            "trials": [{"int8_groups": k, "mean_cosine": round(c, 6)} for k, c in self.trials],
            "seconds": round(self.seconds, 1),
        }


def float_nodes(groups: Iterable[LayerGroup], int8: Iterable[str]) -> tuple[str, ...]:
    """The nodes of the ``groups`` whose names are not in ``int8`` (sorted)."""
    keep = set(int8)
    return tuple(sorted(n for g in groups if g.name not in keep for n in g.nodes))


# --------------------------------------------------------------------------------------------------- groups


def _module_path(name: str) -> Optional[tuple[str, ...]]:
    """``"/layer3/layer3.2/conv1/Conv"`` -> ``("layer3", "layer3.2", "conv1")``; ``"/Add"`` -> ``()``;
    None for names torch.onnx did not write."""
    if not name.startswith("/"):
        return None
    return tuple(p for p in name.split("/")[1:-1] if p)


def node_macs(model: Any) -> dict[str, int]:
    """Multiply-accumulates per image of each Conv/ConvTranspose/Gemm/MatMul node with a constant weight: output
    elements per image x weight elements per output element. Output shapes come from the graph's value_info
    (run shape inference first); without a shape, the weight's size."""
    weights = {i.name: tuple(int(d) for d in i.dims) for i in model.graph.initializer}
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*model.graph.value_info, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else 0 for d in dims)
    out: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type not in COMPUTE_OPS or len(n.input) < 2 or n.input[1] not in weights:
            continue
        w = weights[n.input[1]]
        if n.op_type in ("Conv", "ConvTranspose"):
            per_out = int(np.prod(w[1:]))  # (C_in / groups) x kernel
        elif n.op_type == "Gemm":
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            per_out = w[-1] if trans_b else w[0]  # K
        else:
            per_out = w[-2] if len(w) >= 2 else w[0]  # MatMul by a (..., K, N) weight
        oshape = shapes.get(n.output[0], ())
        elements = int(np.prod(oshape[1:])) if len(oshape) > 1 and all(oshape[1:]) else 0
        out[n.name] = elements * per_out if elements else int(np.prod(w))
    return out


def layer_groups(model: Any, quantizable: Iterable[str]) -> list[LayerGroup]:
    """The ``quantizable`` nodes of ``model`` grouped by module, in graph order.

    A top-level module whose children include two or more blocks with at least two convolutions each (a ResNet
    stage) is split into those children; other modules form one group; nodes of the top-level module form
    :data:`HEAD_GROUP`. A graph without torch.onnx module names (or with fewer than two modules) is cut instead
    into :data:`SEGMENTS` runs of consecutive nodes with about equal compute.
    """
    wanted = set(quantizable)
    nodes = [n for n in model.graph.node if n.name in wanted]
    macs = node_macs(model)
    paths = {n.name: _module_path(n.name) for n in model.graph.node}
    convs: dict[tuple[str, ...], int] = {}
    for n in model.graph.node:
        p = paths[n.name]
        if p and len(p) >= 2 and n.op_type in ("Conv", "ConvTranspose"):
            convs[p[:2]] = convs.get(p[:2], 0) + 1
    split = {top for top in {k[0] for k in convs} if sum(1 for k, c in convs.items() if k[0] == top and c >= 2) >= 2}

    def key(name: str) -> Optional[str]:
        p = paths.get(name)
        if p is None:
            return None
        if not p:
            return HEAD_GROUP
        return "/" + "/".join(p[:2] if p[0] in split and len(p) >= 2 else p[:1])

    grouped: dict[str, list[str]] = {}
    for n in nodes:
        k = key(n.name)
        if k is None:
            grouped = {}
            break
        grouped.setdefault(k, []).append(n.name)
    if len(grouped) >= MIN_GROUPS:
        return [LayerGroup(k, tuple(v), sum(macs.get(x, 0) for x in v)) for k, v in grouped.items()]
    return _segments([n.name for n in nodes], macs)


def _segments(names: Sequence[str], macs: dict[str, int]) -> list[LayerGroup]:
    """``names`` (graph order) cut into at most :data:`SEGMENTS` runs, each ending where the running compute
    passes the next multiple of total / SEGMENTS."""
    total = sum(macs.get(n, 0) for n in names) or 1
    out: list[LayerGroup] = []
    cur: list[str] = []
    done = 0
    for i, n in enumerate(names):
        cur.append(n)
        done += macs.get(n, 0)
        if (len(out) < SEGMENTS - 1 and done >= (len(out) + 1) * total / SEGMENTS) or i == len(names) - 1:
            out.append(LayerGroup(f"#{len(out)} {cur[0]} .. {cur[-1]}", tuple(cur), sum(macs.get(x, 0) for x in cur)))
            cur = []
    return out


# --------------------------------------------------------------------------------------------------- search


def order_by_error_per_mac(groups: Sequence[LayerGroup], errors: Sequence[float]) -> list[int]:
    """Group indices, the best to quantize first: ascending error per multiply-accumulate (a group's MACs count at
    least :data:`MAC_FLOOR` of the total, so that cheap groups are ordered by their error)."""
    floor = MAC_FLOOR * (sum(g.macs for g in groups) or 1)
    return sorted(range(len(groups)), key=lambda i: (max(errors[i], 0.0) / max(groups[i].macs, floor), i))


def longest_passing_prefix(n: int, evaluate: Callable[[int], float], target: float,
                           first_guess: Optional[int] = None) -> tuple[int, float, list[tuple[int, float]]]:
    """The largest ``k`` in ``1..n`` with ``evaluate(k) >= target``, by bisection (assumes the cosine falls as
    ``k`` grows; every answer returned was evaluated). ``first_guess``: the ``k`` tried first.

    Returns ``(k, cosine at k, trials)``; ``k == 0`` (cosine 1.0) when not even ``k = 1`` passes.
    """
    lo, lo_cos, hi = 0, 1.0, n + 1  # k = 0 (the FP32 model) passes; n + 1 stands for "fails"
    trials: list[tuple[int, float]] = []
    k = min(max(first_guess if first_guess is not None else n, 1), n)
    while hi - lo > 1:
        c = evaluate(k)
        trials.append((k, c))
        if c >= target:
            lo, lo_cos = k, c
        else:
            hi = k
        k = (lo + hi) // 2
    return lo, lo_cos, trials


def budget_prefix(order: Sequence[int], errors: Sequence[float], target: float) -> int:
    """The longest prefix of ``order`` whose summed single-group errors fit ``1 - target`` (errors roughly add)."""
    budget, spent, k = 1.0 - target, 0.0, 0
    for i in order:
        spent += max(errors[i], 0.0)
        if spent > budget:
            break
        k += 1
    return k


def search_keep_float(groups: Sequence[LayerGroup], evaluate: Callable[[Sequence[str]], np.ndarray],
                      target: float, search_crops: int, overlaps_calibration: bool,
                      progress: bool = True) -> KeepFloatSearch:
    """Choose which ``groups`` stay in INT8. ``evaluate(int8_group_names)`` quantizes exactly those groups and
    returns the per-crop cosine to FP32 on the search crops (shape (N,))."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    names = [g.name for g in groups]
    whole = evaluate(names)
    whole_mean = float(np.mean(whole))
    if whole_mean >= target:  # nothing needs to stay float
        log.info("INT8 on all %d groups: mean cosine %.5f", len(groups), whole_mean)
        return KeepFloatSearch(target_cosine=target, groups=tuple(groups), errors=(None,) * len(groups),
                               quantized=tuple(names), mean_cosine=whole_mean, worst_cosine=float(np.min(whole)),
                               search_crops=search_crops, overlaps_calibration=overlaps_calibration,
                               trials=((len(groups), whole_mean),), seconds=time.perf_counter() - t0)
    errors: list[float] = []
    for g in tqdm(groups, desc="INT8 sensitivity", unit="group", disable=not progress, leave=False):
        errors.append(1.0 - float(np.mean(evaluate([g.name]))))
        log.info("INT8 sensitivity %s: error %.5f (%d MACs)", g.name, errors[-1], g.macs)
    order = order_by_error_per_mac(groups, errors)
    guess = budget_prefix(order, errors, target)
    cache: dict[int, np.ndarray] = {}

    def prefix_cosine(k: int) -> float:
        cache[k] = evaluate([groups[i].name for i in order[:k]])
        log.info("INT8 on %d of %d groups: mean cosine %.5f", k, len(groups), float(np.mean(cache[k])))
        return float(np.mean(cache[k]))

    # all groups in INT8 is known to fail: bisect over 1 .. n - 1
    n = len(groups)
    k, mean_cos, trials = longest_passing_prefix(n - 1, prefix_cosine, target, first_guess=min(guess, n - 1))
    trials = [(n, whole_mean), *trials]
    worst = float(np.min(cache[k])) if k in cache else 1.0
    return KeepFloatSearch(target_cosine=target, groups=tuple(groups), errors=tuple(errors),
                           quantized=tuple(groups[i].name for i in order[:k]), mean_cosine=mean_cos,
                           worst_cosine=worst, search_crops=search_crops, overlaps_calibration=overlaps_calibration,
                           trials=tuple(trials), seconds=time.perf_counter() - t0)
