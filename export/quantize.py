"""FP32 ONNX -> INT8 Q/DQ ONNX, calibrated on real person crops (ONNX Runtime static quantization).

Two targets, two different files (ENVIRONMENT.md: the layouts run at very different speeds on a CPU):

* ``target="cpu"``: uint8 activations (asymmetric) + int8 per-channel weights. The layout ONNX Runtime's
  CPU kernels (VNNI) and OpenVINO run fast: about 3.4x the FP32 speed of ResNet-50 on this project's CPU
  (ENVIRONMENT.md), 2.7x measured for APNet-C ResNet-50 256x128 with the default op types below.
* ``target="tensorrt"``: int8 *symmetric* activations (zero point 0) + int8 symmetric per-channel weights,
  the only form TensorRT's explicit quantization accepts. Weights stay float behind a Q/DQ pair
  (``AddQDQPairToWeight``) and biases stay float (``QuantizeBias=False``): TensorRT 8.x's ONNX parser rejects
  a DequantizeLinear fed by an int8/int32 initializer ("only activation types allowed as input"), and
  TensorRT quantizes weights and biases itself when it builds the engine. Runs (slowly) in ONNX Runtime too,
  so its accuracy can be measured on a machine without a GPU.

The calibration crops are pre-processed exactly as the runners do it (:func:`apnet_edge.preprocess.preprocess_crops`
with the model card in the ONNX metadata). The output keeps the card, with ``extra["quantization"]`` describing
how it was made, and ``extra["precision"] = "int8"`` (the accuracy gate reads it).

Calibration defaults to the 99.999th percentile of each activation (higher cosine to FP32 than min/max on every
model tried: APNet and OMZ person-reidentification-retail-0248) and runs in passes of at most ~32 crops, because
ONNX Runtime's histogram calibrators keep every activation of a pass in memory (~85 MB per ResNet-50 crop).
Nodes before the first convolution (in-graph pre-processing) stay float.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from apnet_edge.card import ModelCard
from apnet_edge.crops import IMAGE_SUFFIXES, list_images, spread_indices
from apnet_edge.errors import ModelError, require
from apnet_edge.files import file_sha256
from apnet_edge.runners.sidecar import find_sidecar, read_sidecar
from export.mixed_precision import COMPUTE_OPS, KeepFloatSearch, float_nodes, layer_groups, search_keep_float
from export.onnx_export import CARD_KEY, card_metadata, cosine_rows, read_card, set_metadata, temp_path_for

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
TARGETS = ("cpu", "tensorrt")
# Parts of an APNet export (torch.onnx node names) kept in float by ``keep_float=<preset>``, found on an APNet-C
# ResNet-50 whose layer3/layer4 activations are ~10x larger on some crops than on others (one per-tensor uint8
# range cannot suit both): the attention pyramids, the stem, layer1, and layer4's residual path (each block's first
# conv, downsample, residual Add and its ReLU). Measured there, 99.99 percentile, batch 16, 2 threads: full INT8
# mean cosine 0.83 at ~175 images/s; "accurate" 0.982 at 111; "more-accurate" (+ layer3's residual path) 0.985 at 98
# (docs/benchmarks.md). Patterns that match nothing in a model (e.g. no pyramids in a plain ResNet) are skipped.
# On a second ResNet-50 they reached only 0.971-0.974: keep_float="auto" (export.mixed_precision) measures the model
# at hand instead.
_RESIDUAL = ("/{0}/{0}.*/conv1/*", "/{0}/*/downsample/*", "/{0}/{0}.*/Add", "/{0}/{0}.*/relu_2/*")
KEEP_FLOAT_PRESETS: dict[str, tuple[str, ...]] = {
    "accurate": ("/pyramids.*", "/conv1/*", "/maxpool/*", "/layer1/*", *(p.format("layer4") for p in _RESIDUAL)),
    "more-accurate": ("/pyramids.*", "/conv1/*", "/maxpool/*", "/layer1/*",
                      *(p.format("layer3") for p in _RESIDUAL), *(p.format("layer4") for p in _RESIDUAL)),
}
KEEP_FLOAT_AUTO = "auto"  # search this model for the groups to keep in float (export.mixed_precision)
DEFAULT_TARGET_COSINE = 0.99  # the search's target on its crops: the INT8 gate's 0.98 plus a margin for other crops
DEFAULT_SEARCH_CROPS = 64
MIN_CALIB_AFTER_SEARCH = 16  # fewer calibration crops left after setting the search crops aside: share them
PRESET_PERCENTILE = 99.99  # the calibration percentile the presets (and the search) were measured with
DEFAULT_PERCENTILE = 99.999  # without a preset
CALIBRATION_METHODS = ("percentile", "minmax")
# Quantized by default: the convolutions, matrix products and what sits between them on the main path. The rest of
# the attention branches (Softmax/Sigmoid, the element-wise products on (N, C) vectors) and BatchNorms stay float:
# on APNet this gave both a higher cosine to FP32 and a faster CPU model than quantizing everything ONNX Runtime can
# (which adds Q/DQ around every small gating tensor). The MatMuls are the SE Linears (bias-free): in INT8 they read
# half the bytes of OpenVINO's bf16 at batch 1 (APNet-C ResNet-50: SE 0.37 -> 0.24 ms per image) at the same gate
# (demo ResNet-18: cosine 0.9935 vs 0.9936, mAP 58.73 vs 58.70 %).
DEFAULT_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "AveragePool",
                    "GlobalAveragePool", "Concat")


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize_onnx` wrote. ``num_calib``: crops actually used; ``seconds``: wall time."""

    path: Path
    card: ModelCard
    target: str
    activation_type: str
    weight_type: str
    per_channel: bool
    num_calib: int
    calibration_method: str
    excluded_nodes: tuple[str, ...]
    num_quantize_nodes: int
    seconds: float
    skipped_images: tuple[str, ...] = field(default_factory=tuple)
    quantized_gates: tuple[str, ...] = field(default_factory=tuple)
    search: Optional[KeepFloatSearch] = None  # keep_float="auto": what the search measured and chose

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "card": self.card.to_dict(), "target": self.target,
                "activation_type": self.activation_type, "weight_type": self.weight_type,
                "per_channel": self.per_channel, "num_calib": self.num_calib,
                "calibration_method": self.calibration_method, "excluded_nodes": list(self.excluded_nodes),
                "num_quantize_nodes": self.num_quantize_nodes, "seconds": round(self.seconds, 3),
                "skipped_images": list(self.skipped_images),
                "quantized_gates": list(self.quantized_gates),
                "keep_float_search": self.search.to_dict() if self.search is not None else None}


