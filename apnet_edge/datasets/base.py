"""Records shared by every re-ID dataset reader, plus the folder/file-name helpers the readers use.

Readers only look at file names (no image decoding), so reading even MSMT17 takes well under a second.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from apnet_edge.errors import DatasetError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
"""The only file extensions the readers consider (case-insensitive); any other file is ignored."""

SPLITS: tuple[str, ...] = ("train", "query", "gallery")


@dataclass(frozen=True)
class ReidImage:
    """One labelled person image."""

    path: str  # absolute path of the image file
    pid: int  # identity (train split: relabelled 0..N-1; query/gallery: as in the file name)
    camid: int  # camera index, 0-based


@dataclass(frozen=True)
class ReidDataset:
    """A re-ID dataset: train images (pids relabelled 0..num_train_pids-1) and query/gallery (original pids)."""

    name: str
    root: str
    train: tuple[ReidImage, ...]
    query: tuple[ReidImage, ...]
    gallery: tuple[ReidImage, ...]

    def __post_init__(self) -> None:
        for split in SPLITS:
            object.__setattr__(self, split, tuple(getattr(self, split)))
        pids = {r.pid for r in self.train}
        if pids != set(range(len(pids))):
            raise DatasetError(
                f"dataset {self.name!r}: train pids must be relabelled to 0..N-1, found {sorted(pids)[:10]}...; "
                "build train records with apnet_edge.datasets.base.relabel()"
            )

    @property
    def num_train_pids(self) -> int:
        """Number of training identities (= classifier size)."""
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        """Number of distinct cameras in the train split."""
        return len({r.camid for r in self.train})

    def stats(self) -> dict:
        """Counts per split: ``{"name", "root", "train": {"ids", "images", "cameras"}, "query": ..., "gallery": ...}``."""
        out: dict = {"name": self.name, "root": self.root}
        for split in SPLITS:
            records = getattr(self, split)
            out[split] = {
                "ids": len({r.pid for r in records}),
                "images": len(records),
                "cameras": len({r.camid for r in records}),
            }
        return out

    def summary(self) -> str:
        """A small table of ids / images / cameras per split."""
        s = self.stats()
        lines = [
            f"dataset {self.name}  ({self.root})",
            f"  {'split':<8}| {'ids':>7} | {'images':>8} | {'cameras':>7}",
            f"  {'-' * 8}+{'-' * 9}+{'-' * 10}+{'-' * 8}",
        ]
        for split in SPLITS:
            c = s[split]
            lines.append(f"  {split:<8}| {c['ids']:>7} | {c['images']:>8} | {c['cameras']:>7}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- helpers


def absolute(root: str | os.PathLike) -> Path:
    """``root`` made absolute (user expanded) without resolving symlinks."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(root))))


def is_image(name: str) -> bool:
    """Whether ``name`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[str]:
    """Sorted names of the image files directly inside ``folder`` (subfolders and other files ignored)."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if is_image(e.name) and e.is_file())


def find_dataset_dir(
    root: str | os.PathLike,
    candidates: Sequence[str],
    dataset: str,
    how_to: str,
    dirs: Sequence[str] = (),
    files: Sequence[str] = (),
) -> Path:
    """The first ``root/<candidate>`` that holds all ``dirs`` (folders) and ``files``; else a DatasetError.

    ``candidates`` are relative paths tried in order ("" is ``root`` itself). The error names the first
    missing part of the most plausible candidate and ends with ``how_to``.
    """
    base_root = absolute(root)
    if not base_root.is_dir():
        raise DatasetError(f"{dataset}: dataset root {base_root} does not exist or is not a folder; {how_to}")

    def missing(d: Path) -> list[Path]:
        return [d / x for x in dirs if not (d / x).is_dir()] + [d / x for x in files if not (d / x).is_file()]

    tried = [base_root / c if c else base_root for c in candidates]
    for d in tried:
        if d.is_dir() and not missing(d):
            return d
    # Report against the candidate that looks most like the dataset: one holding some required part,
    # else the first existing named subfolder, else the preferred (first) candidate.
    best: Optional[Path] = None
    for d in tried:
        if d.is_dir() and len(missing(d)) < len(dirs) + len(files):
            best = d
            break
    if best is None:
        best = next((d for d in tried if d != base_root and d.is_dir()), tried[0])
    parts = ", ".join(str(p) for p in missing(best))
    raise DatasetError(f"{dataset}: expected {parts} (not found); {how_to}")


