"""VIPeR (Gray et al., PETS 2007): 632 identities, one image in each of two cameras (128x48 pixels).

Layout (the official ``VIPeR.v1.0.zip``)::

    <root>/VIPeR/                      (or <root> is that folder, or <root>/viper/VIPeR)
        cam_a/  000_45.bmp 001_45.bmp ...   632 images, camid 0
        cam_b/  000_90.bmp 001_90.bmp ...   632 images, camid 1

File name ``NNN_AAA.bmp``: pair number NNN (shared by both cameras; numbers are not contiguous) and the
viewing angle AAA. :func:`read_viper` returns all 632 ids (relabelled 0..631 in order of NNN) as
``train`` with empty query/gallery.

Evaluation protocol (APNet supplementary Table V, the usual VIPeR protocol): for each of 10 trials,
split the 632 identities at random into 316 train and 316 test identities; the query set is the cam_a
image of every test identity and the gallery the cam_b image (``swap_cams=True`` swaps them); report
CMC rank-1/5/10 averaged over the 10 trials. :func:`viper_splits` builds these trials reproducibly:
trial ``i`` uses seed ``seed + i`` (recorded in :attr:`ViperSplit.seed`), so
``viper_splits(ds, trials=1, seed=s + i)[0]`` rebuilds trial ``i`` alone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from apnet_edge.datasets.base import (
    ReidDataset,
    ReidImage,
    absolute,
    find_dataset_dir,
    read_image_folder,
    relabel,
)
from apnet_edge.errors import DatasetError

NAME = "viper"
FOLDER = "VIPeR"
CAMERAS = ("cam_a", "cam_b")
PATTERN = re.compile(r"(?P<pid>\d+)_(?P<angle>\d+)\.(?i:bmp|png|jpg|jpeg)")
EXAMPLE = "000_45.bmp"


def read_viper(root: str | os.PathLike) -> ReidDataset:
    """Read VIPeR under ``root``: all identities as ``train`` (one image per camera each)."""
    how_to = (
        f"download VIPeR (VIPeR.v1.0.zip) and unpack it so that {absolute(root)}/{FOLDER}/ contains "
        "cam_a and cam_b (or pass that folder itself as the root)"
    )
    d = find_dataset_dir(root, [FOLDER, "", f"viper/{FOLDER}", "viper"], NAME, how_to, dirs=CAMERAS)
    records: list[ReidImage] = []
    per_cam: list[dict[int, str]] = []
    for camid, cam in enumerate(CAMERAS):
        items = read_image_folder(d / cam, PATTERN, EXAMPLE, NAME, f"{cam} images", fix=how_to)
        by_pid: dict[int, str] = {}
        for path, pid, _ in items:
            if pid in by_pid:
                raise DatasetError(
                    f"{NAME}: pair number {pid:03d} appears twice in {d / cam} ({os.path.basename(by_pid[pid])} "
                    f"and {os.path.basename(path)}); each identity has exactly one image per camera"
                )
            by_pid[pid] = path
            records.append(ReidImage(path, pid, camid))
        per_cam.append(by_pid)
    unpaired = sorted(set(per_cam[0]) ^ set(per_cam[1]))
    if unpaired:
        raise DatasetError(
            f"{NAME}: {len(unpaired)} pair number(s) appear in only one of cam_a / cam_b (e.g. {unpaired[0]:03d}) "
            f"under {d}; every identity needs one image in each camera, unpack the archive again"
        )
    train = relabel(sorted(records, key=lambda r: (r.pid, r.camid)))
    return ReidDataset(NAME, str(d), train, (), ())


@dataclass(frozen=True)
class ViperSplit:
    """One random identity split of VIPeR (pids are the dataset's 0..N-1 ids)."""

    trial: int  # 0-based trial number
    seed: int  # seed of this trial's permutation (numpy default_rng)
    train_pids: tuple[int, ...]  # sorted dataset pids used for training
    test_pids: tuple[int, ...]  # sorted dataset pids used for testing
    train: tuple[ReidImage, ...]  # both cameras of the train ids, pids relabelled 0..len(train_pids)-1
    query: tuple[ReidImage, ...]  # one image per test id (cam_a, or cam_b when swapped)
    gallery: tuple[ReidImage, ...]  # the other camera's image of each test id

    def as_dataset(self, root: str = "") -> ReidDataset:
        """This split as a :class:`ReidDataset` (name ``viper-trialN``)."""
        return ReidDataset(f"{NAME}-trial{self.trial}", root, self.train, self.query, self.gallery)


def viper_splits(
    dataset: ReidDataset,
    trials: int = 10,
    seed: int = 0,
    swap_cams: bool = False,
    num_test_ids: Optional[int] = None,
) -> list[ViperSplit]:
    """``trials`` random train/test identity splits of a VIPeR dataset (316/316 for the full 632 ids).

    Trial ``i`` permutes the identities with ``numpy.random.default_rng(seed + i)``; the first
    ``num_test_ids`` (default half) permuted ids are the test ids. Query = cam_a image of each test id,
    gallery = cam_b image (reversed with ``swap_cams``).
    """
    if trials < 1:
        raise DatasetError(f"{NAME}: trials must be >= 1, got {trials}")
    images: dict[tuple[int, int], ReidImage] = {}
    for r in (*dataset.train, *dataset.query, *dataset.gallery):
        if r.camid not in (0, 1) or (r.pid, r.camid) in images:
            raise DatasetError(
                f"{NAME}: viper_splits needs exactly one image per identity in camera 0 and camera 1, "
                f"{r.path} breaks this; pass the dataset returned by load_dataset('viper', root)"
            )
        images[(r.pid, r.camid)] = r
    pids = sorted({pid for pid, _ in images})
    lonely = [p for p in pids if (p, 0) not in images or (p, 1) not in images]
    if lonely:
        raise DatasetError(f"{NAME}: identity {lonely[0]} has an image in only one camera; both are needed")
    n_test = len(pids) // 2 if num_test_ids is None else num_test_ids
    if not 1 <= n_test < len(pids):
        raise DatasetError(f"{NAME}: num_test_ids must be in 1..{len(pids) - 1}, got {n_test}")
    q_cam, g_cam = (1, 0) if swap_cams else (0, 1)
    splits = []
    for trial in range(trials):
        s = seed + trial
        perm = np.random.default_rng(s).permutation(len(pids))
        test = tuple(sorted(pids[i] for i in perm[:n_test]))
        train_ids = tuple(sorted(pids[i] for i in perm[n_test:]))
        train = relabel(images[(p, c)] for p in train_ids for c in (0, 1))
        splits.append(ViperSplit(
            trial=trial,
            seed=s,
            train_pids=train_ids,
            test_pids=test,
            train=train,
            query=tuple(images[(p, q_cam)] for p in test),
            gallery=tuple(images[(p, g_cam)] for p in test),
        ))
    return splits
