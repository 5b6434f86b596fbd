"""The runner interface every backend implements (in the style of Polygraphy's runners).

A runner is a context manager: ``activate()`` acquires the backend's resources (session, compiled model),
``deactivate()`` releases them. ``infer(batch)`` takes EITHER a list of BGR uint8 crops (any sizes; they are
pre-processed from the model card) OR an already pre-processed float32 batch in the model's layout, splits it
into chunks the model accepts (``max_batch``; fixed-batch models get padded last chunks), and returns
float32 (N, D) embeddings, L2-normalised for re-ID models. Detector runners (``task="detector"``) return the
raw model output (N, ...) untouched.
"""

from __future__ import annotations

import abc
from typing import Any, Optional, Sequence, Union

import numpy as np

from apnet_edge.card import ModelCard
from apnet_edge.errors import ModelError
from apnet_edge.preprocess import preprocess_crops
from apnet_edge.profiling import ExecutionProfile

Dim = Optional[int]  # a graph dimension: an int when static, None when dynamic
Batch = Union[np.ndarray, Sequence[np.ndarray]]
TASKS = ("reid", "detector")


def graph_facts(input_shape: Sequence[Dim], output_shape: Sequence[Dim], task: str, where: str) -> dict[str, Any]:
    """What a graph says about its card: ``layout``, ``input_size``, ``embedding_dim`` where they are static.

    Raises ModelError when a re-ID model is not rank-4 in / rank-2 out, or when no channel axis of 3 is found.
    """
    if task not in TASKS:
        raise ModelError(f"task must be one of {TASKS}, found {task!r}")
    ins, outs = list(input_shape), list(output_shape)
    if len(ins) != 4:
        raise ModelError(f"{where}: input has shape {_fmt(ins)}; expected a rank-4 image batch "
                         f"(N, 3, H, W) or (N, H, W, 3)")
    if task == "reid" and len(outs) != 2:
        raise ModelError(f"{where}: output has shape {_fmt(outs)}; a re-ID model must output (N, D) embeddings "
                         f"(pass task='detector' for a detector)")
    facts: dict[str, Any] = {}
    if ins[1] == 3:
        facts["layout"], hw = "NCHW", (ins[2], ins[3])
    elif ins[3] == 3:
        facts["layout"], hw = "NHWC", (ins[1], ins[2])
    else:
        hw = (None, None)
    if hw[0] is not None and hw[1] is not None:
        facts["input_size"] = (int(hw[0]), int(hw[1]))
    if task == "reid" and outs[1] is not None:
        facts["embedding_dim"] = int(outs[1])
    return facts


def check_card(card: ModelCard, facts: dict[str, Any], task: str, source: str, where: str) -> None:
    """Raise ModelError when ``card`` (from ``source``) contradicts the static facts of the graph."""
    problems = []
    if "layout" in facts and facts["layout"] != card.layout:
        problems.append(f"layout {card.layout} but the graph is {facts['layout']}")
    if "input_size" in facts and tuple(facts["input_size"]) != tuple(card.input_size):
        problems.append(f"input_size {tuple(card.input_size)} but the graph takes {tuple(facts['input_size'])}")
    if task == "reid" and "embedding_dim" in facts and facts["embedding_dim"] != card.embedding_dim:
        problems.append(f"embedding_dim {card.embedding_dim} but the graph outputs {facts['embedding_dim']}")
    if problems:
        raise ModelError(f"{where}: the model card from {source} does not match the graph: {'; '.join(problems)}; "
                         f"fix the card")


