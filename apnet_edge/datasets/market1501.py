"""Market-1501 (Zheng et al., ICCV 2015): 1,501 identities, 6 cameras.

Layout (the official ``Market-1501-v15.09.15.zip``)::

    <root>/Market-1501-v15.09.15/      (or <root> is that folder, or <root>/market1501/Market-1501-v15.09.15)
        bounding_box_train/  0002_c1s1_000451_03.jpg ...   751 ids, 12,936 images
        query/               0001_c1s1_001051_00.jpg ...   750 ids,  3,368 images
        bounding_box_test/   0000_c1s1_000151_01.jpg ...   15,913 images (+ 2,793 junk -1_...)
        images/              optional Market-1501+500k distractors (``market1501_500k=True``)

File name ``PPPP_cCsS_FFFFFF_BB.jpg``: pid, camera 1..6, sequence, frame, box. Junk images (pid -1) are
dropped everywhere; distractors (pid 0000) are kept in the gallery (standard protocol) and never trained on.
"""

from __future__ import annotations

import os
import re

from apnet_edge.datasets.base import ReidDataset, absolute, find_dataset_dir, read_market_style

NAME = "market1501"
FOLDER = "Market-1501-v15.09.15"
PATTERN = re.compile(r"(?P<pid>-?\d+)_c(?P<cam>\d)s(?P<seq>\d+)_(?P<frame>\d+)_(?P<box>\d+)\.(?i:jpg|jpeg|png|bmp)")
DISTRACTOR_PATTERN = re.compile(r"(?P<pid>-?\d+)_c(?P<cam>\d+).*\.(?i:jpg|jpeg|png|bmp)")
EXAMPLE = "0002_c1s1_000451_03.jpg"


def read_market1501(root: str | os.PathLike, market1501_500k: bool = False) -> ReidDataset:
    """Read Market-1501 under ``root`` (see the module docstring for the accepted layouts)."""
    how_to = (
        f"download Market-1501 ({FOLDER}.zip) and unpack it so that {absolute(root)}/{FOLDER}/ contains "
        "bounding_box_train, query and bounding_box_test (or pass that folder itself as the root)"
    )
    dirs = ["bounding_box_train", "query", "bounding_box_test"] + (["images"] if market1501_500k else [])
    d = find_dataset_dir(root, [FOLDER, "", f"market1501/{FOLDER}", "market1501"], NAME, how_to, dirs=dirs)
    extra = [("images", DISTRACTOR_PATTERN)] if market1501_500k else []
    train, query, gallery = read_market_style(d, NAME, PATTERN, EXAMPLE, how_to, (1, 6), extra_gallery=extra)
    return ReidDataset(NAME, str(d), train, query, gallery)
