"""Figures for people: ranked gallery matches of queries (``apnet-edge visualize ranks``) and the grid drawing
that the attention figure (:mod:`train.visualize`, ``apnet-edge visualize attention``) shares.

numpy + OpenCV only (no torch, no matplotlib), so ranking figures can be made on a device with any model the
runners accept (ONNX, OpenVINO IR, TensorRT engine, or a checkpoint where torch is installed).

Ranking follows the evaluation protocol (:func:`apnet_edge.metrics.evaluate_rank`): features from
:func:`apnet_edge.evaluation.extract_features` (flip-averaged by default), distances from
:func:`apnet_edge.metrics.pairwise_distance`, stable sort, and per query the gallery images with the query's
identity *and* camera are removed (junk), as are identities below 0. A match is right (green border) when its
identity equals the query's, wrong (red border) otherwise. Queries are picked ``seed``-reproducibly, one
identity at a time (every identity once before any identity twice), among the queries that have a valid true
match in the gallery (all queries when none has).

Images are BGR uint8 (OpenCV order) throughout.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from apnet_edge.errors import ApnetError, DatasetError

PathLike = Union[str, Path]

# BGR colours
GREEN = (0, 170, 0)
RED = (0, 0, 230)
QUERY_COLOR = (120, 120, 120)
TEXT = (20, 20, 20)
BACKGROUND = (255, 255, 255)

FONT_SCALE = 0.42
MARGIN = 10
GAP = 6
LINE = 16  # height of one text line in pixels


# ----------------------------------------------------------------------------------------------- inputs


def image_paths(items: Sequence[PathLike], limit: Optional[int] = None) -> list[Path]:
    """Image files named by ``items`` (files, or folders searched recursively with
    :func:`apnet_edge.crops.list_images`), in the order given, duplicates dropped.

    With ``limit``, at most that many, spread evenly over the list. Raises DatasetError when an item does not
    exist, a file is not an image, a folder holds no images, or nothing is given.
    """
    from apnet_edge.crops import IMAGE_SUFFIXES, list_images

    if not items:
        raise DatasetError("no images given; pass image files and/or folders of person crops")
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise DatasetError(f"image folder {str(p)!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DatasetError(f"{str(p)!r} is not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
            found = [p]
        else:
            raise DatasetError(f"image path {str(p)!r} does not exist; give image files or folders of person crops")
        for f in found:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                out.append(f)
    if limit is not None and limit > 0 and len(out) > limit:
        from apnet_edge.crops import spread_indices

        out = [out[i] for i in spread_indices(len(out), limit)]
    return out


# ----------------------------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of a figure: a wrapped title, a header line, then ``rows`` x ``cols`` cells of
    ``cell_h`` x ``cell_w`` pixels, each with ``labels`` text lines under it; ``split_after`` columns are
    followed by a wider gap (the query column of a ranking)."""

    rows: int
    cols: int
    cell_h: int
    cell_w: int
    title_lines: int = 1
    labels: int = 1
    split_after: int = 0
    split_gap: int = 3 * GAP

    @property
    def top(self) -> int:
        """y of the first row of cells."""
        return MARGIN + self.title_lines * LINE + GAP + LINE

    @property
    def row_pitch(self) -> int:
        return self.cell_h + self.labels * LINE + GAP

    def cell_origin(self, row: int, col: int) -> tuple[int, int]:
        """(x, y) of the top-left pixel of cell (row, col)."""
        x = MARGIN + col * (self.cell_w + GAP) + (self.split_gap if self.split_after and col >= self.split_after else 0)
        return x, self.top + row * self.row_pitch

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the whole figure."""
        x, _ = self.cell_origin(0, self.cols - 1)
        width = max(x + self.cell_w + MARGIN, 2 * MARGIN + 200)
        return self.top + self.rows * self.row_pitch - GAP + MARGIN, width


def wrap_text(text: str, width: int, scale: float = FONT_SCALE) -> list[str]:
    """Split ``text`` into lines that fit ``width`` pixels in OpenCV's Hershey simplex font (ASCII only)."""
    import cv2

    lines: list[str] = []
    for para in text.split("\n"):
        cur = ""
        for word in para.split():
            cand = f"{cur} {word}" if cur else word
            if cur and cv2.getTextSize(cand, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
                lines.append(cur)
                cur = word
            else:
                cur = cand
        lines.append(cur)
    return lines


def fit_text(text: str, width: int, scale: float = FONT_SCALE) -> str:
    """``text`` cut at the end (marked '..') until it fits ``width`` pixels."""
    import cv2

    if cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width:
        return text
    while len(text) > 1 and cv2.getTextSize(text + "..", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
        text = text[:-1]
    return text + ".."


def put_text(img: np.ndarray, text: str, x: int, y_top: int, color: tuple[int, int, int] = TEXT,
             scale: float = FONT_SCALE) -> None:
    """Draw one line of ``text`` whose line box starts at ``y_top``."""
    import cv2

    ascii_text = text.encode("ascii", "replace").decode("ascii")
    cv2.putText(img, ascii_text, (int(x), int(y_top + LINE - 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1,
                cv2.LINE_AA)


def new_canvas(rows: int, cols: int, cell_h: int, cell_w: int, title: str, labels: int = 1,
               split_after: int = 0) -> tuple[np.ndarray, GridLayout]:
    """A white canvas with ``title`` wrapped across the top, and its layout."""
    probe = GridLayout(rows, cols, cell_h, cell_w, 1, labels, split_after)
    width = probe.size[1]
    lines = wrap_text(title, width - 2 * MARGIN)
    layout = GridLayout(rows, cols, cell_h, cell_w, len(lines), labels, split_after)
    h, w = layout.size
    canvas = np.full((h, w, 3), BACKGROUND, np.uint8)
    for i, line in enumerate(lines):
        put_text(canvas, line, MARGIN, MARGIN + i * LINE)
    return canvas, layout


def put_cell(canvas: np.ndarray, layout: GridLayout, row: int, col: int, image: np.ndarray,
             border: Optional[tuple[int, int, int]] = None, thickness: int = 4) -> None:
    """Paste ``image`` (BGR, any size) into cell (row, col), resized to fill it; with ``border`` the cell gets a
    frame of that colour ``thickness`` pixels wide and the image fills the inside."""
    import cv2

    x, y = layout.cell_origin(row, col)
    h, w = layout.cell_h, layout.cell_w
    t = thickness if border is not None else 0
    if border is not None:
        canvas[y:y + h, x:x + w] = border
    canvas[y + t:y + h - t, x + t:x + w - t] = cv2.resize(image, (w - 2 * t, h - 2 * t), interpolation=cv2.INTER_AREA
                                                          if image.shape[0] > h else cv2.INTER_LINEAR)


def put_label(canvas: np.ndarray, layout: GridLayout, row: int, col: int, text: str, line: int = 0,
              color: tuple[int, int, int] = TEXT) -> None:
    """Text under cell (row, col), shortened to the cell's width."""
    x, y = layout.cell_origin(row, col)
    put_text(canvas, fit_text(text, layout.cell_w), x, y + layout.cell_h + line * LINE, color)


def put_header(canvas: np.ndarray, layout: GridLayout, col: int, text: str) -> None:
    """Column header above the first row."""
    x, _ = layout.cell_origin(0, col)
    put_text(canvas, fit_text(text, layout.cell_w + GAP), x, layout.top - LINE)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` (BGR uint8) blended with ``heat`` (2-D, values in [0, 1], any size; resized bilinearly to the
    image) in OpenCV's JET colour map: blue = 0, red = 1."""
    import cv2

    h, w = image.shape[:2]
    m = cv2.resize(np.asarray(heat, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap(np.clip(m * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1.0 - alpha, colored, alpha, 0.0)


def write_png(path: PathLike, image: np.ndarray) -> Path:
    """Write ``image`` to ``path`` (parents created); ApnetError when OpenCV cannot write it."""
    import cv2

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise ApnetError(f"figure file {str(p)!r} must end in .png")
    p.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(p), image):
        raise ApnetError(f"cannot write figure {str(p)!r}; check that the folder is writable")
    return p


# ----------------------------------------------------------------------------------------------- ranking


def pick_queries(pids: Sequence[int], n: int, seed: int = 0, eligible: Optional[Sequence[bool]] = None) -> list[int]:
    """Indices of ``n`` queries spread over identities: identities in a seeded random order, one (random) image
    of each identity per round, until ``n`` are picked (or none is left). Only ``eligible`` indices are used
    when some are eligible. The result is sorted by (identity, index)."""
    rng = np.random.default_rng(seed)
    pids = [int(p) for p in pids]
    idx = [i for i in range(len(pids)) if eligible is None or eligible[i]]
    if not idx:
        idx = list(range(len(pids)))
    by_pid: dict[int, list[int]] = {}
    for i in idx:
        by_pid.setdefault(pids[i], []).append(i)
    order = [sorted(by_pid)[k] for k in rng.permutation(len(by_pid))]
    pools = {p: [by_pid[p][k] for k in rng.permutation(len(by_pid[p]))] for p in order}
    picked: list[int] = []
    while len(picked) < n and any(pools.values()):
        for p in order:
            if pools[p] and len(picked) < n:
                picked.append(pools[p].pop(0))
    return sorted(picked, key=lambda i: (pids[i], i))


def has_true_match(q_pids: Sequence[int], q_camids: Sequence[int], g_pids: Sequence[int],
                   g_camids: Sequence[int]) -> np.ndarray:
    """(Q,) bool: the gallery holds the query's identity from another camera (the query can be scored)."""
    gp, gc = np.asarray(g_pids), np.asarray(g_camids)
    return np.array([bool(np.any((gp == p) & (gc != c))) for p, c in zip(q_pids, q_camids)], dtype=bool)


def rank_matches(dist: np.ndarray, q_pids: Sequence[int], g_pids: Sequence[int], q_camids: Sequence[int],
                 g_camids: Sequence[int], topk: int = 10) -> list[np.ndarray]:
    """Per query, the gallery indices of its ``topk`` nearest valid matches, nearest first.

    ``dist`` is (Q, G). Removed as in the evaluation protocol: gallery items with the query's identity and
    camera (junk), and identities below 0. The sort is stable (ties keep gallery order).
    """
    dist = np.asarray(dist)
    gp, gc = np.asarray(g_pids), np.asarray(g_camids)
    if dist.shape != (len(q_pids), len(gp)):
        raise ValueError(f"dist must be (Q, G) = ({len(q_pids)}, {len(gp)}), found {dist.shape}")
    out = []
    for i, (p, c) in enumerate(zip(q_pids, q_camids)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((gp[order] == p) & (gc[order] == c)) & (gp[order] >= 0)
        out.append(order[keep][:topk])
    return out


@dataclass
class RanksFigure:
    """What :func:`visualize_ranks` drew: ``queries`` holds, per row, the query (path, pid, camid) and its
    ``matches`` (path, pid, camid, distance, correct), nearest first."""

    image: np.ndarray
    layout: GridLayout
    queries: list[dict[str, Any]]
    title: str
    path: Optional[Path] = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        n = len(self.queries)
        r1 = sum(1 for q in self.queries if q["matches"] and q["matches"][0]["correct"])
        right = sum(m["correct"] for q in self.queries for m in q["matches"])
        total = sum(len(q["matches"]) for q in self.queries)
        where = f"wrote {self.path}" if self.path else "figure"
        return (f"{where}: {n} queries, rank-1 right {r1}/{n}, top-{self.extra.get('topk')} right {right}/{total} "
                f"({self.seconds:.1f} s)")


def render_ranks(queries: list[dict[str, Any]], images: dict[str, np.ndarray], topk: int, title: str,
                 cell_hw: tuple[int, int] = (128, 64), border: int = 4) -> tuple[np.ndarray, GridLayout]:
    """Draw one row per query: the query (grey frame, its id and camera under it), then its matches with a
    green (right identity) or red (wrong identity) frame, the match's id and distance under each.

    ``queries`` as in :class:`RanksFigure`; ``images`` maps every path to its BGR image.
    """
    canvas, layout = new_canvas(len(queries), 1 + topk, cell_hw[0], cell_hw[1], title, labels=1, split_after=1)
    put_header(canvas, layout, 0, "query")
    for k in range(topk):
        put_header(canvas, layout, 1 + k, f"{k + 1}")
    for r, q in enumerate(queries):
        put_cell(canvas, layout, r, 0, images[q["path"]], QUERY_COLOR, border)
        put_label(canvas, layout, r, 0, f"id {q['pid']} cam {q['camid'] + 1}")
        for k, m in enumerate(q["matches"]):
            color = GREEN if m["correct"] else RED
            put_cell(canvas, layout, r, 1 + k, images[m["path"]], color, border)
            put_label(canvas, layout, r, 1 + k, f"{m['pid']} {m['distance']:.2f}", color=color)
    return canvas, layout


def visualize_ranks(model: PathLike, data_root: PathLike, out: Optional[PathLike] = None, num_queries: int = 8,
                    topk: int = 10, seed: int = 0, dataset: str = "folder", backend: str = "auto",
                    metric: str = "cosine", flip: bool = True, batch_size: int = 64, device: str = "auto",
                    threads: Optional[int] = None) -> RanksFigure:
    """Rank the gallery of ``data_root`` for ``num_queries`` queries with ``model`` and draw the ``topk``
    matches of each (see the module docstring); writes ``out`` (PNG) when given.

    ``model``: anything :func:`apnet_edge.runners.load_runner` accepts. ``data_root``: a Market-1501-named
    folder with ``query/`` and ``bounding_box_test/`` (``dataset="folder"``) or any reader's dataset root.
    Raises DatasetError for a folder without query/gallery images, ModelError for an unusable model.
    """
    from apnet_edge.crops import read_images
    from apnet_edge.datasets import load_dataset
    from apnet_edge.evaluation import extract_features
    from apnet_edge.metrics import pairwise_distance
    from apnet_edge.runners import load_runner

    if num_queries < 1 or topk < 1:
        raise ApnetError(f"need at least one query and one match, found queries={num_queries}, topk={topk}")
    t0 = time.perf_counter()
    ds = load_dataset(dataset, data_root)
    if not ds.query or not ds.gallery:
        raise DatasetError(f"{str(data_root)!r} has {len(ds.query)} query and {len(ds.gallery)} gallery images; "
                           f"both are needed (query/ and bounding_box_test/ in Market-1501 naming)")
    q_pids = [r.pid for r in ds.query]
    q_cams = [r.camid for r in ds.query]
    g_pids = np.array([r.pid for r in ds.gallery])
    g_cams = np.array([r.camid for r in ds.gallery])
    chosen = pick_queries(q_pids, num_queries, seed, has_true_match(q_pids, q_cams, g_pids, g_cams))
    query = [ds.query[i] for i in chosen]
    runner_kw: dict[str, Any] = {}
    if Path(model).suffix.lower() in (".pt", ".pth"):
        runner_kw["device"] = device
    with load_runner(model, backend=backend, threads=threads, **runner_kw) as runner:
        qf = extract_features(runner, [r.path for r in query], flip, batch_size, "query")
        gf = extract_features(runner, [r.path for r in ds.gallery], flip, batch_size, "gallery")
        backend_name = runner.backend
    dist = pairwise_distance(qf, gf, metric)
    ranked = rank_matches(dist, [r.pid for r in query], g_pids, [r.camid for r in query], g_cams, topk)
    rows: list[dict[str, Any]] = []
    for i, (q, idx) in enumerate(zip(query, ranked)):
        rows.append({"path": q.path, "pid": q.pid, "camid": q.camid, "matches": [
            {"path": ds.gallery[j].path, "pid": int(g_pids[j]), "camid": int(g_cams[j]),
             "distance": float(dist[i, j]), "correct": bool(g_pids[j] == q.pid)} for j in idx]})
    paths = sorted({r["path"] for r in rows} | {m["path"] for r in rows for m in r["matches"]})
    images = dict(zip(paths, read_images(paths)))
    r1 = sum(1 for r in rows if r["matches"] and r["matches"][0]["correct"])
    title = (f"{Path(model).name} ({backend_name}) on {os.path.basename(os.path.normpath(str(data_root)))}: "
             f"top-{topk} gallery matches of {len(rows)} queries ({metric} distance{', flip-averaged' if flip else ''};"
             f" seed {seed}); green = same id, red = other id; same id + same camera excluded; "
             f"under each match: its id and distance; rank-1 right {r1}/{len(rows)}")
    canvas, layout = render_ranks(rows, images, topk, title)
    fig = RanksFigure(canvas, layout, rows, title, extra={"topk": topk, "model": str(model), "backend": backend_name,
                                                          "data_root": str(data_root), "seed": seed})
    if out is not None:
        fig.path = write_png(out, canvas)
    fig.seconds = time.perf_counter() - t0
    return fig
