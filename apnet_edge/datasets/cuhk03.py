"""CUHK03-NP (Zhong et al., CVPR 2017 re-ranking paper): the "new protocol" split of CUHK03.

767 training ids and 700 test ids, 2 cameras, one query per camera per test id. Two variants:
``labeled`` (hand-drawn boxes: 7,368 train / 1,400 query / 5,328 gallery images) and ``detected``
(DPM boxes: 7,365 / 1,400 / 5,332). Layout (``cuhk03-np.zip``)::

    <root>/cuhk03-np/                  (or <root> is that folder, or <root>/cuhk03/cuhk03-np)
        labeled/   bounding_box_train/  query/  bounding_box_test/
        detected/  bounding_box_train/  query/  bounding_box_test/

Market-style file names ``PPPP_cC_N.png`` (e.g. ``0001_c1_1.png``): pid, camera 1..2, image index.
"""

from __future__ import annotations

import os
import re

from apnet_edge.datasets.base import ReidDataset, absolute, find_dataset_dir, read_market_style
from apnet_edge.errors import DatasetError

NAME = "cuhk03"
FOLDER = "cuhk03-np"
VARIANTS = ("labeled", "detected")
PATTERN = re.compile(r"(?P<pid>-?\d+)_c(?P<cam>\d)_(?P<index>\d+)\.(?i:png|jpg|jpeg|bmp)")
EXAMPLE = "0001_c1_1.png"


def read_cuhk03(root: str | os.PathLike, variant: str = "labeled") -> ReidDataset:
    """Read CUHK03-NP ``variant`` ("labeled" or "detected") under ``root``."""
    if variant not in VARIANTS:
        raise DatasetError(f"{NAME}: unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    how_to = (
        f"download CUHK03-NP ({FOLDER}.zip, the 767/700 new protocol) and unpack it so that "
        f"{absolute(root)}/{FOLDER}/{variant}/ contains bounding_box_train, query and bounding_box_test"
    )
    dirs = ["bounding_box_train", "query", "bounding_box_test"]
    candidates = [f"{FOLDER}/{variant}", variant, f"CUHK03-NP/{variant}", f"cuhk03/{FOLDER}/{variant}"]
    d = find_dataset_dir(root, candidates, NAME, how_to, dirs=dirs)
    train, query, gallery = read_market_style(d, NAME, PATTERN, EXAMPLE, how_to, (1, 2))
    return ReidDataset(NAME, str(d), train, query, gallery)