def _fmt(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class Runner(abc.ABC):
    """Base class of every backend. Subclasses set the attributes in ``__init__`` (via :meth:`_setup`) and
    implement :meth:`_activate`, :meth:`_deactivate` and :meth:`_run` (one chunk of at most ``max_batch``)."""

    backend: str = "base"
    supports_flip: bool = False

    def _setup(self, *, card: ModelCard, name: str, task: str = "reid", normalize_output: Optional[bool] = None,
               max_batch: Optional[int] = None, fixed_batch: bool = False, input_name: str = "input",
               output_name: str = "output", precision: str = "fp32", input_dtype: Any = np.float32,
               card_source: str = "argument") -> None:
        if task not in TASKS:
            raise ModelError(f"task must be one of {TASKS}, found {task!r}")
        if max_batch is not None and int(max_batch) < 1:
            raise ModelError(f"max_batch must be >= 1 or None, found {max_batch}")
        self._card = card
        self.name = name
        self.task = task
        self.normalize_output = (task == "reid") if normalize_output is None else bool(normalize_output)
        self._max_batch = None if max_batch is None else int(max_batch)
        self.fixed_batch = bool(fixed_batch)
        self._input_name = input_name
        self._output_name = output_name
        self._precision = precision
        self.input_dtype = np.dtype(input_dtype)
        self.card_source = card_source
        self.is_active = False

    # ------------------------------------------------------------------ properties
    @property
    def card(self) -> ModelCard:
        """The model card: input size, normalisation, layout, embedding dimension."""
        return self._card

    @property
    def max_batch(self) -> Optional[int]:
        """Largest batch one model call takes (None: any); bigger inputs are split."""
        return self._max_batch

    @property
    def precision(self) -> str:
        """Compute precision, e.g. ``"fp32"``, ``"fp16"``, ``"bf16"``, ``"int8"``."""
        return self._precision

    @property
    def input_name(self) -> str:
        return self._input_name

    @property
    def output_name(self) -> str:
        return self._output_name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-item input shape the runner feeds: (3, H, W) or (H, W, 3) from the card's layout."""
        h, w = self._card.input_size
        return (3, h, w) if self._card.layout == "NCHW" else (h, w, 3)

    # ------------------------------------------------------------------ life cycle
    def activate(self) -> Runner:
        """Acquire the backend's resources (idempotent)."""
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release the backend's resources (idempotent); ``activate()`` may be called again later."""
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, task={self.task}, input={self.input_shape}, "
                f"max_batch={self.max_batch}, precision={self.precision})")

    def node_profile(self, executions: int) -> ExecutionProfile:
        """Mean time per node over the last ``executions`` model executions (``_run`` calls), slowest first, and their
        mean time; needs a runner opened with ``profile=True``. Backends that cannot profile raise ModelError."""
        raise ModelError(f"{self.name}: per-node profiles are available on ONNX Runtime and OpenVINO, not on "
                         f"{self.backend}")

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:
        """Run one chunk ``x`` (n <= max_batch, exactly max_batch for fixed-batch models) -> raw output (n, ...)."""

    # ------------------------------------------------------------------ inference
    def prepare(self, batch: Batch) -> np.ndarray:
        """Validate or pre-process ``batch`` into the float32 model input (N, *input_shape).

        Accepts a sequence of BGR uint8 crops (H_i, W_i, 3), a uint8 stack (N, H, W, 3) of crops, or a
        pre-processed float32 array (N, *input_shape).
        """
        expect = (f"a list of BGR uint8 crops (H, W, 3) or a pre-processed float32 array "
                  f"(N, {', '.join(map(str, self.input_shape))}) in {self._card.layout} layout")
        if isinstance(batch, np.ndarray):
            if batch.dtype == np.uint8 and batch.ndim == 4 and batch.shape[-1] == 3:
                return preprocess_crops(batch, self._card)
            if batch.dtype != np.float32:
                raise ModelError(f"{self.name}: got an array of dtype {batch.dtype} and shape {tuple(batch.shape)}; "
                                 f"expected {expect}")
            if batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape:
                raise ModelError(f"{self.name}: got a float32 array of shape {tuple(batch.shape)}; expected {expect}")
            return batch
        if isinstance(batch, (list, tuple)):
            return preprocess_crops(batch, self._card)
        raise ModelError(f"{self.name}: got {type(batch).__name__}; expected {expect}")

    def infer(self, batch: Batch) -> np.ndarray:
        """Embed (or detect on) ``batch``; see :meth:`prepare` for what it accepts.

        Returns float32 (N, D) (L2-normalised when ``normalize_output``) for re-ID models, the raw output
        (N, ...) for detectors. N = 0 gives (0, D). Activates the runner on first use if needed.
        """
        x = self.prepare(batch)
        n = int(x.shape[0])
        if n == 0:
            return np.zeros((0, self._card.embedding_dim if self.task == "reid" else 0), np.float32)
        if not self.is_active:
            self.activate()
        if x.dtype != self.input_dtype:
            x = x.astype(self.input_dtype)
        step = self._max_batch or n
        outs = []
        for start in range(0, n, step):
            chunk = x[start:start + step]
            m = chunk.shape[0]
            if self.fixed_batch and m < step:  # pad the last chunk of a fixed-batch model, drop the padding after
                pad = np.repeat(chunk[-1:], step - m, axis=0)
                chunk = np.concatenate([chunk, pad], axis=0)
            out = np.asarray(self._run(np.ascontiguousarray(chunk)))
            outs.append(out[:m])
        y = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)
        y = y.astype(np.float32, copy=False)
        if self.task == "reid":
            if y.ndim != 2 or y.shape[0] != n:
                raise ModelError(f"{self.name}: output has shape {tuple(y.shape)} for {n} inputs; expected ({n}, D)")
            if self.normalize_output:
                y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return y


