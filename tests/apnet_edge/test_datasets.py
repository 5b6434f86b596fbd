"""Dataset readers on tiny synthetic folders with the official layouts and file names (no real images)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from apnet_edge.datasets import DATASETS, ReidDataset, ReidImage, dataset_names, load_dataset
from apnet_edge.datasets.viper import viper_splits
from apnet_edge.errors import DatasetError

MARKET = "Market-1501-v15.09.15"


def touch(folder: Path, names: list[str]) -> Path:
    """Create ``folder`` and an empty file per name (readers never decode images)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).parent.mkdir(parents=True, exist_ok=True)
        (folder / n).write_bytes(b"")
    return folder


def make_market(root: Path) -> Path:
    d = root / MARKET
    touch(d / "bounding_box_train", [
        "0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c6s2_000001_00.jpg",
        "0000_c1s1_000100_01.jpg", "-1_c3s1_000200_01.jpg", "Thumbs.db",
    ])
    (d / "bounding_box_train" / "subdir").mkdir()
    touch(d / "query", ["0002_c3s1_000300_00.jpg", "0007_c1s1_000400_00.jpg"])
    touch(d / "bounding_box_test", [
        "0002_c4s1_000500_01.jpg", "0007_c5s1_000600_01.jpg", "0000_c2s1_000700_01.jpg", "-1_c1s1_000800_03.jpg",
    ])
    return d


# ------------------------------------------------------------------------------------------------ Market


def test_market_counts_relabel_junk_distractors_cameras(tmp_path: Path) -> None:
    d = make_market(tmp_path)
    ds = load_dataset("market1501", tmp_path)
    assert ds.name == "market1501" and ds.root == str(d)
    # train: pid 0 and -1 dropped, 2 -> 0, 7 -> 1 (sorted original ids)
    assert [(Path(r.path).name, r.pid, r.camid) for r in ds.train] == [
        ("0002_c1s1_000451_03.jpg", 0, 0), ("0002_c2s1_000551_01.jpg", 0, 1), ("0007_c6s2_000001_00.jpg", 1, 5),
    ]
    assert ds.num_train_pids == 2 and ds.num_train_cams == 3
    assert [(r.pid, r.camid) for r in ds.query] == [(2, 2), (7, 0)]
    assert sorted(r.pid for r in ds.gallery) == [0, 2, 7]  # distractor kept, junk dropped
    assert all(os.path.isabs(r.path) and os.path.isfile(r.path) for r in (*ds.train, *ds.query, *ds.gallery))
    assert [r.path for r in ds.gallery] == sorted(r.path for r in ds.gallery)
    assert ds.stats()["gallery"] == {"ids": 3, "images": 3, "cameras": 3}
    assert "train" in ds.summary() and "gallery" in ds.summary()
    # the unpacked folder itself is accepted as root, and gives the same records
    assert load_dataset("market1501", d) == ds


