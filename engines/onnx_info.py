"""Read what a build needs from an ONNX file (no GPU, no TensorRT): input name and shape, Q/DQ and FP16 content,
the model card in ``metadata_props``, and the file's sha256. Weights are not loaded (external data stays on disk).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from apnet_edge.card import ModelCard
from apnet_edge.errors import ModelError, require
from apnet_edge.files import file_sha256
from apnet_edge.runners.base import CARD_KEY, graph_facts
from apnet_edge.runners.sidecar import read_sidecar, sidecar_candidates
from engines.plan import OnnxFacts

PathLike = Union[str, Path]
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
ONNX_FLOAT16 = 10  # TensorProto.FLOAT16
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64",
               16: "bfloat16"}


def _dims(value_info: Any) -> tuple[Optional[int], ...]:
    shape = value_info.type.tensor_type.shape
    return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim)


def _nodes(graph: Any) -> Any:
    """Every node of ``graph`` and of its subgraphs (If/Loop bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _nodes(attr.g)
            for g in attr.graphs:
                yield from _nodes(g)


def inspect_onnx(path: PathLike, card_file: Optional[PathLike] = None) -> OnnxFacts:
    """The facts :func:`engines.plan.plan_build` needs about an ONNX model.

    The model card comes from the ONNX metadata (``apnet_edge.card``), else from ``card_file``, else from a
    ``<stem>.card.json`` beside the model (third-party re-ID models, e.g. ``configs/reid_0248.card.json``).

    Raises:
        ModelError: the file is missing, not ONNX, has not exactly one (non-initializer) input, or carries a broken
            model card.
        MissingDependencyError: the ``onnx`` package is absent (``pip install 'apnet-edge[trt]'``).
    """
    onnx = require("onnx", "trt", "reading the ONNX model an engine is built from")
    p = Path(path)
    where = f"ONNX model {str(p)!r}"
    if not p.is_file():
        raise ModelError(f"{where} not found; check the path")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"{where} is not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"{where} has {len(inputs)} inputs {[i.name for i in inputs]}; build-engine takes models "
                         f"with one image input")
    inp = inputs[0]
    elem = int(inp.type.tensor_type.elem_type)
    has_qdq = any(n.op_type in QDQ_OPS for n in _nodes(graph))
    has_fp16 = (elem == ONNX_FLOAT16
                or any(int(t.data_type) == ONNX_FLOAT16 for t in graph.initializer)
                or any(int(o.type.tensor_type.elem_type) == ONNX_FLOAT16 for o in graph.output)
                or any(n.op_type == "Cast" and any(a.name == "to" and a.i == ONNX_FLOAT16 for a in n.attribute)
                       for n in _nodes(graph)))
    props = {m.key: m.value for m in model.metadata_props}
    card = None
    if CARD_KEY in props:
        try:
            card = ModelCard.from_json(props[CARD_KEY])
        except (ModelError, ValueError) as exc:
            raise ModelError(f"{where}: metadata {CARD_KEY!r} is not a valid model card: {exc}") from None
    source = "metadata" if card is not None else ""
    if card is None:
        side = Path(card_file) if card_file is not None else next(
            (c for c in sidecar_candidates(p) if c.name.endswith(".card.json") and c.is_file()), None)
        if side is not None:
            out_dims = list(_dims(graph.output[0])) if len(graph.output) else []
            try:
                facts = graph_facts(list(_dims(inp)), out_dims, "reid", where)
            except ModelError:
                facts = {}
            card = read_sidecar(side, defaults=facts)
            source = f"sidecar {str(side)!r}"
    external = sorted({e.value for t in graph.initializer if int(t.data_location) == 1
                       for e in t.external_data if e.key == "location"})
    opset = max((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxFacts(path=p, sha256=file_sha256(p), input_name=inp.name, input_shape=_dims(inp),
                     input_dtype=ONNX_DTYPES.get(elem, str(elem)), outputs=tuple(o.name for o in graph.output),
                     has_qdq=has_qdq, has_fp16=has_fp16, card=card, opset=opset, external_data=tuple(external),
                     card_source=source)
