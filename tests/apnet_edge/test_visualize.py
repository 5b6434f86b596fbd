"""``visualize ranks``: query choice, junk removal, border colours on a constructed case, the CLI, and that it runs
without torch or matplotlib (numpy + OpenCV + ONNX Runtime only)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from apnet_edge.card import ModelCard
from apnet_edge.cli import main
from apnet_edge.errors import DatasetError
from apnet_edge.visualize import (
    GREEN,
    QUERY_COLOR,
    RED,
    image_paths,
    pick_queries,
    rank_matches,
    render_ranks,
    visualize_ranks,
)

ROOT = Path(__file__).resolve().parents[2]
CARD = ModelCard(arch="tiny", backbone="conv1x1", level=0, input_size=(32, 16), embedding_dim=8)
# identity -> base BGR colour (far apart, so that a colour-only model ranks them right)
COLOURS = {1: (30, 30, 220), 2: (40, 200, 40), 3: (220, 60, 30), 4: (30, 220, 230)}


def _tiny_onnx(path: Path) -> Path:
    """1x1 conv (3 -> 8) + ReLU + global average pool: a colour embedding; model card in the metadata."""
    w = np.random.default_rng(0).normal(size=(8, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["images", "W"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["embeddings"], axis=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 16])],
                              [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", 8])],
                              [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "apnet_edge.card", CARD.to_json()
    onnx.save(model, str(path))
    return path


def _person(pid: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.empty((64, 32, 3), np.uint8)
    img[:] = COLOURS[pid]
    return np.clip(img.astype(int) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Market-named folder: every identity has 2 queries in camera 1; the gallery holds, per identity, an exact
    copy of its first query in camera 1 (junk: same id + camera, distance 0) and 2 images in camera 2."""
    root = tmp_path_factory.mktemp("site")
    (root / "query").mkdir()
    (root / "bounding_box_test").mkdir()
    for pid in COLOURS:
        for k in range(2):
            cv2.imwrite(str(root / "query" / f"{pid:04d}_c1s1_{10 * pid + k:06d}_00.png"), _person(pid, 100 * pid + k))
        cv2.imwrite(str(root / "bounding_box_test" / f"{pid:04d}_c1s1_{10 * pid:06d}_00.png"), _person(pid, 100 * pid))
        for k in range(2):
            cv2.imwrite(str(root / "bounding_box_test" / f"{pid:04d}_c2s1_{10 * pid + k:06d}_00.png"),
                        _person(pid, 100 * pid + 50 + k))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


def test_rank_matches_drops_same_id_same_camera_and_sorts() -> None:
    # gallery: 0 = id 1 cam 0 (junk for query id 1 cam 0), 1 = id 1 cam 1, 2 = id 2 cam 0, 3 = id -1, 4 = id 2 cam 1
    dist = np.array([[0.0, 0.3, 0.1, 0.05, 0.3], [0.2, 0.1, 0.9, 0.0, 0.4]])
    ranked = rank_matches(dist, [1, 2], [1, 1, 2, -1, 2], [0, 0], [0, 1, 0, 0, 1], topk=10)
    assert ranked[0].tolist() == [2, 1, 4]  # junk 0 and id -1 gone; the tie 0.3 keeps gallery order
    assert ranked[1].tolist() == [1, 0, 4]  # gallery 2 is id 2 in the query's camera 0: junk, even if far
    assert rank_matches(dist, [1, 2], [1, 1, 2, -1, 2], [0, 0], [0, 1, 0, 0, 1], topk=1)[0].tolist() == [2]
    with pytest.raises(ValueError, match="dist must be"):
        rank_matches(dist[:1], [1, 2], [1, 1, 2, -1, 2], [0, 0], [0, 1, 0, 0, 1])


def test_pick_queries_spreads_over_identities() -> None:
    pids = [5, 5, 5, 5, 7, 7, 9, 3]
    three = pick_queries(pids, 4, seed=1)
    assert sorted({pids[i] for i in three}) == [3, 5, 7, 9]  # every identity once before any twice
    assert pick_queries(pids, 4, seed=1) == three  # seeded
    assert len(pick_queries(pids, 6, seed=0)) == 6 and len(pick_queries(pids, 50, seed=0)) == len(pids)
    chosen = pick_queries(pids, 8, seed=2)
    assert [pids[i] for i in chosen] == sorted(pids[i] for i in chosen)  # rows sorted by identity
    eligible = [p != 5 for p in pids]
    assert all(pids[i] != 5 for i in pick_queries(pids, 8, seed=0, eligible=eligible))
    assert len(pick_queries(pids, 2, seed=0, eligible=[False] * len(pids))) == 2  # none eligible: all are


