"""MSMT17 (Wei et al., CVPR 2018): 4,101 identities, 15 cameras; images are listed in text files.

Two releases are accepted (``version=None`` picks V1 when both are present; APNet used the V1 lists)::

    <root>/MSMT17_V1/                  (or <root> is that folder, or <root>/msmt17/MSMT17_V1)
        train/ test/  list_train.txt list_val.txt list_query.txt list_gallery.txt
    <root>/MSMT17_V2/
        mask_train_v2/ mask_test_v2/  (same four list files)

List line: ``0000/0000_000_01_0303morning_0015_0.jpg 0`` = path relative to the train folder
(train/val lists) or the test folder (query/gallery lists), then the pid. The camera is the third
``_`` field of the file name (1..15, made 0-based). Train = ``list_train.txt`` (1,041 ids, 30,248 images);
``combine_train_val=True`` adds ``list_val.txt`` (32,621 images). Query 11,659 / gallery 82,161 images.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from apnet_edge.datasets.base import (
    ReidDataset,
    absolute,
    find_dataset_dir,
    is_image,
    relabel,
    to_records,
)
from apnet_edge.errors import DatasetError

NAME = "msmt17"
VERSIONS: dict[str, tuple[str, str, str]] = {  # version -> (folder, train dir, test dir)
    "V1": ("MSMT17_V1", "train", "test"),
    "V2": ("MSMT17_V2", "mask_train_v2", "mask_test_v2"),
}
PATTERN = re.compile(
    r"(?P<pid>\d+)_(?P<index>\d+)_(?P<cam>\d+)_(?P<time>[0-9A-Za-z]+)_(?P<frame>\d+)_(?P<box>\d+)"
    r"\.(?i:jpg|jpeg|png|bmp)"
)
EXAMPLE = "0000/0000_000_01_0303morning_0015_0.jpg 0"


def _how_to(root: str | os.PathLike) -> str:
    return (
        f"download MSMT17 and unpack it so that {absolute(root)}/MSMT17_V1/ holds train/, test/ and "
        "list_{train,val,query,gallery}.txt (or MSMT17_V2/ with mask_train_v2/, mask_test_v2/ and the lists)"
    )


def _find(root: str | os.PathLike, version: Optional[str], need_val: bool) -> tuple[str, Path]:
    if version is not None and version.upper() not in VERSIONS:
        raise DatasetError(f"{NAME}: unknown version {version!r}; use 'V1', 'V2' or None (auto-detect)")
    versions = [version.upper()] if version else list(VERSIONS)
    lists = ["list_train.txt", "list_query.txt", "list_gallery.txt"] + (["list_val.txt"] if need_val else [])
    errors: list[tuple[bool, DatasetError]] = []
    base = absolute(root)
    for v in versions:
        folder, train_dir, test_dir = VERSIONS[v]
        candidates = [folder, "", f"msmt17/{folder}", f"MSMT17/{folder}"]
        try:
            d = find_dataset_dir(root, candidates, NAME, _how_to(root), dirs=[train_dir, test_dir], files=lists)
        except DatasetError as exc:
            # report the error of a release that is (partly) there rather than one that is absent
            present = any((base / c / x).exists() for c in candidates for x in (train_dir, test_dir))
            errors.append((present or any((base / c).is_dir() for c in candidates if c), exc))
            continue
        return v, d
    raise next((e for present, e in errors if present), errors[0][1])


def _read_list(list_file: Path, image_dir: Path, listing: dict[Path, set[str]]) -> list[tuple[str, int, int]]:
    """Parse one list file; every listed file must exist in ``image_dir``."""
    out = []
    missing: list[str] = []
    with open(list_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise DatasetError(
                    f"{NAME}: {list_file} line {lineno} is {line!r}, expected '<relative path> <pid>' "
                    f"like {EXAMPLE!r}; re-download the list files"
                )
            rel, pid = fields[0], int(fields[1])
            name = os.path.basename(rel)
            m = PATTERN.fullmatch(name)
            if m is None or not is_image(name):
                raise DatasetError(
                    f"{NAME}: {list_file} line {lineno} names {rel!r}, which does not follow the MSMT17 naming "
                    f"(pattern {PATTERN.pattern}, e.g. {EXAMPLE!r})"
                )
            cam = int(m.group("cam"))
            if not 1 <= cam <= 15:
                raise DatasetError(f"{NAME}: {list_file} line {lineno}: camera {cam} in {rel!r}, expected 1..15")
            path = image_dir / rel
            parent = path.parent
            if parent not in listing:
                try:
                    listing[parent] = set(os.listdir(parent))
                except OSError:
                    listing[parent] = set()
            if path.name not in listing[parent]:
                missing.append(str(path))
            out.append((str(path), pid, cam))
    if not out:
        raise DatasetError(f"{NAME}: {list_file} lists no images; re-download the list files")
    if missing:
        raise DatasetError(
            f"{NAME}: {len(missing)} file(s) listed in {list_file} are missing, e.g. {missing[0]}; "
            f"the image folder {image_dir} is incomplete, unpack the archive again"
        )
    return out


def read_msmt17(root: str | os.PathLike, combine_train_val: bool = False, version: Optional[str] = None) -> ReidDataset:
    """Read MSMT17 V1 or V2 under ``root`` (``version`` "V1"/"V2"/None = auto, V1 preferred)."""
    v, d = _find(root, version, combine_train_val)
    _, train_dir, test_dir = VERSIONS[v]
    listing: dict[Path, set[str]] = {}
    train_raw = _read_list(d / "list_train.txt", d / train_dir, listing)
    if combine_train_val:
        train_raw += _read_list(d / "list_val.txt", d / train_dir, listing)
    query = to_records(_read_list(d / "list_query.txt", d / test_dir, listing))
    gallery = to_records(_read_list(d / "list_gallery.txt", d / test_dir, listing))
    train = relabel(to_records(train_raw))
    return ReidDataset(NAME, str(d), train, query, gallery)
