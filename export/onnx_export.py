"""Checkpoint -> ONNX: the embedding path only, dynamic batch, model card in the metadata, parity-checked.

The exported graph has one input ``images`` (N, 3, H, W) float32 and one output ``embeddings`` (N, D) float32,
L2-normalised; N is dynamic (the number of person crops changes every frame). No classifier is exported.

Why opset 17 and the TorchScript exporter by default: TensorRT 8.5/8.6 (JetPack 5 on Jetson Xavier/Orin)
parses ONNX up to opset 17; the dynamo exporter of torch >= 2.5 emits opset 18+ only. The TorchScript
exporter (``torch.onnx.export(..., dynamo=False)``) still works in torch 2.14, writes a single file and takes
``dynamic_axes``. ``exporter="dynamo"`` is available with ``opset >= 18`` (TensorRT 10 / JetPack 6).

``normalize_in_graph=True`` moves the pre-processing into the graph: the model then takes BGR pixels 0-255
as float32 (N, 3, H, W) and does BGR->RGB, /255 and mean/std itself, so a device feeds the resized crop as is.
The card then says ``color_order="BGR", pixel_scale=1, mean=0, std=1, normalize_in_graph=True``.

Every export ends with a parity check: the same real crops through PyTorch and ONNX Runtime; any crop whose
embeddings' cosine similarity falls below ``min_cosine`` fails the export (nothing is left at ``out``).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from apnet_edge.card import ModelCard
from apnet_edge.errors import ModelError, require
from apnet_edge.files import file_sha256

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
CARD_KEY = "apnet_edge.card"
DEFAULT_OPSET = 17
MAX_TRT8_OPSET = 17
EXPORTERS = ("torchscript", "dynamo")
SYNTHETIC_PARITY_CROPS = 8


@dataclass(frozen=True)
class ParityStats:
    """Cosine similarity of ONNX Runtime vs PyTorch embeddings, per crop; ``source``: "crops" or "synthetic"."""

    mean_cosine: float
    min_cosine: float
    worst_index: int
    n_crops: int
    source: str = "crops"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote. ``seconds`` is the wall time of the whole export."""

    path: Path
    card: ModelCard
    opset: int
    exporter: str
    parity: ParityStats
    simplifier: Optional[str]
    checkpoint_sha256: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "card": self.card.to_dict(), "opset": self.opset, "exporter": self.exporter,
                "parity": asdict(self.parity), "simplifier": self.simplifier,
                "checkpoint_sha256": self.checkpoint_sha256, "seconds": round(self.seconds, 3)}


# ------------------------------------------------------------------------------------------------ helpers


def temp_path_for(out: Path) -> Path:
    """A hidden temporary name in ``out``'s folder (so that the final ``os.replace`` is atomic)."""
    return out.with_name(f".{out.name}.{os.getpid()}.tmp")


def card_metadata(card: ModelCard) -> dict[str, str]:
    """The ``metadata_props`` written into every apnet-edge ONNX: the card as JSON plus readable keys."""
    extra = card.extra or {}
    meta = {
        CARD_KEY: card.to_json(),
        "arch": card.arch,
        "input_size": json.dumps(list(card.input_size)),
        "mean": json.dumps(list(card.mean)),
        "std": json.dumps(list(card.std)),
        "color_order": card.color_order,
        "pixel_scale": repr(float(card.pixel_scale)),
        "layout": card.layout,
        "embedding_dim": str(int(card.embedding_dim)),
        "normalize_in_graph": json.dumps(bool(card.normalize_in_graph)),
    }
    if extra.get("checkpoint_sha256"):
        meta["checkpoint_sha256"] = str(extra["checkpoint_sha256"])
    return meta


def set_metadata(model: Any, meta: dict[str, str]) -> None:
    """Replace ``model.metadata_props`` entries with ``meta`` (other keys are kept)."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    for k, v in [*keep, *meta.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def read_card(model: Any, source: str = "<model>") -> ModelCard:
    """The :class:`ModelCard` stored in an ONNX ``ModelProto``'s metadata; ModelError if absent or broken."""
    props = {p.key: p.value for p in model.metadata_props}
    if CARD_KEY not in props:
        raise ModelError(f"{source} has no {CARD_KEY!r} metadata: it is not a re-ID model exported by apnet-edge; "
                         f"export it with `apnet-edge export` (or pass its model card explicitly)")
    try:
        return ModelCard.from_json(props[CARD_KEY])
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{source}: the {CARD_KEY!r} metadata is not a valid model card: {exc}") from exc


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) arrays -> (N,) float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
    return (a * b).sum(1) / (na * nb)


