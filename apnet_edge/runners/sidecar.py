"""Model-card sidecar files: the card of a model that does not carry one (third-party ONNX, OpenVINO IR, engines).

A sidecar is a JSON object with :class:`~apnet_edge.card.ModelCard` keys, saved beside the model as
``<stem>.card.json`` (preferred), ``<name>.card.json``, ``<stem>.json`` or ``<name>.json``; for
``person-reidentification-retail-0248.onnx``::

    {"arch": "external", "input_size": [256, 128], "layout": "NHWC", "color_order": "BGR",
     "pixel_scale": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1], "embedding_dim": 256}

The normalisation keys (``color_order``, ``pixel_scale``, ``mean``, ``std``) are required, because a wrong guess
there gives plausible-looking but wrong embeddings. ``input_size``, ``layout`` and ``embedding_dim`` may be left
out when the model's graph states them (the runner fills them in and checks the others against the graph).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from apnet_edge.card import ModelCard
from apnet_edge.errors import ModelError

PathLike = Union[str, Path]
REQUIRED_KEYS = ("color_order", "pixel_scale", "mean", "std")


def sidecar_candidates(model_path: PathLike) -> list[Path]:
    """Sidecar file names looked for beside ``model_path``, in order of preference."""
    p = Path(model_path)
    names = [f"{p.stem}.card.json", f"{p.name}.card.json", f"{p.stem}.json", f"{p.name}.json"]
    out: list[Path] = []
    for n in names:
        c = p.with_name(n)
        if c not in out and c != p:
            out.append(c)
    return out


def find_sidecar(model_path: PathLike) -> Optional[Path]:
    """The first existing sidecar beside ``model_path``, or None."""
    for c in sidecar_candidates(model_path):
        if c.is_file():
            return c
    return None


def example_sidecar(card: Optional[ModelCard] = None, **overrides: Any) -> str:
    """An example sidecar text (one JSON line) filled from ``card``/``overrides``, for error messages."""
    d: dict[str, Any] = {"arch": "external", "input_size": [256, 128], "layout": "NCHW", "color_order": "RGB",
                         "pixel_scale": 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                         "embedding_dim": 512}
    if card is not None:
        d.update({"input_size": list(card.input_size), "layout": card.layout, "embedding_dim": card.embedding_dim})
    d.update(overrides)
    return json.dumps(d)


def card_from_mapping(data: Any, source: str, defaults: Optional[dict[str, Any]] = None,
                      require_normalisation: bool = True) -> ModelCard:
    """A ModelCard from a sidecar mapping; ``defaults`` (e.g. facts read from the graph) fill missing keys."""
    if not isinstance(data, dict):
        raise ModelError(f"model card {source} must be a JSON object of ModelCard keys, found {type(data).__name__}")
    if require_normalisation and not data.get("normalize_in_graph", False):
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ModelError(f"model card {source} lacks {missing}: the normalisation must be stated, e.g. "
                             f"{example_sidecar()}")
    merged = {**(defaults or {}), **data}
    try:
        return ModelCard.from_dict(merged)
    except ModelError as exc:
        raise ModelError(f"model card {source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model card {source} has a bad value: {exc}") from None


def read_sidecar(path: PathLike, defaults: Optional[dict[str, Any]] = None) -> ModelCard:
    """Read a sidecar card. ``path``: the ``.json`` itself, or a model file whose sidecar is looked for beside it.

    Raises ModelError naming the file when it is missing, not JSON, or not a valid card.
    """
    p = Path(path)
    if p.suffix.lower() != ".json":
        found = find_sidecar(p)
        if found is None:
            names = ", ".join(c.name for c in sidecar_candidates(p))
            raise ModelError(f"no model-card sidecar beside {str(p)!r} (looked for {names}); write one, e.g. "
                             f"{p.stem}.card.json containing {example_sidecar()}")
        p = found
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read model-card sidecar {str(p)!r}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"model-card sidecar {str(p)!r} is not valid JSON: {exc}") from None
    return card_from_mapping(data, f"sidecar {str(p)!r}", defaults)


def write_sidecar(path: PathLike, card: ModelCard) -> Path:
    """Write ``card`` as a sidecar. ``path``: the ``.json`` to write, or a model file (writes ``<stem>.card.json``
    beside it). Returns the path written."""
    p = Path(path)
    if p.suffix.lower() != ".json":
        p = p.with_name(f"{p.stem}.card.json")
    p.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return p