# ------------------------------------------------------------------------------------------- calibration data


def calibration_sources(calib: Union[PathLike, Sequence[np.ndarray]],
                        num_calib: int) -> tuple[list[Union[Path, np.ndarray]], list[str]]:
    """The calibration items and the skipped files: image paths from a folder (files OpenCV cannot decode are
    skipped) or the given BGR uint8 crops; at most ``num_calib``, spread evenly.

    Raises ModelError for a missing/empty folder, a folder without (readable) images, or an empty crop list.
    """
    if num_calib < 1:
        raise ModelError(f"num_calib must be >= 1, found {num_calib}")
    if isinstance(calib, (str, Path)):
        import cv2

        root = Path(calib)
        if not root.is_dir():
            raise ModelError(f"calibration folder {str(root)!r} does not exist; pass a folder of person crops "
                             f"(jpg/png/bmp, searched recursively), e.g. a re-ID dataset's bounding_box_train")
        files = [p for p in root.rglob("*") if p.is_file()]
        if not files:
            raise ModelError(f"calibration folder {str(root)!r} is empty; put a few hundred person crops "
                             f"(jpg/png/bmp) in it")
        images = list_images(root)
        if not images:
            kinds = sorted({p.suffix.lower() or "<no extension>" for p in files})
            raise ModelError(f"calibration folder {str(root)!r} holds {len(files)} files but no images "
                             f"(found {', '.join(kinds[:8])}); calibration needs person crops as "
                             f"{'/'.join(e[1:] for e in IMAGE_SUFFIXES)}")
        readable = [p for p in images if cv2.haveImageReader(str(p))]
        skipped = [str(p) for p in images if p not in set(readable)]
        if not readable:
            raise ModelError(f"none of the {len(images)} images in calibration folder {str(root)!r} can be "
                             f"decoded (e.g. {skipped[0]}); pass readable person crops")
        return [readable[i] for i in spread_indices(len(readable), num_calib)], skipped
    crops = list(calib)
    if not crops:
        raise ModelError("no calibration crops given; pass person crops (BGR uint8) or a folder of images")
    for i, c in enumerate(crops):
        if not isinstance(c, np.ndarray) or c.ndim != 3 or c.shape[2] != 3 or c.size == 0:
            raise ModelError(f"calibration crop {i} must be a BGR image array (H, W, 3), found "
                             f"{getattr(c, 'shape', type(c).__name__)}")
    return [crops[i] for i in spread_indices(len(crops), num_calib)], []