def synthetic_crops(n: int = SYNTHETIC_PARITY_CROPS, size: tuple[int, int] = (160, 64), seed: int = 0) -> list[np.ndarray]:
    """Deterministic smooth random BGR uint8 images (H, W, 3), used for parity when no real crops are given."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
        out.append(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))
    return out


def _make_wrapper(model: Any, normalize_in_graph: bool, card: ModelCard) -> Any:
    """nn.Module whose forward is ``model.embed(x, flip=False)``, optionally with the pre-processing in front."""
    import torch
    import torch.nn as nn

    class EmbedOnly(nn.Module):
        """(N,3,H,W) float32 -> (N,D) L2-normalised embeddings; no classifier, no flip."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.normalize = normalize_in_graph
            if normalize_in_graph:
                # (x_rgb / scale - mean) / std == (x_rgb - scale * mean) / (scale * std)
                scale = float(card.pixel_scale)
                mean = torch.tensor([scale * m for m in card.mean], dtype=torch.float32).view(1, 3, 1, 1)
                std = torch.tensor([scale * s for s in card.std], dtype=torch.float32).view(1, 3, 1, 1)
                self.register_buffer("offset", mean)
                self.register_buffer("inv_std", 1.0 / std)
                self.swap = card.color_order == "RGB"  # the graph takes BGR; swap only if the model wants RGB

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.normalize:
                if self.swap:
                    x = torch.flip(x, dims=[1])
                x = (x - self.offset) * self.inv_std
            return self.model.embed(x, flip=False)

    return EmbedOnly().eval()


def _simplify(model: Any) -> tuple[Any, Optional[str]]:
    """Simplify with onnxslim, else onnxsim, else return the model unchanged (with a warning)."""
    try:
        import onnxslim
    except ImportError:
        onnxslim = None
    if onnxslim is not None:
        try:
            return onnxslim.slim(model), "onnxslim"
        except Exception as exc:  # a simplifier bug must not stop the export: the parity check follows
            warnings.warn(f"onnxslim failed ({exc}); trying onnxsim / keeping the unsimplified graph", stacklevel=3)
    try:
        import onnxsim
    except ImportError:
        warnings.warn("neither onnxslim nor onnxsim is installed: the ONNX is not simplified "
                      "(pip install 'apnet-edge[export]')", stacklevel=3)
        return model, None
    try:
        simplified, ok = onnxsim.simplify(model)
        if ok:
            return simplified, "onnxsim"
        warnings.warn("onnxsim could not validate its simplified graph; keeping the unsimplified one", stacklevel=3)
    except Exception as exc:
        warnings.warn(f"onnxsim failed ({exc}); keeping the unsimplified graph", stacklevel=3)
    return model, None


def _torch_export(wrapper: Any, dummy: Any, path: Path, opset: int, exporter: str) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape checks, exporter deprecation notes
        if exporter == "torchscript":
            torch.onnx.export(
                wrapper, (dummy,), str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            )
        else:
            batch = torch.export.Dim("N", min=1, max=4096)
            program = torch.onnx.export(
                wrapper, (dummy,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), external_data=False, optimize=True,
                verbose=False,
            )
            program.save(str(path), external_data=False)


def _run_onnx(path: Path, batch: np.ndarray, threads: Optional[int] = None) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    outs = []
    for start in range(0, len(batch), 32):
        outs.append(sess.run([OUTPUT_NAME], {INPUT_NAME: batch[start:start + 32]})[0])
    return np.concatenate(outs, axis=0)


def _torch_embed(model: Any, batch: np.ndarray) -> np.ndarray:
    import torch

    outs = []
    with torch.inference_mode():
        for start in range(0, len(batch), 32):
            outs.append(model.embed(torch.from_numpy(batch[start:start + 32]), flip=False).float().numpy())
    return np.concatenate(outs, axis=0)


