"""Implicit INT8 calibration data (TensorRT 8.x-10.x): batches of real person crops, pre-processed by the model card
exactly as the runners do it, for Polygraphy's ``Calibrator`` (an ``IInt8EntropyCalibrator2``).

TensorRT calibrates dynamic-shape networks at the calibration profile's *opt* shape, so every batch has the
profile's opt batch size; a last partial batch is dropped. The calibrator writes a calibration cache and later
builds (or trtexec ``--calib=``) reuse it without images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from apnet_edge.card import ModelCard
from apnet_edge.errors import DatasetError
from apnet_edge.preprocess import preprocess_crops

PathLike = Union[str, Path]


class CropBatches:
    """An iterable of ``{input_name: float32 (batch, ...)}`` calibration batches.

    Args:
        crops: BGR uint8 person crops (H, W, 3), or a folder of crop images (read recursively, at most
            ``max_images``, evenly spread).
        card: the model card (input size, normalisation, layout).
        input_name: the network input's name.
        batch: images per batch (the profile's opt batch).
        max_images: cap on the crops used.
    """

    def __init__(self, crops: Union[PathLike, Sequence[np.ndarray]], card: ModelCard, input_name: str, batch: int,
                 max_images: int = 500) -> None:
        if batch < 1:
            raise DatasetError(f"calibration batch must be >= 1, got {batch}")
        if isinstance(crops, (str, Path)):
            from apnet_edge.crops import read_image_folder

            items = read_image_folder(crops, max_images)
            source = f"folder {str(crops)!r}"
        else:
            items = list(crops)[:max_images]
            source = "the crops given"
        if len(items) < batch:
            raise DatasetError(f"INT8 calibration needs at least one full batch of {batch} crops (the profile's opt "
                               f"batch); {source} has {len(items)}. Add crops (a few hundred are typical) or "
                               f"build with a smaller --batch opt")
        self.crops = items
        self.card = card
        self.input_name = input_name
        self.batch = int(batch)
        self.input_metadata: Optional[Any] = None  # set by Polygraphy's calibrator; unused

    def __len__(self) -> int:
        return len(self.crops) // self.batch

    @property
    def num_images(self) -> int:
        """Crops actually used (whole batches only)."""
        return len(self) * self.batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            chunk = self.crops[i * self.batch:(i + 1) * self.batch]
            yield {self.input_name: np.ascontiguousarray(preprocess_crops(chunk, self.card), np.float32)}


def make_calibrator(data: Optional[CropBatches], cache: PathLike) -> Any:
    """Polygraphy's ``Calibrator`` (``IInt8EntropyCalibrator2``) over ``data`` that reads/writes ``cache``.

    With ``data=None`` the calibrator only replays an existing cache (TensorRT asks for no batches then).
    """
    from polygraphy.backend.trt import Calibrator

    return Calibrator(data_loader=data if data is not None else [], cache=str(cache))
