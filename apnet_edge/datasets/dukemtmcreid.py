"""DukeMTMC-reID (Zheng et al., ICCV 2017): 1,404 identities + 408 distractor ids, 8 cameras.

Layout (the official ``DukeMTMC-reID.zip``)::

    <root>/DukeMTMC-reID/              (or <root> is that folder, or <root>/dukemtmcreid/DukeMTMC-reID)
        bounding_box_train/  0001_c2_f0046182.jpg ...   702 ids, 16,522 images
        query/               0005_c2_f0046985.jpg ...   702 ids,  2,228 images
        bounding_box_test/   0002_c1_f0044158.jpg ...   1,110 ids, 17,661 images

File name ``PPPP_cC_fFFFFFFF.jpg``: pid, camera 1..8, frame. Same pid rules as Market-1501 (none occur).
"""

from __future__ import annotations

import os
import re

from apnet_edge.datasets.base import ReidDataset, absolute, find_dataset_dir, read_market_style

NAME = "dukemtmcreid"
FOLDER = "DukeMTMC-reID"
PATTERN = re.compile(r"(?P<pid>-?\d+)_c(?P<cam>\d)_f(?P<frame>\d+)\.(?i:jpg|jpeg|png|bmp)")
EXAMPLE = "0001_c2_f0046182.jpg"


def read_dukemtmcreid(root: str | os.PathLike) -> ReidDataset:
    """Read DukeMTMC-reID under ``root`` (see the module docstring for the accepted layouts)."""
    how_to = (
        f"download DukeMTMC-reID ({FOLDER}.zip) and unpack it so that {absolute(root)}/{FOLDER}/ contains "
        "bounding_box_train, query and bounding_box_test (or pass that folder itself as the root)"
    )
    dirs = ["bounding_box_train", "query", "bounding_box_test"]
    d = find_dataset_dir(root, [FOLDER, "", f"dukemtmcreid/{FOLDER}", "dukemtmcreid"], NAME, how_to, dirs=dirs)
    train, query, gallery = read_market_style(d, NAME, PATTERN, EXAMPLE, how_to, (1, 8))
    return ReidDataset(NAME, str(d), train, query, gallery)