def parity_check(model: Any, onnx_path: PathLike, crops: Sequence[np.ndarray], torch_card: ModelCard,
                 onnx_card: ModelCard, min_cosine: float, source: str = "crops") -> ParityStats:
    """Embed ``crops`` (BGR uint8) with the PyTorch ``model`` and with ONNX Runtime; ModelError below ``min_cosine``.

    Each side gets the crops pre-processed by its own card (they differ with ``normalize_in_graph``).
    """
    from apnet_edge.preprocess import preprocess_crops

    crops = list(crops)
    if not crops:
        raise ModelError("parity check needs at least one crop; pass real person crops or None for synthetic ones")
    ref = _torch_embed(model, preprocess_crops(crops, torch_card))
    got = _run_onnx(Path(onnx_path), preprocess_crops(crops, onnx_card))
    if ref.shape != got.shape:
        raise ModelError(f"parity: ONNX embeddings have shape {got.shape}, PyTorch {ref.shape}")
    cos = cosine_rows(ref, got)
    cos = np.where(np.isfinite(cos), cos, -1.0)
    worst = int(np.argmin(cos))
    stats = ParityStats(mean_cosine=float(cos.mean()), min_cosine=float(cos[worst]), worst_index=worst,
                        n_crops=len(crops), source=source)
    if stats.min_cosine < min_cosine:
        raise ModelError(
            f"ONNX export parity failed: crop {worst} has cosine {stats.min_cosine:.6f} between ONNX Runtime and "
            f"PyTorch embeddings (required >= {min_cosine}; mean over {len(crops)} crops {stats.mean_cosine:.6f}); "
            f"the exported graph computes something else than the model: try another opset/exporter, or "
            f"--no-simplify to rule out the simplifier")
    return stats


# ------------------------------------------------------------------------------------------------ export