def test_render_ranks_border_colours_follow_identity() -> None:
    img = np.full((40, 20, 3), 128, np.uint8)
    rows = [{"path": "q", "pid": 1, "camid": 0, "matches": [
        {"path": "g", "pid": 1, "camid": 1, "distance": 0.1, "correct": True},
        {"path": "g", "pid": 2, "camid": 0, "distance": 0.2, "correct": False}]}]
    canvas, layout = render_ranks(rows, {"q": img, "g": img}, topk=3, title="t")
    assert canvas.shape[:2] == layout.size
    for col, colour in ((0, QUERY_COLOR), (1, GREEN), (2, RED)):
        x, y = layout.cell_origin(0, col)
        assert tuple(canvas[y + 1, x + 1]) == colour and tuple(canvas[y + layout.cell_h - 2, x + 2]) == colour
        assert tuple(canvas[y + layout.cell_h // 2, x + layout.cell_w // 2]) == (128, 128, 128)  # the image inside
    x, y = layout.cell_origin(0, 3)  # no third match: background
    assert tuple(canvas[y + 1, x + 1]) == (255, 255, 255)


def test_ranks_on_a_constructed_site(site: Path, tiny: Path, tmp_path: Path) -> None:
    fig = visualize_ranks(tiny, site, tmp_path / "r.png", num_queries=4, topk=5, seed=0)
    assert len(fig.queries) == 4 and sorted(q["pid"] for q in fig.queries) == [1, 2, 3, 4]  # one per identity
    png = cv2.imread(str(fig.path))
    assert png is not None and png.shape[:2] == fig.layout.size
    assert fig.layout.rows == 4 and fig.layout.cols == 6
    for r, q in enumerate(fig.queries):
        assert len(q["matches"]) == 5
        for m in q["matches"]:
            assert not (m["pid"] == q["pid"] and m["camid"] == q["camid"]), "junk must be excluded"
            assert m["correct"] == (m["pid"] == q["pid"])
        # colour-only model on far-apart colours: the two camera-2 images of the query's identity come first
        assert [m["correct"] for m in q["matches"]] == [True, True, False, False, False]
        assert [m["distance"] for m in q["matches"]] == sorted(m["distance"] for m in q["matches"])
        for k, m in enumerate(q["matches"]):
            x, y = fig.layout.cell_origin(r, 1 + k)
            assert tuple(png[y + 1, x + 1]) == (GREEN if m["correct"] else RED)
    assert "rank-1 right 4/4" in fig.summary()


def test_cli_ranks_and_errors(site: Path, tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub" / "ranks.png"
    assert main(["visualize", "ranks", "--model", str(tiny), "--data", str(site), "--queries", "3", "--out",
                 str(out), "--no-flip"]) == 0
    assert "3 queries" in capsys.readouterr().out
    assert cv2.imread(str(out)).shape[1] > 11 * 64  # query + 10 match columns
    empty = tmp_path / "empty"
    (empty / "query").mkdir(parents=True)
    assert main(["visualize", "ranks", "--model", str(tiny), "--data", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bounding_box_test" in err and err.count("\n") == 1
    with pytest.raises(DatasetError, match="query"):
        visualize_ranks(tiny, tmp_path / "nowhere")


def test_image_paths(tmp_path: Path) -> None:
    d = tmp_path / "crops"
    (d / "sub").mkdir(parents=True)
    for name in ("b.jpg", "sub/a.png"):
        cv2.imwrite(str(d / name), np.zeros((8, 4, 3), np.uint8))
    (d / "notes.txt").write_text("x")
    assert [p.name for p in image_paths([d])] == ["b.jpg", "a.png"]
    assert [p.name for p in image_paths([d / "sub" / "a.png", d])] == ["a.png", "b.jpg"]  # given order, no repeats
    assert len(image_paths([d], limit=1)) == 1
    with pytest.raises(DatasetError, match="does not exist"):
        image_paths([tmp_path / "missing.jpg"])
    (tmp_path / "none").mkdir()
    with pytest.raises(DatasetError, match="has no images"):
        image_paths([tmp_path / "none"])
    with pytest.raises(DatasetError, match="not an image"):
        image_paths([d / "notes.txt"])
    with pytest.raises(DatasetError, match="no images given"):
        image_paths([])


def test_ranks_without_torch_or_matplotlib(site: Path, tiny: Path, tmp_path: Path) -> None:
    blocker = textwrap.dedent("""
        import sys, importlib.abc
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'torchvision', 'matplotlib', 'train'):
                    raise ImportError('blocked for the test: ' + name)
                return None
        sys.meta_path.insert(0, _Block())
        from apnet_edge.cli import main
        sys.exit(main(sys.argv[1:]))
        """)
    out = tmp_path / "r.png"
    res = subprocess.run([sys.executable, "-c", blocker, "visualize", "ranks", "--model", str(tiny), "--data", str(site),
                          "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert out.is_file()