def test_market_missing_folder_says_what_and_how(tmp_path: Path) -> None:
    d = make_market(tmp_path)
    for f in (d / "query").iterdir():
        f.unlink()
    (d / "query").rmdir()
    with pytest.raises(DatasetError, match=r"Market-1501-v15\.09\.15/query.*download Market-1501"):
        load_dataset("market1501", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("market1501", tmp_path / "nowhere")


def test_market_malformed_name_and_bad_camera(tmp_path: Path) -> None:
    d = make_market(tmp_path)
    touch(d / "query", ["img_001.jpg"])
    with pytest.raises(DatasetError, match=r"img_001\.jpg.*0002_c1s1_000451_03\.jpg"):
        load_dataset("market1501", tmp_path)
    (d / "query" / "img_001.jpg").unlink()
    touch(d / "query", ["0003_c7s1_000001_00.jpg"])
    with pytest.raises(DatasetError, match="camera 7"):
        load_dataset("market1501", tmp_path)


def test_market_empty_split(tmp_path: Path) -> None:
    d = make_market(tmp_path)
    for f in (d / "bounding_box_test").iterdir():
        f.unlink()
    touch(d / "bounding_box_test", ["readme.txt"])
    with pytest.raises(DatasetError, match=r"no images .*bounding_box_test"):
        load_dataset("market1501", tmp_path)


def test_market_500k_extra_gallery(tmp_path: Path) -> None:
    d = make_market(tmp_path)
    touch(d / "images", ["0000_c1s1_999999_01.jpg", "0000_c2s3_123456_02.jpg"])
    assert len(load_dataset("market1501", tmp_path, market1501_500k=True).gallery) == 5


# -------------------------------------------------------------------------------------------------- Duke


def test_duke_eight_cameras(tmp_path: Path) -> None:
    d = tmp_path / "DukeMTMC-reID"
    touch(d / "bounding_box_train", ["0001_c2_f0046182.jpg", "0005_c8_f0000001.jpg", "0005_c1_f0000002.jpg"])
    touch(d / "query", ["0002_c1_f0044158.jpg"])
    touch(d / "bounding_box_test", ["0002_c8_f0044999.jpg", "0003_c5_f0001111.jpg"])
    ds = load_dataset("dukemtmcreid", tmp_path)
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 1), (1, 0), (1, 7)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(2, 7), (3, 4)]
    touch(d / "query", ["0002_c9_f0000001.jpg"])
    with pytest.raises(DatasetError, match="camera 9"):
        load_dataset("dukemtmcreid", tmp_path)
    touch(d / "query", ["0002_c1s1_000451_03.jpg"])  # Market name in a Duke folder
    with pytest.raises(DatasetError, match="0001_c2_f0046182.jpg"):
        load_dataset("dukemtmcreid", d)


# ------------------------------------------------------------------------------------------------ CUHK03


def test_cuhk03_np_both_variants(tmp_path: Path) -> None:
    base = tmp_path / "cuhk03-np"
    for variant, n_train in (("labeled", 3), ("detected", 2)):
        v = base / variant
        touch(v / "bounding_box_train", [f"0001_c{1 + i % 2}_{i}.png" for i in range(n_train)])
        touch(v / "query", ["0010_c1_1.png", "0010_c2_6.png"])
        touch(v / "bounding_box_test", ["0010_c1_2.png", "0010_c2_7.png", "0011_c1_1.png"])
    lab = load_dataset("cuhk03", tmp_path, variant="labeled")
    det = load_dataset("cuhk03", tmp_path, variant="detected")
    assert lab.name == "cuhk03" and lab.root.endswith(os.path.join("cuhk03-np", "labeled"))
    assert det.root.endswith(os.path.join("cuhk03-np", "detected"))
    assert (len(lab.train), len(det.train)) == (3, 2)
    assert lab.num_train_pids == 1 and lab.num_train_cams == 2
    assert [(r.pid, r.camid) for r in lab.query] == [(10, 0), (10, 1)]
    assert load_dataset("cuhk03", base, variant="detected") == det  # root = cuhk03-np itself
    with pytest.raises(DatasetError, match="unknown variant"):
        load_dataset("cuhk03", tmp_path, variant="both")
    for f in (base / "detected" / "query").iterdir():
        f.unlink()
    (base / "detected" / "query").rmdir()
    with pytest.raises(DatasetError, match=r"cuhk03-np/detected/query"):
        load_dataset("cuhk03", tmp_path, variant="detected")


# ------------------------------------------------------------------------------------------------ MSMT17


def make_msmt(root: Path, version: str) -> Path:
    folder, train_dir, test_dir = {
        "V1": ("MSMT17_V1", "train", "test"), "V2": ("MSMT17_V2", "mask_train_v2", "mask_test_v2"),
    }[version]
    d = root / folder
    lists = {
        "list_train.txt": (train_dir, [("0000/0000_000_01_0303morning_0015_0.jpg", 0),
                                       ("0000/0000_001_15_0303noon_0020_1.jpg", 0),
                                       ("0003/0003_000_07_0303afternoon_0100_0.jpg", 3)]),
        "list_val.txt": (train_dir, [("0005/0005_000_02_0303morning_0001_0.jpg", 5)]),
        "list_query.txt": (test_dir, [("0000/0000_000_03_0113morning_0010_0.jpg", 0)]),
        "list_gallery.txt": (test_dir, [("0000/0000_001_04_0113noon_0011_0.jpg", 0),
                                        ("0001/0001_000_12_0113noon_0012_0.jpg", 1)]),
    }
    for list_name, (sub, entries) in lists.items():
        touch(d / sub, [rel for rel, _ in entries])
        (d / list_name).write_text("".join(f"{rel} {pid}\n" for rel, pid in entries))
    return d


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_lists(tmp_path: Path, version: str) -> None:
    d = make_msmt(tmp_path, version)
    ds = load_dataset("msmt17", tmp_path)
    assert ds.root == str(d)
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (0, 14), (1, 6)]  # 3 -> 1, camera 15 -> 14
    assert [(r.pid, r.camid) for r in ds.query] == [(0, 2)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(0, 3), (1, 11)]
    both = load_dataset("msmt17", tmp_path, combine_train_val=True)
    assert len(both.train) == 4 and both.num_train_pids == 3
    assert load_dataset("msmt17", d) == ds


