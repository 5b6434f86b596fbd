"""PyTorch runner for apnet-edge training checkpoints (``.pt``/``.pth``): the reference the other backends are
compared with. Needs torch (``pip install 'apnet-edge[train]'``) and the ``train`` package."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from apnet_edge.card import ModelCard
from apnet_edge.errors import ApnetError, ModelError, require
from apnet_edge.runners.base import Batch, Runner


class TorchRunner(Runner):
    """Embed crops with an APNet checkpoint.

    Args:
        path: the checkpoint; loaded with ``train.checkpoint.model_from_checkpoint(path, with_classifier=False)``.
        card: a ModelCard overriding ``model.card``.
        threads: ``torch.set_num_threads`` (process-wide) when given.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... or ``"auto"`` (CUDA when available).
        precision: ``"fp32"`` or ``"fp16"`` (CUDA only).
        model: an already built ``nn.Module`` with ``.card`` and ``.embed(x (N,3,H,W) float) -> (N, D)``
            (used instead of loading ``path``; handy for tests and for in-process evaluation).
        max_batch: crops per forward pass (None: all at once).
    """

    backend = "torch"
    supports_flip = True

    def __init__(self, path: Union[str, Path, None] = None, card: Optional[ModelCard] = None,
                 threads: Optional[int] = None, device: str = "cpu", precision: str = "fp32", model: Any = None,
                 normalize_output: bool = True, max_batch: Optional[int] = None) -> None:
        self._torch = torch = require("torch", "train", "running PyTorch checkpoints")
        if precision not in ("fp32", "fp16"):
            raise ModelError(f"torch runner precision must be 'fp32' or 'fp16', found {precision!r}")
        if device == "auto":  # what the CLI's --device defaults to
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self._device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ModelError(f"bad torch device {device!r}: {exc}") from None
        if precision == "fp16" and self._device.type != "cuda":
            raise ModelError("torch runner precision 'fp16' needs a CUDA device; use device='cuda' or 'fp32'")
        if threads:
            torch.set_num_threads(int(threads))
        self.path = Path(path) if path is not None else None
        if model is None:
            if self.path is None:
                raise ModelError("TorchRunner needs a checkpoint path or model=")
            if not self.path.is_file():
                raise ModelError(f"checkpoint {str(self.path)!r} not found; check the path")
            from train.checkpoint import model_from_checkpoint

            try:
                model = model_from_checkpoint(self.path, with_classifier=False)
            except ApnetError:
                raise
            except Exception as exc:
                raise ModelError(f"cannot load checkpoint {str(self.path)!r}: {exc}") from None
        if not hasattr(model, "embed"):
            raise ModelError(f"torch runner model {type(model).__name__} has no .embed(x) method")
        if card is None:
            card = getattr(model, "card", None)
            if not isinstance(card, ModelCard):
                raise ModelError(f"torch runner model {type(model).__name__} has no .card (ModelCard); pass card=")
            source = "model.card"
        else:
            source = "the card passed in"
        if card.layout != "NCHW":
            raise ModelError(f"torch models take NCHW input; the card says {card.layout}")
        self._module = model
        self._precision_name = precision
        self._setup(card=card, name=str(self.path) if self.path else type(model).__name__, task="reid",
                    normalize_output=normalize_output, max_batch=max_batch, fixed_batch=False, input_name="x",
                    output_name="embedding", precision=precision, input_dtype=np.float32, card_source=source)
        self._flip = False

    def _activate(self) -> None:
        self._module.eval()
        self._module.to(self._device)
        if self._precision_name == "fp16":
            self._module.half()

    def _deactivate(self) -> None:
        if self._device.type == "cuda":
            self._module.to("cpu")
            self._torch.cuda.empty_cache()

    def _run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        t = torch.from_numpy(x).to(self._device)
        if self._precision_name == "fp16":
            t = t.half()
        with torch.inference_mode():
            y = self._module.embed(t, flip=True) if self._flip else self._module.embed(t)
        return y.float().cpu().numpy()

    def infer(self, batch: Batch, flip: bool = False) -> np.ndarray:
        """As :meth:`Runner.infer`; with ``flip`` the model sums each crop's and its mirror's features before
        normalising (the standard test-time flip)."""
        self._flip = bool(flip)
        try:
            return super().infer(batch)
        finally:
            self._flip = False