class CropCalibrationReader:
    """ONNX Runtime ``CalibrationDataReader``: yields ``{input_name: (B, C, H, W) float32}`` batches.

    Images are read lazily (one batch in memory), pre-processed with the model's card; unreadable files are
    skipped and listed in :attr:`skipped`. ``len()`` counts batches; :meth:`set_range` restricts the reader to
    batches ``[start, end)`` so that ONNX Runtime can calibrate in chunks (its histogram calibrators keep every
    activation of the batches of one pass in memory). A tqdm bar counts crops when ``progress``; :meth:`close`
    ends it.
    """

    def __init__(self, sources: Sequence[Union[Path, np.ndarray]], card: ModelCard, input_name: str,
                 batch_size: int = 16, progress: bool = True, exact_batch: bool = False) -> None:
        self.sources = list(sources)
        self.card = card
        self.input_name = input_name
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self.exact_batch = exact_batch  # the model has a fixed batch size: every batch must have batch_size crops
        self.skipped: list[str] = []
        self.used = 0
        self._range = (0, len(self))
        self._iter: Optional[Iterator[dict[str, np.ndarray]]] = None
        self._bar: Any = None

    def __len__(self) -> int:
        return (len(self.sources) + self.batch_size - 1) // self.batch_size

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve batches ``start_index`` .. ``end_index - 1`` next (ONNX Runtime's chunked calibration)."""
        self._range = (max(0, int(start_index)), min(len(self), int(end_index)))
        self._iter = None

    def _read(self, item: Union[Path, np.ndarray]) -> Optional[np.ndarray]:
        import cv2

        if isinstance(item, np.ndarray):
            return item
        img = cv2.imread(str(item), cv2.IMREAD_COLOR)
        if img is None:
            self.skipped.append(str(item))
        return img

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        from tqdm import tqdm

        from apnet_edge.preprocess import preprocess_crops

        if self._bar is None:
            self._bar = tqdm(total=len(self.sources), desc="calibration", unit="crop", disable=not self.progress,
                             leave=False)
        for b in range(*self._range):
            chunk = self.sources[b * self.batch_size:(b + 1) * self.batch_size]
            crops = [c for c in (self._read(item) for item in chunk) if c is not None]
            self._bar.update(len(chunk))
            self.used += len(crops)
            if (self.exact_batch or len(self) > 1) and 0 < len(crops) < self.batch_size:
                # pad a short last batch (repeating its crops): fixed-batch models need it, and ONNX Runtime's
                # histogram calibrators cannot stack batches of different sizes within one calibration pass
                crops = [crops[i % len(crops)] for i in range(self.batch_size)]
            if crops:
                yield {self.input_name: np.ascontiguousarray(preprocess_crops(crops, self.card), np.float32)}

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def __iter__(self) -> CropCalibrationReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.get_next()
        if batch is None:
            raise StopIteration
        return batch

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def chunk_batches(n_batches: int, batch_size: int, max_crops: int = 32) -> int:
    """Batches per calibration pass: the largest divisor of ``n_batches`` whose crops fit in ``max_crops``
    (ONNX Runtime requires the pass size to divide the number of batches)."""
    limit = max(1, max_crops // max(1, batch_size))
    return max(d for d in range(1, min(limit, n_batches) + 1) if n_batches % d == 0) if n_batches else 1


# ------------------------------------------------------------------------------------------------ quantize


def _check_reid_graph(model: Any, source: str, card: Optional[ModelCard]) -> tuple[ModelCard, str]:
    """The card (metadata or given) and the input name; ModelError if the graph is not a re-ID embedder."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    outputs = list(model.graph.output)
    if card is None:
        props = {p.key for p in model.metadata_props}
        sidecar = find_sidecar(source) if CARD_KEY not in props else None
        card = read_sidecar(sidecar) if sidecar is not None else read_card(model, source)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{source} has {len(inputs)} inputs and {len(outputs)} outputs; a re-ID model has one "
                         f"image input (N,3,H,W) and one embedding output (N,D)")
    dims = inputs[0].type.tensor_type.shape.dim
    odims = outputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or len(odims) != 2:
        raise ModelError(f"{source}: input {inputs[0].name!r} has rank {len(dims)} and output "
                         f"{outputs[0].name!r} rank {len(odims)}; a re-ID model maps (N,3,H,W) to (N,D)")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in model.graph.node):
        raise ModelError(f"{source} is already quantized; quantize the FP32 export instead")
    return card, inputs[0].name


def _at_least_opset13(model: Any, source: str) -> Any:
    """Per-channel Q/DQ (the ``axis`` attribute) needs opset 13; convert older graphs (e.g. opset 11/12 exports)."""
    import onnx

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= 13:
        return model
    meta = [(p.key, p.value) for p in model.metadata_props]
    try:
        converted = onnx.version_converter.convert_version(model, 13)
    except Exception as exc:
        raise ModelError(f"{source} uses opset {opset}; INT8 Q/DQ needs opset >= 13 and the conversion failed "
                         f"({exc}); re-export the model with opset 13 or newer") from exc
    set_metadata(converted, dict(meta))
    return converted


def _fixed_batch(model: Any, input_name: str) -> int:
    """The input's batch size when the graph fixes it (e.g. 1 for many third-party models), else 0."""
    for i in model.graph.input:
        if i.name == input_name:
            d0 = i.type.tensor_type.shape.dim[0]
            return int(d0.dim_value) if d0.HasField("dim_value") and d0.dim_value > 0 else 0
    return 0


def input_preamble(model: Any) -> list[str]:
    """Names of the nodes before the first Conv/Gemm/MatMul: in-graph pre-processing (channel swap, mean/std,
    per-image standardisation). Quantizing these tensors costs accuracy and saves no time."""
    out = []
    for n in model.graph.node:
        if n.op_type in COMPUTE_OPS:
            return out
        out.append(n.name)
    return []


def _preset_nodes(model: Any, preset: str) -> list[str]:
    """Node names of ``model`` the ``keep_float`` preset keeps in float (patterns matching nothing skipped)."""
    import fnmatch

    if preset not in KEEP_FLOAT_PRESETS:
        raise ModelError(f"keep_float preset {preset!r} is unknown; choose one of {', '.join(KEEP_FLOAT_PRESETS)}")
    names = [n.name for n in model.graph.node]
    out = sorted({n for pat in KEEP_FLOAT_PRESETS[preset] for n in fnmatch.filter(names, pat)})
    if not out:
        raise ModelError(f"keep_float preset {preset!r} matches no node of this model: it is made for APNet/ResNet "
                         f"exports of `apnet-edge export` (node names like /layer1/layer1.0/conv1/Conv)")
    return out


def _resolve_exclude(model: Any, exclude: Sequence[str]) -> list[str]:
    """Node names to keep in float: each entry is an op type (all its nodes), a node name, or a node-name pattern
    with ``*`` (fnmatch, e.g. ``/layer4/*`` or ``/pyramids.*``)."""
    import fnmatch

    by_type: dict[str, list[str]] = {}
    names = set()
    for n in model.graph.node:
        by_type.setdefault(n.op_type, []).append(n.name)
        names.add(n.name)
    out: list[str] = []
    unknown = []
    for e in exclude:
        if e in by_type:
            out.extend(by_type[e])
        elif e in names:
            out.append(e)
        elif "*" in e and fnmatch.filter(names, e):
            out.extend(fnmatch.filter(names, e))
        else:
            unknown.append(e)
    if unknown:
        raise ModelError(f"exclude: {unknown} match no op type, node name or node-name pattern of the model; op types in it: "
                         f"{', '.join(sorted(by_type))}")
    return sorted(set(out))


def feature_map_gates(model: Any) -> tuple[list[str], list[str]]:
    """(gate Muls, other Muls) of ``model``: a gate multiplies a feature map that is also pooled by a
    GlobalAveragePool, i.e. the ``x * scale`` of a fused APNet-C pyramid (or an SE gate exported that way).

    Quantizing the gates (and nothing else of the attention) lets ONNX Runtime keep the whole pyramid on uint8 maps
    (QLinearGlobalAveragePool -> float MLP on (N, C) -> QLinearMul -> QLinearAdd) instead of a float pass over the
    map between INT8 convolutions."""
    pooled = {n.input[0] for n in model.graph.node if n.op_type == "GlobalAveragePool"}
    gates, others = [], []
    for n in model.graph.node:
        if n.op_type == "Mul":
            (gates if any(i in pooled for i in n.input) else others).append(n.name)
    return gates, others


def pooled_vector_nodes(model: Any, op_types: Sequence[str] = ("Add", "Concat")) -> list[str]:
    """Names of the ``op_types`` nodes of ``model`` that compute on pooled (N, C) vectors inside an attention gate:
    every node reachable from a GlobalAveragePool output (or a ReduceMean) through nodes whose inputs are all such
    vectors or constants. The gate itself (it reads the feature map) and everything after it are not.

    In a fused APNet-C pyramid these are the few-hundred-element sums and the [d, -d] concatenation of the scale and
    shift computation. Quantizing them buys nothing (no weights, tiny tensors) and costs a Q/DQ pair per input and
    output: about ten extra nodes per pyramid, each a fixed per-node cost at batch 1, and a rounding step each.
    Kept float with the gates (``--target cpu``): APNet-C ResNet-50 687 -> 601 nodes, ONNX Runtime batch 1 +2 to +4 %
    images/s (OpenVINO unchanged); demo ResNet-18 gate cosine 0.99380 -> 0.99406 (ONNX Runtime), 0.99301 -> 0.99327
    (OpenVINO), mAP 58.72 -> 58.77 %."""
    graph = model.graph
    consts = {i.name for i in graph.initializer}
    consts |= {o for n in graph.node if n.op_type in ("Constant", "ConstantOfShape", "Shape") for o in n.output}
    vec: set[str] = set()
    chosen: list[str] = []
    for n in graph.node:  # ONNX keeps nodes in topological order: one pass sees every producer first
        if n.op_type in ("GlobalAveragePool", "ReduceMean"):
            vec.update(n.output)
            continue
        data = [i for i in n.input if i and i not in consts]
        if data and all(i in vec for i in data):
            vec.update(n.output)
            if n.op_type in op_types:
                chosen.append(n.name)
    return sorted(chosen)


def _target_settings(target: str) -> tuple[Any, Any, dict[str, Any]]:
    """(activation type, weight type, quantize_static extra_options) for ``target``."""
    from onnxruntime.quantization import QuantType

    if target == "cpu":
        return QuantType.QUInt8, QuantType.QInt8, {"WeightSymmetric": True, "ActivationSymmetric": False}
    return QuantType.QInt8, QuantType.QInt8, {
        "ActivationSymmetric": True,  # zero point 0: TensorRT supports symmetric quantization only
        "WeightSymmetric": True,  # int8 weights in [-127, 127]
        "AddQDQPairToWeight": True,  # float weights -> Q -> DQ (TensorRT 8.x cannot take int8 initializers)
        "QuantizeBias": False,  # TensorRT fuses/quantizes the bias itself
        "DedicatedQDQPair": False,
    }


def quantize_onnx(onnx_path: PathLike, calib: Union[PathLike, Sequence[np.ndarray]], out: PathLike,
                  target: str = "cpu", num_calib: int = 300, per_channel: bool = True,
                  exclude: Sequence[str] = (), progress: bool = True, method: str = "percentile",
                  percentile: Optional[float] = None,
                  batch_size: int = 16, card: Optional[ModelCard] = None, pre_process: bool = True,
                  keep_float_preamble: bool = True,
                  op_types: Optional[Sequence[str]] = DEFAULT_OP_TYPES,
                  keep_float: Optional[str] = None, quantize_gates: Optional[bool] = None,
                  target_cosine: float = DEFAULT_TARGET_COSINE,
                  search_crops: int = DEFAULT_SEARCH_CROPS) -> QuantizeResult:
    """Write an INT8 Q/DQ copy of the FP32 re-ID ONNX ``onnx_path`` to ``out`` (atomically).

    Args:
        onnx_path: FP32 ONNX from :func:`export.onnx_export.export_onnx` (its card is in the metadata).
        calib: a folder of person crops (jpg/png/bmp, recursive) or a list of BGR uint8 crops (H, W, 3).
        out: the ``.onnx`` to write.
        target: ``"cpu"`` (uint8 activations, fast in ONNX Runtime/OpenVINO) or ``"tensorrt"`` (symmetric int8).
        num_calib: at most this many crops, spread evenly over the folder/list.
        per_channel: per-output-channel weight scales (recommended for convolutions).
        exclude: op types (e.g. ``"Softmax"``) or node names to keep in float.
        progress: show a tqdm bar during calibration.
        percentile: the percentile of |x| that ``"percentile"`` calibration keeps; None: :data:`PRESET_PERCENTILE`
            (99.99) with ``keep_float``, as the presets and the search were measured, else
            :data:`DEFAULT_PERCENTILE`.
        method: activation range calibration: ``"percentile"`` (99.999th percentile of |x|; default, it gave
            higher cosine than min/max on every re-ID model tried) or ``"minmax"``.
        batch_size: crops per calibration batch.
        card: model card for an ONNX without apnet-edge metadata (e.g. an external re-ID model); None: the
            metadata, else a sidecar beside the model (``<stem>.card.json``, as the runners read it).
        pre_process: run ONNX Runtime's ``quant_pre_process`` (shape inference + graph optimisation) first.
        keep_float_preamble: keep the nodes before the first Conv/Gemm/MatMul (in-graph pre-processing) in float.
        op_types: op types to quantize (default :data:`DEFAULT_OP_TYPES`); None: every type ONNX Runtime can.
        keep_float: ``"auto"``: search this model for the module groups to keep in float so that the INT8 model
            reaches ``target_cosine`` (:mod:`export.mixed_precision`; needs op_types); or a
            :data:`KEEP_FLOAT_PRESETS` name (``"accurate"``, ``"more-accurate"``): fixed parts of an APNet export.
            Added to ``exclude``.
        quantize_gates: also quantize the feature-map gate Muls (:func:`feature_map_gates`), every other Mul
            staying float; None: for the ``cpu`` target (APNet-C's INT8 overhead over a plain ResNet-50 on ONNX
            Runtime: 22 % -> 3 % at batch 16, 24 % -> 15 % at batch 1), not for ``tensorrt`` (unverified there).
        target_cosine: ``keep_float="auto"``: the mean cosine to FP32 the INT8 model must keep on the search crops.
        search_crops: ``keep_float="auto"``: crops set aside from ``calib`` to measure cosines during the search
            (they calibrate too when fewer than 16 crops would be left).

    Raises:
        ModelError: not a re-ID ONNX, already quantized, no usable calibration images, unknown exclude entry, or
            (``"auto"``) no group of the model reaches ``target_cosine`` in INT8.
    """
    t0 = time.perf_counter()
    if target not in TARGETS:
        raise ModelError(f"target must be one of {TARGETS}, found {target!r}")
    if percentile is None:
        percentile = PRESET_PERCENTILE if keep_float else DEFAULT_PERCENTILE
    if not 50.0 < float(percentile) <= 100.0:
        raise ModelError(f"percentile must be in (50, 100], found {percentile!r}")
    if keep_float is not None and keep_float != KEEP_FLOAT_AUTO and keep_float not in KEEP_FLOAT_PRESETS:
        raise ModelError(f"keep_float preset {keep_float!r} is unknown; choose one of "
                         f"{', '.join([*KEEP_FLOAT_PRESETS, KEEP_FLOAT_AUTO])}")
    if keep_float == KEEP_FLOAT_AUTO:
        if not 0.0 < float(target_cosine) < 1.0:
            raise ModelError(f"target_cosine must be in (0, 1), found {target_cosine!r}")
        if search_crops < 1:
            raise ModelError(f"search_crops must be >= 1, found {search_crops}")
        if op_types is None:
            raise ModelError("keep_float='auto' needs the op types to quantize (op_types); None means every type ONNX "
                             "Runtime can, which the search cannot group")
    if method not in CALIBRATION_METHODS:
        raise ModelError(f"calibration method must be one of {CALIBRATION_METHODS}, found {method!r}")
    onnx = require("onnx", "export", "INT8 quantization")
    require("onnxruntime", "export", "INT8 quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat

    src = Path(onnx_path)
    out = Path(out)
    if not src.is_file():
        raise ModelError(f"ONNX model {str(src)!r} does not exist; export one with `apnet-edge export`")
    if out.resolve() == src.resolve():
        raise ModelError(f"output {str(out)!r} would overwrite the FP32 input; choose another file name")
    try:
        model = onnx.load(str(src))
    except Exception as exc:
        raise ModelError(f"{str(src)!r} is not a readable ONNX model: {exc}") from exc
    card, input_name = _check_reid_graph(model, str(src), card)
    fixed_batch = _fixed_batch(model, input_name)
    if fixed_batch:
        batch_size = fixed_batch
    auto = keep_float == KEEP_FLOAT_AUTO
    sources, skipped_files = calibration_sources(calib, num_calib + (search_crops if auto else 0))
    search_sources: list[Union[Path, np.ndarray]] = []
    overlaps = False
    if auto:
        sources, search_sources, overlaps = split_search_crops(sources, search_crops, num_calib)
    model = _at_least_opset13(model, str(src))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(out)
    with tempfile.TemporaryDirectory(prefix="apnet_quant_") as work:
        prepared = Path(work) / "prepared.onnx"
        onnx.save(model, str(prepared), save_as_external_data=False)
        if pre_process:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = Path(work) / "pre.onnx"
            try:
                quant_pre_process(str(prepared), str(pre), skip_symbolic_shape=True)
                prepared = pre
            except Exception as exc:  # shape inference is an aid, not a requirement
                warnings.warn(f"quant_pre_process failed ({exc}); quantizing the graph as exported", stacklevel=2)
        prepared_model = onnx.load(str(prepared))
        excluded = _resolve_exclude(prepared_model, exclude)
        if keep_float and not auto:
            excluded = sorted(set(excluded) | set(_preset_nodes(prepared_model, keep_float)))
        if keep_float_preamble:
            excluded = sorted(set(excluded) | set(input_preamble(prepared_model)))
        gates: list[str] = []
        float_attention: list[str] = []  # with the gates quantized: every other Mul and the gates' vector sums
        if (target == "cpu" if quantize_gates is None else quantize_gates) and op_types is not None \
                and "Mul" not in op_types:
            gates, float_attention = feature_map_gates(prepared_model)
            gates = [g for g in gates if g not in excluded]
            float_attention += pooled_vector_nodes(prepared_model)
            if gates:
                op_types = (*op_types, "Mul")
        act_type, w_type, extra = _target_settings(target)
        calib_method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[method]
        if method == "percentile":
            extra["CalibPercentile"] = float(percentile)
        readers: list[CropCalibrationReader] = []

        def make_reader() -> CropCalibrationReader:
            reader = CropCalibrationReader(sources, card, input_name, batch_size=batch_size,
                                           progress=progress and not readers, exact_batch=bool(fixed_batch))
            readers.append(reader)
            return reader

        cache = _calibration_cache(Path(work) / "calibration.json") if auto else None

        def run(nodes_to_exclude: Sequence[str], dest: Path) -> None:
            reader = make_reader()
            # calibrate in passes of at most ~32 crops: the percentile calibrator holds every activation of a pass
            opts = {**extra, "CalibStridedMinMax": chunk_batches(len(reader), reader.batch_size)}
            try:
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")  # ORT prints/warns per tensor; the result's fields say what matters
                    _quantize_static(prepared, dest, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                     reduce_range=False, activation_type=act_type, weight_type=w_type,
                                     nodes_to_exclude=sorted({*nodes_to_exclude, *float_attention}) or None,
                                     op_types_to_quantize=list(op_types) if op_types is not None else None,
                                     calibrate_method=calib_method, extra_options=opts, cache=cache)
            except Exception as exc:
                if sum(r.used for r in readers) == 0:
                    raise ModelError(f"no calibration image could be read ({len(reader.skipped)} unreadable, e.g. "
                                     f"{reader.skipped[:3]}); pass readable person crops") from exc
                raise ModelError(f"ONNX Runtime quantization of {str(src)!r} failed: {type(exc).__name__}: {exc}") \
                    from exc
            finally:
                reader.close()

        search: Optional[KeepFloatSearch] = None
        if auto:
            kept_float = {*excluded, *float_attention}
            quantizable = [n.name for n in prepared_model.graph.node if n.op_type in (op_types or ())
                           and n.name not in kept_float]
            groups = layer_groups(prepared_model, quantizable)
            del prepared_model
            search = _search(prepared, groups, excluded, search_sources, card, run, Path(work), float(target_cosine),
                             overlaps, progress, src)
            excluded = sorted(set(excluded) | set(search.float_nodes))
            gates = [g for g in gates if g not in excluded]
        else:
            del prepared_model
        quantized = Path(work) / "int8.onnx"
        run(excluded, quantized)
        num_used = max(r.used for r in readers)  # with a calibration cache only the first reader reads
        skipped = [*skipped_files, *sorted({s for r in readers for s in r.skipped})]
        if skipped:
            warnings.warn(f"{len(skipped)} calibration images could not be read and were skipped "
                          f"(e.g. {skipped[0]})", stacklevel=2)

        excluded = sorted({*excluded, *float_attention})  # what stays float, as the card reports it
        qmodel = onnx.load(str(quantized))
        n_q = sum(1 for n in qmodel.graph.node if n.op_type == "QuantizeLinear")
        if n_q == 0:
            raise ModelError(f"quantization of {str(src)!r} inserted no QuantizeLinear node (everything excluded?)")
        info = {
            "target": target, "format": "QDQ", "activation_type": act_type.name, "weight_type": w_type.name,
            "activation_symmetric": bool(extra.get("ActivationSymmetric")), "weight_symmetric": True,
            "per_channel": bool(per_channel), "calibration_method": method,
            "calibration_percentile": float(percentile) if method == "percentile" else None,
            "calibration_count": num_used,
            "keep_float_preset": keep_float, "excluded_nodes": excluded, "op_types": list(op_types) if op_types is not None else "all",
            "quantized_gates": gates,
            "keep_float_search": search.to_dict() if search is not None else None,
            "source_sha256": file_sha256(src),
            "onnxruntime_version": _ort_version(),
        }
        qcard = replace(card, extra={**card.extra, "quantization": info, "precision": "int8"})
        set_metadata(qmodel, card_metadata(qcard))
        if CARD_KEY not in {p.key for p in qmodel.metadata_props}:  # pragma: no cover - set_metadata guarantees it
            raise ModelError("internal error: model card missing from the quantized model")
        qmodel.producer_name = "apnet-edge"
        # keep ONNX Runtime's opset imports as they are: without "com.microsoft" its CPU session does not fuse the
        # Q/DQ pairs into QLinearConv & co. and the INT8 model runs at FP32 speed (measured: 52 vs 126 images/s)
        try:
            onnx.save(qmodel, str(tmp), save_as_external_data=False)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
    return QuantizeResult(path=out, card=qcard, target=target, activation_type=act_type.name,
                          weight_type=w_type.name, per_channel=bool(per_channel), num_calib=num_used,
                          calibration_method=method, excluded_nodes=tuple(excluded), num_quantize_nodes=n_q,
                          seconds=time.perf_counter() - t0, skipped_images=tuple(skipped),
                          quantized_gates=tuple(gates), search=search)


# ------------------------------------------------------------------------------------ keep_float="auto" search


def split_search_crops(sources: Sequence[Union[Path, np.ndarray]], search_crops: int,
                       num_calib: int) -> tuple[list[Union[Path, np.ndarray]], list[Union[Path, np.ndarray]], bool]:
    """(calibration items, search items, overlap): ``search_crops`` items spread over ``sources`` are set aside
    for the search; at most ``num_calib`` of the rest calibrate. When fewer than :data:`MIN_CALIB_AFTER_SEARCH`
    would be left, the search items calibrate too (overlap True)."""
    pick = set(spread_indices(len(sources), search_crops))
    search = [sources[i] for i in sorted(pick)]
    rest = [s for i, s in enumerate(sources) if i not in pick]
    if len(rest) < MIN_CALIB_AFTER_SEARCH:
        return [sources[i] for i in spread_indices(len(sources), num_calib)], search, True
    return [rest[i] for i in spread_indices(len(rest), num_calib)], search, False


def _calibration_cache(path: Path) -> Optional[Path]:
    """``path`` when this ONNX Runtime can cache calibration ranges between quantize_static calls, else None
    (then every search step calibrates again: correct, but each step takes a calibration's time)."""
    import inspect

    from onnxruntime.quantization import quantize_static

    if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        return path
    warnings.warn(f"onnxruntime {_ort_version()} cannot cache calibration ranges (quantize_static has no "
                  f"calibration_cache_path): the keep_float='auto' search calibrates again at every step; "
                  f"`pip install -U onnxruntime` makes it several times faster", stacklevel=3)
    return None


def _quantize_static(prepared: Path, dest: Path, reader: CropCalibrationReader, cache: Optional[Path],
                     **kwargs: Any) -> None:
    """ONNX Runtime's quantize_static, reusing the calibration ranges in ``cache`` when given (written on first
    use; the reader is not read then)."""
    from onnxruntime.quantization import quantize_static

    if cache is not None:
        kwargs["calibration_cache_path"] = str(cache)
    quantize_static(str(prepared), str(dest), reader, **kwargs)


def _search(prepared: Path, groups: Sequence[Any], excluded: Sequence[str],
            search_sources: Sequence[Union[Path, np.ndarray]], card: ModelCard, run: Any, work: Path,
            target_cosine: float, overlaps: bool, progress: bool, src: Path) -> KeepFloatSearch:
    """Run :func:`export.mixed_precision.search_keep_float` on ONNX Runtime: each trial quantizes with ``run``
    and embeds the search crops with the project's runner; cosines are per crop against the FP32 (prepared) model."""
    import cv2

    from apnet_edge.runners import load_runner

    if len(groups) < 2:
        raise ModelError(f"keep_float='auto': {str(src)!r} has {len(groups)} quantizable group(s); the search needs "
                         f"at least two (use --exclude or a preset)")
    crops = [c for c in (s if isinstance(s, np.ndarray) else cv2.imread(str(s), cv2.IMREAD_COLOR)
                         for s in search_sources) if c is not None]
    if not crops:
        raise ModelError(f"keep_float='auto': none of the {len(search_sources)} search crops could be read")

    def embed(path: Path) -> np.ndarray:
        with load_runner(path, backend="onnxruntime", card=card) as runner:
            return runner.infer(crops)

    reference = embed(prepared)
    trial = work / "trial.onnx"

    def evaluate(int8_groups: Sequence[str]) -> np.ndarray:
        run(sorted({*excluded, *float_nodes(groups, int8_groups)}), trial)
        return cosine_rows(embed(trial), reference)

    result = search_keep_float(groups, evaluate, target_cosine, len(crops), overlaps, progress=progress)
    if not result.quantized:
        best = min(range(len(groups)), key=lambda i: result.errors[i])
        raise ModelError(f"keep_float='auto': no part of {str(src)!r} reaches mean cosine {target_cosine} in INT8 on "
                         f"{len(crops)} search crops (the most tolerant group, {groups[best].name}, alone gives "
                         f"{1 - result.errors[best]:.4f}); lower target_cosine or deploy the FP32 model")
    log.info("keep_float='auto': %d of %d groups in INT8 (%.0f %% of the MACs), mean cosine %.5f on %d crops",
             len(result.quantized), len(groups), 100 * result.int8_mac_share, result.mean_cosine, len(crops))
    return result


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)