def test_msmt17_version_choice_and_errors(tmp_path: Path) -> None:
    make_msmt(tmp_path, "V2")
    d1 = make_msmt(tmp_path, "V1")
    assert load_dataset("msmt17", tmp_path).root.endswith("MSMT17_V1")
    assert load_dataset("msmt17", tmp_path, version="V2").root.endswith("MSMT17_V2")
    (d1 / "train" / "0003" / "0003_000_07_0303afternoon_0100_0.jpg").unlink()
    with pytest.raises(DatasetError, match=r"missing.*0003_000_07_0303afternoon_0100_0\.jpg"):
        load_dataset("msmt17", tmp_path, version="V1")
    touch(d1 / "train", ["0003/0003_000_07_0303afternoon_0100_0.jpg"])
    (d1 / "list_query.txt").write_text("0000/0000_03.jpg 0\n")
    with pytest.raises(DatasetError, match=r"0000_03\.jpg.*0000_000_01_0303morning_0015_0\.jpg"):
        load_dataset("msmt17", d1)
    (d1 / "list_query.txt").unlink()
    with pytest.raises(DatasetError, match=r"MSMT17_V1/list_query\.txt"):
        load_dataset("msmt17", tmp_path, version="V1")
    with pytest.raises(DatasetError, match=r"MSMT17_V1/train.*download MSMT17"):
        load_dataset("msmt17", tmp_path / "MSMT17_V2" / "mask_train_v2")


# ------------------------------------------------------------------------------------------------- VIPeR


@pytest.fixture(scope="module")
def viper_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("viper")
    numbers = [3 * i + 1 for i in range(632)]  # pair numbers are not contiguous in the real data
    touch(root / "VIPeR" / "cam_a", [f"{n:03d}_{(n % 5) * 45}.bmp" for n in numbers])
    touch(root / "VIPeR" / "cam_b", [f"{n:03d}_90.bmp" for n in numbers])
    return root


def test_viper_reader(viper_root: Path) -> None:
    ds = load_dataset("viper", viper_root)
    assert ds.num_train_pids == 632 and len(ds.train) == 1264 and ds.num_train_cams == 2
    assert ds.query == () and ds.gallery == ()
    first = [r for r in ds.train if r.pid == 0]
    assert [(Path(r.path).parent.name, Path(r.path).name, r.camid) for r in first] == [
        ("cam_a", "001_45.bmp", 0), ("cam_b", "001_90.bmp", 1),
    ]


def test_viper_splits_protocol(viper_root: Path) -> None:
    ds = load_dataset("viper", viper_root)
    splits = viper_splits(ds, trials=10, seed=0)
    assert len(splits) == 10 and [s.seed for s in splits] == list(range(10))
    for s in splits:
        assert len(s.train_pids) == len(s.test_pids) == 316
        assert not set(s.train_pids) & set(s.test_pids) and set(s.train_pids) | set(s.test_pids) == set(range(632))
        assert [r.pid for r in s.query] == [r.pid for r in s.gallery] == list(s.test_pids)
        assert {r.camid for r in s.query} == {0} and {r.camid for r in s.gallery} == {1}
        assert len(s.train) == 632 and {r.pid for r in s.train} == set(range(316))
        assert s.as_dataset().num_train_pids == 316
    assert len({s.test_pids for s in splits}) == 10  # the trials differ
    again = viper_splits(ds, trials=10, seed=0)
    assert again == splits  # reproducible
    assert viper_splits(ds, trials=1, seed=7)[0].test_pids == splits[7].test_pids
    assert viper_splits(ds, trials=1, seed=100)[0].test_pids != splits[0].test_pids
    swapped = viper_splits(ds, trials=1, swap_cams=True)[0]
    assert swapped.test_pids == splits[0].test_pids
    assert {r.camid for r in swapped.query} == {1} and {r.camid for r in swapped.gallery} == {0}