def infer_flip_averaged(runner: Any, crops: Sequence[np.ndarray]) -> np.ndarray:
    """(N, D) float32 embeddings of the BGR uint8 ``crops``, each summed with its horizontal mirror's and
    L2-normalised (the standard test-time flip). A runner that flips inside the model (``supports_flip``, e.g. a
    PyTorch checkpoint: features summed before their normalisation) does it itself; others embed the crops and
    their mirror images in one call."""
    if getattr(runner, "supports_flip", False):
        return np.asarray(runner.infer(crops, flip=True), dtype=np.float32)
    n = len(crops)
    both = np.asarray(runner.infer([*crops, *(np.ascontiguousarray(c[:, ::-1]) for c in crops)]), dtype=np.float32)
    if both.ndim != 2 or both.shape[0] != 2 * n:
        raise ModelError(f"the re-ID model returned shape {tuple(both.shape)} for {2 * n} crops (with their mirror "
                         f"images); expected ({2 * n}, D)")
    f = both[:n] + both[n:]
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


CARD_KEY = "apnet_edge.card"  # ONNX metadata_props key holding ModelCard.to_json()


def resolve_card(model_path: Any, card: Optional[ModelCard], metadata_json: Optional[str], facts: dict[str, Any],
                 task: str, where: str) -> tuple[ModelCard, str]:
    """Pick the model card and say where it came from: ``card`` passed in > model metadata > sidecar file >
    (detectors only) what the graph states. Checks it against the graph's ``facts``.

    Raises ModelError explaining how to write a sidecar when a re-ID model's normalisation cannot be known.
    """
    from apnet_edge.runners.sidecar import example_sidecar, find_sidecar, read_sidecar

    if card is not None:
        if not isinstance(card, ModelCard):
            raise ModelError(f"card must be an apnet_edge.card.ModelCard, found {type(card).__name__}")
        chosen, source = card, "the card passed in"
    elif metadata_json:
        try:
            chosen = ModelCard.from_json(metadata_json)
        except ModelError as exc:
            raise ModelError(f"{where}: metadata '{CARD_KEY}' is not a valid model card: {exc}") from None
        except ValueError as exc:
            raise ModelError(f"{where}: metadata '{CARD_KEY}' is not valid JSON: {exc}") from None
        source = f"metadata '{CARD_KEY}'"
    elif model_path is not None and find_sidecar(model_path) is not None:
        side = find_sidecar(model_path)
        chosen, source = read_sidecar(side, defaults=facts), f"sidecar {str(side)!r}"
    elif task == "detector":
        if "input_size" not in facts or "layout" not in facts:
            raise ModelError(f"{where}: the graph has no static (H, W) input or no channel axis of 3; pass a "
                             f"card with input_size and layout")
        chosen = ModelCard(arch="detector", backbone="", level=0, input_size=facts["input_size"],
                           mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), color_order="BGR", pixel_scale=1.0,
                           layout=facts["layout"], embedding_dim=0)
        source = "the graph"
    else:
        from pathlib import Path

        stem = Path(str(model_path)).stem if model_path is not None else "model"
        known = ", ".join(f"{k}={v}" for k, v in facts.items()) or "nothing"
        example = example_sidecar(None, **{k: list(v) if isinstance(v, tuple) else v for k, v in facts.items()})
        raise ModelError(f"{where} carries no model card (no '{CARD_KEY}' metadata, no sidecar) and its graph "
                         f"only tells {known}: the pixel normalisation cannot be known. Write a sidecar "
                         f"{stem}.card.json beside the model, e.g. {example} (BGR 0-255 models: "
                         f'"color_order": "BGR", "pixel_scale": 1, "mean": [0, 0, 0], "std": [1, 1, 1]), '
                         f"or pass card=ModelCard(...)")
    check_card(chosen, facts, task, source, where)
    return chosen, source


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first meaningful line of a backend's (often multi-line) exception message, shortened."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    for ln in lines:  # backends put the useful part after "Exception from ..." / "[ONNXRuntimeError]" prefixes
        if not ln.lower().startswith(("exception from", "check '")):
            text = ln
            break
    return text if len(text) <= limit else text[:limit - 3] + "..."