def parse_names(
    folder: Path,
    names: Iterable[str],
    pattern: re.Pattern[str],
    example: str,
    dataset: str,
    cam_range: Optional[tuple[int, int]] = None,
) -> list[tuple[str, int, int]]:
    """``(absolute path, pid, camera number as in the name)`` for each name; DatasetError on a bad name.

    ``pattern`` must define the group ``pid`` and may define ``cam`` (else the camera is 0). ``cam_range``
    (inclusive) is checked when given.
    """
    out = []
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            raise DatasetError(
                f"{dataset}: file {folder / name} does not follow the expected naming "
                f"(pattern {pattern.pattern}, e.g. {example!r}); remove or rename it, or check that this is "
                f"the right folder"
            )
        cam = int(m.group("cam")) if "cam" in pattern.groupindex else 0
        if cam_range is not None and not cam_range[0] <= cam <= cam_range[1]:
            raise DatasetError(
                f"{dataset}: file {folder / name} has camera {cam}, expected {cam_range[0]}..{cam_range[1]} "
                f"(e.g. {example!r}); check that this is the right dataset"
            )
        out.append((str(folder / name), int(m.group("pid")), cam))
    return out


def read_image_folder(
    folder: Path,
    pattern: re.Pattern[str],
    example: str,
    dataset: str,
    split: str,
    cam_range: Optional[tuple[int, int]] = None,
    fix: str = "",
) -> list[tuple[str, int, int]]:
    """Parse every image name in ``folder``; DatasetError if it has no image at all."""
    names = list_images(folder)
    if not names:
        raise DatasetError(
            f"{dataset}: no images ({'/'.join(IMAGE_EXTENSIONS)}) in {folder} (the {split} split)"
            + (f"; {fix}" if fix else "; the folder must hold the image files directly")
        )
    return parse_names(folder, names, pattern, example, dataset, cam_range)


def relabel(records: Iterable[ReidImage]) -> tuple[ReidImage, ...]:
    """Records with pids mapped to 0..N-1 in sorted order of the original pids (order of records kept)."""
    records = tuple(records)
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return tuple(ReidImage(r.path, mapping[r.pid], r.camid) for r in records)


def to_records(items: Iterable[tuple[str, int, int]], cam_offset: int = 1) -> tuple[ReidImage, ...]:
    """``(path, pid, camera number)`` tuples -> records with ``camid = camera - cam_offset``, sorted by path."""
    return tuple(ReidImage(p, pid, cam - cam_offset) for p, pid, cam in sorted(items))


JUNK_PID = -1
DISTRACTOR_PID = 0


def read_market_style(
    dataset_dir: Path,
    dataset: str,
    pattern: re.Pattern[str],
    example: str,
    fix: str,
    cam_range: Optional[tuple[int, int]] = None,
    train_dir: Optional[str] = "bounding_box_train",
    query_dir: str = "query",
    gallery_dir: str = "bounding_box_test",
    extra_gallery: Sequence[tuple[str, re.Pattern[str]]] = (),
) -> tuple[tuple[ReidImage, ...], tuple[ReidImage, ...], tuple[ReidImage, ...]]:
    """Read the Market-1501 style ``bounding_box_train`` / ``query`` / ``bounding_box_test`` folders.

    Market-1501 conventions: pid -1 (junk) is dropped everywhere; pid 0 (distractors) is kept in the gallery
    only. Train pids are relabelled to 0..N-1; cameras ``c1..`` become camid 0... ``train_dir=None`` means no
    train split. ``extra_gallery`` lists further gallery folders (name, file pattern).
    """
    def read(sub: str, split: str, pat: re.Pattern[str] = pattern) -> list[tuple[str, int, int]]:
        return read_image_folder(dataset_dir / sub, pat, example, dataset, split, cam_range, fix)

    train_raw = read(train_dir, "train") if train_dir else []
    query_raw = read(query_dir, "query")
    gallery_raw = read(gallery_dir, "gallery")
    for sub, pat in extra_gallery:
        gallery_raw += read(sub, "gallery", pat)
    train = relabel(to_records(x for x in train_raw if x[1] not in (JUNK_PID, DISTRACTOR_PID)))
    query = to_records(x for x in query_raw if x[1] not in (JUNK_PID, DISTRACTOR_PID))
    gallery = to_records(x for x in gallery_raw if x[1] != JUNK_PID)
    for split, recs, raw in (("train", train, train_raw), ("query", query, query_raw), ("gallery", gallery, gallery_raw)):
        if raw and not recs:
            raise DatasetError(
                f"{dataset}: the {split} split has only junk (-1) / distractor (0) images, nothing to use; {fix}"
            )
    return train, query, gallery
