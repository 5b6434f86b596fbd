"""A user's own re-ID folder in Market-1501 naming (e.g. written by ``apnet-edge mine``).

Layout::

    <root>/
        bounding_box_train/   optional; without it the dataset has no train split (evaluation only)
        query/
        bounding_box_test/

File name ``<pid>_c<camera>[s<seq>]_<anything>.<jpg|jpeg|png|bmp>``, e.g. ``0002_c1s1_000451_03.jpg`` or
``0001_c2_f0046182.jpg``. Camera numbers may be any non-negative integers (c0, c7, c101, ...): the sorted
set of numbers used across all splits is mapped to camid 0..C-1. Market-1501 pid rules apply: pid -1 is
junk (dropped everywhere), pid 0 is a distractor (gallery only).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

from apnet_edge.datasets.base import ReidDataset, absolute, find_dataset_dir, read_market_style

NAME = "folder"
PATTERN = re.compile(r"(?P<pid>-?\d+)_c(?P<cam>\d+)(?:[s_][^/]*)?\.(?i:jpg|jpeg|png|bmp)")
EXAMPLE = "0002_c1s1_000451_03.jpg"


def read_folder(root: str | os.PathLike) -> ReidDataset:
    """Read a Market-1501-named folder (``query`` and ``bounding_box_test`` required, train optional)."""
    how_to = (
        f"put the images in {absolute(root)}/query and {absolute(root)}/bounding_box_test "
        "(and optionally bounding_box_train), named like '0002_c1s1_000451_03.jpg' (<pid>_c<camera>...)"
    )
    d = find_dataset_dir(root, [""], NAME, how_to, dirs=["query", "bounding_box_test"])
    train_dir = "bounding_box_train" if (d / "bounding_box_train").is_dir() else None
    train, query, gallery = read_market_style(d, NAME, PATTERN, EXAMPLE, how_to, train_dir=train_dir)
    cams = {c: i for i, c in enumerate(sorted({r.camid for r in (*train, *query, *gallery)}))}

    def remap(records: tuple) -> tuple:
        return tuple(replace(r, camid=cams[r.camid]) for r in records)

    return ReidDataset(NAME, str(d), remap(train), remap(query), remap(gallery))
