"""Person re-ID dataset readers (file names only; numpy/stdlib, no torch).

``load_dataset(name, root, **options)`` returns a :class:`ReidDataset` with ``train`` (pids relabelled
0..N-1), ``query`` and ``gallery`` (original pids) lists of :class:`ReidImage` (path, pid, 0-based camid).
Readers: market1501, dukemtmcreid, cuhk03 (``variant="labeled"|"detected"``), msmt17
(``combine_train_val``, ``version``), viper (all ids as train; see :func:`viper_splits`) and folder
(your own data in Market-1501 naming).
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from apnet_edge.datasets.base import IMAGE_EXTENSIONS, ReidDataset, ReidImage
from apnet_edge.datasets.cuhk03 import read_cuhk03
from apnet_edge.datasets.dukemtmcreid import read_dukemtmcreid
from apnet_edge.datasets.folder import read_folder
from apnet_edge.datasets.market1501 import read_market1501
from apnet_edge.datasets.msmt17 import read_msmt17
from apnet_edge.datasets.viper import ViperSplit, read_viper, viper_splits
from apnet_edge.errors import DatasetError

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "ReidDataset",
    "ReidImage",
    "ViperSplit",
    "dataset_names",
    "load_dataset",
    "viper_splits",
]

DATASETS: dict[str, Callable[..., ReidDataset]] = {
    "market1501": read_market1501,
    "dukemtmcreid": read_dukemtmcreid,
    "cuhk03": read_cuhk03,
    "msmt17": read_msmt17,
    "viper": read_viper,
    "folder": read_folder,
}
"""Registry: dataset name -> reader ``reader(root, **options) -> ReidDataset``."""


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(DATASETS)


def load_dataset(name: str, root: str | os.PathLike, **options: Any) -> ReidDataset:
    """Read dataset ``name`` under ``root``; DatasetError for an unknown name or option, or a bad folder."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    reader = DATASETS.get(key)
    if reader is None:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    params = list(inspect.signature(reader).parameters)[1:]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise DatasetError(
            f"dataset {key!r} does not take option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(params) if params else 'no options'}"
        )
    return reader(root, **options)