def export_onnx(checkpoint: PathLike, out: PathLike, opset: int = DEFAULT_OPSET, normalize_in_graph: bool = False,
                simplify: bool = True, parity_crops: Optional[Sequence[np.ndarray]] = None,
                min_cosine: float = 0.9999, exporter: str = "torchscript",
                batch_size_hint: int = 2, fuse_attention: bool = True) -> ExportResult:
    """Export the embedding path of an apnet-edge checkpoint to a single-file ONNX at ``out``.

    Args:
        checkpoint: ``.pt`` written by ``train.checkpoint.save_checkpoint``.
        out: the ``.onnx`` to write (atomically: a temp file in the same folder, renamed at the end).
        opset: ONNX opset; 17 (default) is the highest TensorRT 8.6 / JetPack 5 parses.
        normalize_in_graph: the graph takes BGR float 0-255 and normalises itself (see the module doc).
        simplify: run onnxslim (or onnxsim if that is what is installed).
        parity_crops: BGR uint8 person crops (H, W, 3) for the PyTorch-vs-ONNX Runtime check; None: a few
            synthetic images (real crops are better: they exercise realistic activations).
        min_cosine: minimal per-crop cosine similarity for the export to pass.
        exporter: ``"torchscript"`` (default, any opset) or ``"dynamo"`` (opset >= 18).
        batch_size_hint: batch of the dummy input used to trace (>1 so no size-1 dimension gets baked in).
        fuse_attention: export each APNet-C attention pyramid as one per-channel affine map computed from the
            channel means (the same function, one pass over the feature map instead of five: see
            ``AttentionPyramidC.affine``), its channel means as a GlobalAveragePool (which INT8 runtimes run on
            the uint8 map), and the last pyramid applied to the pooled feature instead of the map (the mean of a
            per-channel affine map is that map of the mean); the parity check compares it with the step-wise
            PyTorch model.

    Raises:
        CheckpointError: unusable checkpoint. ModelError: export, simplification or parity failure.
        MissingDependencyError: torch/onnx/onnxruntime missing (the ``export`` extra).
    """
    t0 = time.perf_counter()
    if exporter not in EXPORTERS:
        raise ModelError(f"exporter must be one of {EXPORTERS}, found {exporter!r}")
    if exporter == "dynamo" and opset < 18:
        raise ModelError(f"the dynamo exporter writes opset 18 or newer, asked for opset {opset}; use "
                         f"exporter='torchscript' for opset <= 17 (TensorRT 8.6) or pass opset=18")
    if opset < 13:
        raise ModelError(f"opset {opset} is too old; use 17 (TensorRT 8.6, ONNX Runtime) or newer")
    if opset > MAX_TRT8_OPSET:
        log.info("opset %d: TensorRT 8.x (JetPack 5) cannot parse this file; TensorRT 10 can", opset)
    torch = require("torch", "export", "ONNX export")
    onnx = require("onnx", "export", "ONNX export")
    require("onnxruntime", "export", "the ONNX parity check")
    from train.checkpoint import load_checkpoint, model_from_checkpoint

    checkpoint = Path(checkpoint)
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ModelError(f"output {str(out)!r} must end in .onnx")
    ckpt = load_checkpoint(checkpoint)
    sha = file_sha256(checkpoint)
    model = model_from_checkpoint(ckpt, with_classifier=False).float().eval()
    base_card: ModelCard = model.card
    stored = ckpt.get("model_card") or {}
    extra = {**(stored.get("extra") or {}), **base_card.extra} if isinstance(stored, dict) else dict(base_card.extra)
    from train.models.attention import AttentionPyramidC

    pyramids = [m for m in model.modules() if isinstance(m, AttentionPyramidC)]  # APNet-S masks are spatial
    fused = bool(fuse_attention and pyramids)
    extra.update({"checkpoint_sha256": sha, "checkpoint": checkpoint.name, "opset": int(opset), "exporter": exporter,
                  "epoch": ckpt.get("epoch"), "torch_version": torch.__version__, "precision": "fp32",
                  "attention_fused": fused})
    base_card = replace(base_card, extra=extra)
    if normalize_in_graph:
        onnx_card = replace(base_card, color_order="BGR", pixel_scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                            normalize_in_graph=True,
                            extra={**extra, "graph_normalization": {
                                "color_order_in": "BGR", "color_order_model": base_card.color_order,
                                "pixel_scale": base_card.pixel_scale, "mean": list(base_card.mean),
                                "std": list(base_card.std)}})
    else:
        onnx_card = base_card

    wrapper = _make_wrapper(model, normalize_in_graph, base_card)
    h, w = base_card.input_size
    gen = torch.Generator().manual_seed(0)
    dummy = torch.rand(max(2, batch_size_hint), 3, h, w, generator=gen)
    dummy = dummy * 255.0 if normalize_in_graph else (dummy - 0.45) / 0.225

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(out)
    simplifier: Optional[str] = None
    try:
        try:
            for m in pyramids:
                m.fused = fused
            _torch_export(wrapper, dummy, tmp, opset, exporter)
        except Exception as exc:
            raise ModelError(f"torch.onnx.export ({exporter}, opset {opset}) failed for {checkpoint}: "
                             f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                             ) from exc
        finally:
            for m in pyramids:
                m.fused = False  # the parity check runs the step-wise (training) path in PyTorch
        proto = onnx.load(str(tmp))  # loads any external data the exporter may have written next to it
        for leftover in tmp.parent.glob(f"{tmp.name}*.data"):
            leftover.unlink()
        if simplify:
            proto, simplifier = _simplify(proto)
        onnx_card = replace(onnx_card, extra={**onnx_card.extra, "simplifier": simplifier})
        proto.producer_name = "apnet-edge"
        proto.doc_string = (f"apnet-edge re-ID embedding model ({base_card.arch}, {base_card.backbone}); input "
                            f"'{INPUT_NAME}' (N,3,{h},{w}) float32, output '{OUTPUT_NAME}' "
                            f"(N,{base_card.embedding_dim}) L2-normalised")
        set_metadata(proto, card_metadata(onnx_card))
        try:
            onnx.checker.check_model(proto)
        except Exception as exc:
            raise ModelError(f"the exported ONNX does not pass onnx.checker: {exc}") from exc
        onnx.save(proto, str(tmp), save_as_external_data=False)

        if parity_crops is None:
            crops, source = synthetic_crops(), "synthetic"
        else:
            crops, source = list(parity_crops), "crops"
        stats = parity_check(model, tmp, crops, base_card, onnx_card, min_cosine, source)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportResult(path=out, card=onnx_card, opset=int(opset), exporter=exporter, parity=stats,
                        simplifier=simplifier, checkpoint_sha256=sha, seconds=time.perf_counter() - t0)


def load_onnx_card(path: PathLike) -> ModelCard:
    """The model card of an ONNX file written by apnet-edge (reads the graph without its weights)."""
    onnx = require("onnx", "export", "reading ONNX metadata")
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ONNX model {str(p)!r} does not exist")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{str(p)!r} is not a readable ONNX model: {exc}") from exc
    return read_card(proto, str(p))