def test_viper_unpaired_and_bad_names(tmp_path: Path) -> None:
    touch(tmp_path / "VIPeR" / "cam_a", ["000_45.bmp", "001_0.bmp"])
    touch(tmp_path / "VIPeR" / "cam_b", ["000_90.bmp"])
    with pytest.raises(DatasetError, match="only one of cam_a / cam_b"):
        load_dataset("viper", tmp_path)
    touch(tmp_path / "VIPeR" / "cam_b", ["person1.bmp"])
    with pytest.raises(DatasetError, match=r"person1\.bmp.*000_45\.bmp"):
        load_dataset("viper", tmp_path)
    with pytest.raises(DatasetError, match=r"VIPeR/cam_b.*download VIPeR"):
        load_dataset("viper", tmp_path / "VIPeR" / "cam_a")


# ------------------------------------------------------------------------------------------------ folder


def test_folder_arbitrary_cameras_and_optional_train(tmp_path: Path) -> None:
    touch(tmp_path / "query", ["0001_c7s1_000010_00.jpg", "0002_c101_f0000001.jpg"])
    touch(tmp_path / "bounding_box_test", ["0001_c0s1_000001_00.png", "0002_c7_x.jpeg", "-1_c7s1_0_0.jpg"])
    ds = load_dataset("folder", tmp_path)
    assert ds.train == () and ds.num_train_pids == 0
    assert [(r.pid, r.camid) for r in ds.query] == [(1, 1), (2, 2)]  # c0 -> 0, c7 -> 1, c101 -> 2
    assert [(r.pid, r.camid) for r in ds.gallery] == [(1, 0), (2, 1)]
    touch(tmp_path / "bounding_box_train", ["0040_c3s1_000001_00.jpg", "0050_c3s1_000002_00.jpg"])
    ds = load_dataset("folder", tmp_path)
    assert [r.pid for r in ds.train] == [0, 1] and {r.camid for r in ds.train} == {1}  # c3 sits between c0 and c7
    touch(tmp_path / "query", ["frame12.jpg"])
    with pytest.raises(DatasetError, match=r"frame12\.jpg.*0002_c1s1_000451_03\.jpg"):
        load_dataset("folder", tmp_path)


def test_folder_missing_gallery(tmp_path: Path) -> None:
    touch(tmp_path / "query", ["0001_c1s1_000010_00.jpg"])
    with pytest.raises(DatasetError, match=r"bounding_box_test"):
        load_dataset("folder", tmp_path)


# ---------------------------------------------------------------------------------------------- registry


def test_registry_and_unknown_names(tmp_path: Path) -> None:
    assert dataset_names() == sorted(DATASETS) == ["cuhk03", "dukemtmcreid", "folder", "market1501", "msmt17", "viper"]
    with pytest.raises(DatasetError, match=r"unknown dataset 'cuhk01'.*market1501.*viper"):
        load_dataset("cuhk01", tmp_path)
    make_market(tmp_path)
    assert load_dataset("Market-1501", tmp_path).num_train_pids == 2
    with pytest.raises(DatasetError, match=r"variant.*market1501_500k"):
        load_dataset("market1501", tmp_path, variant="labeled")


def test_reid_dataset_checks_relabelling() -> None:
    ok = ReidDataset("x", "/r", [ReidImage("/a.jpg", 0, 0)], [], [])
    assert isinstance(ok.train, tuple) and ok.num_train_pids == 1
    with pytest.raises(DatasetError, match="relabelled"):
        ReidDataset("x", "/r", (ReidImage("/a.jpg", 5, 0),), (), ())
