"""The run report: the picture gallery sink, the HTML page (content, escaping, no external URL), the CLI, a real
headless Chromium that loads the page (no console error, identity cards in the DOM) and one end-to-end run on vtest.

The browser is driven over the DevTools protocol with a tiny stdlib websocket client (no pip package): it collects
uncaught exceptions, ``console.error`` calls and failed resource loads, and a negative control proves that check can
fail. Install the browser with ``apt-get install -y --no-install-recommends chromium``; without it those tests skip.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from apnet_edge.cli import main
from apnet_edge.errors import ApnetError
from apnet_edge.pipeline.gallery import IdentityGallery
from apnet_edge.pipeline.schema import ReidConfig
from apnet_edge.report import ReportError, build_report

SHARED = Path(__file__).resolve().parents[3] / "shared"
CARD_0248 = Path(__file__).resolve().parents[2] / "configs" / "reid_0248.card.json"  # NHWC, BGR 0-255
VIDEO = SHARED / "data" / "vtest.avi"
DET = SHARED / "models" / "yolox_nano.onnx"
REID = SHARED / "models" / "person-reidentification-retail-0248.onnx"
SECRET = "hunter2"


# ------------------------------------------------------------------------------------------------ a fake run


def _frames(n: int) -> list[np.ndarray]:
    """``n`` real 576x768 frames of vtest.avi when ../shared has it, else synthetic ones of the same size."""
    if VIDEO.exists():
        cv2 = pytest.importorskip("cv2")
        cap = cv2.VideoCapture(str(VIDEO))
        out: list[np.ndarray] = []
        while len(out) < n:
            ok, img = cap.read()
            if not ok:
                break
            out.append(img)
        cap.release()
        if len(out) == n:
            return out
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        img = np.full((576, 768, 3), 90, np.uint8)
        img[:, :, 1] = np.linspace(40, 200, 768, dtype=np.uint8)[None, :]
        x = 100 + 10 * i
        img[200:400, x:x + 70] = rng.integers(0, 255, size=(200, 70, 3), dtype=np.uint8)  # a "person"
        frames.append(img)
    return frames


def _make_run(root: Path, identities: bool = True) -> Path:
    """A run folder as `apnet-edge run` leaves it: summary, events, MOT files and a real picture gallery."""
    run = root / "run"
    run.mkdir()
    frames = _frames(20)
    gallery = IdentityGallery(run / "report", ReidConfig(), thumb_every_s=0.5, max_thumbnails=4, flush_every_s=0)
    mot = {cid: open(run / f"{cid}.global.txt", "w") for cid in ("left", "right")}
    events = [{"type": "run_started", "wall_time": 1.0,
               "cameras": [{"id": "left", "source": f"rtsp://admin:{SECRET}@10.0.0.5/stream", "roi": None},
                           {"id": "right", "source": "/data/right.avi", "roi": [384, 0, 768, 576]}]}]
    for i, img in enumerate(frames):
        t = i / 10.0
        halves = {"left": img[:, :384], "right": img[:, 384:]}
        for cid, half in halves.items():
            rows: list[tuple[int, Optional[int], tuple[float, ...]]] = []
            if identities and cid == "left" and i < 12:
                rows.append((1, 1, (60.0 + 5 * i, 150.0, 140.0 + 5 * i, 330.0 + 4 * i)))
            if identities and cid == "right" and i >= 8:
                rows.append((4, 1, (200.0 - 5 * i, 160.0, 270.0 - 5 * i, 360.0)))
            if identities and cid == "right" and 3 <= i < 18:
                rows.append((5, 2, (20.0, 300.0, 90.0, 480.0)))
            if cid == "left":
                rows.append((9, None, (300.0, 50.0, 330.0, 110.0)))  # a track never matched
            gallery.add(cid, i, t, half, rows)
            for _tid, gid, (x1, y1, x2, y2) in rows:
                if gid is not None:
                    mot[cid].write(f"{i + 1},{gid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},0.9,-1,-1,-1\n")
    gallery.close()
    for f in mot.values():
        f.close()
    if identities:
        events += [{"type": "identity_created", "gid": 1, "camera": "left", "track_id": 1, "t": 0.3},
                   {"type": "identity_created", "gid": 2, "camera": "right", "track_id": 5, "t": 0.5},
                   {"type": "handoff", "gid": 1, "from_camera": "left", "to_camera": "right", "track_id": 4,
                    "t": 1.1, "gap_s": 0.0, "similarity": 0.71},
                   {"type": "track_switched", "camera": "right", "track_id": 5, "gid": 2, "frame": 9, "t": 0.9}]
    events.append({"type": "run_ended", "failures": [], "wall_s": 2.0})
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"type": "trunc')
    stage = {"count": 20, "mean_ms": 5.0, "p50_ms": 4.0, "p95_ms": 9.5, "p99_ms": 12.25, "max_ms": 14.0}
    summary = {
        "wall_s": 2.0, "model_build_s": 0.4,
        "cameras": {"left": {"source": "rtsp://***:***@10.0.0.5/stream", "frames_processed": 20, "frames_read": 20,
                             "frames_dropped": 0, "reconnects": 0, "error": None, "fps": 10.0},
                    "right": {"source": "/data/right.avi", "frames_processed": 20, "frames_read": 20,
                              "frames_dropped": 0, "reconnects": 0, "error": "<script>alert(1)</script>", "fps": 10.0}},
        "identities_created": 2 if identities else 0, "gallery_size": 2 if identities else 0, "gallery_evicted": 0,
        "events": {}, "latency_ms": {"detect": stage, "track": {**stage, "p99_ms": 1.5}, "embed_crops": stage},
        "peak_rss_mb": 321.0, "failures": ["camera right: <script>alert(1)</script>"], "stopped": False,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_run(tmp_path_factory.mktemp("report"))


# ------------------------------------------------------------------------------------------------ the page


def _cards(page: str) -> list[str]:
    return re.findall(r"<article class='identity' id='g(\d+)'", page)


def test_report_shows_identities_pictures_and_charts(fake_run: Path, tmp_path: Path) -> None:
    out = build_report(fake_run, tmp_path / "r.html")
    page = out.read_text()
    assert _cards(page) == ["1", "2"]  # sorted by first seen
    card1 = page[page.index("id='g1'"):page.index("id='g2'")]
    assert card1.count("<img src='data:image/jpeg;base64,") == 2  # best crop from each camera it was seen in
    assert "left, right" in card1 and "1 (1 across cameras)" in card1 and "0.0 s" in card1 and "1.9 s" in card1
    assert page.count("data:image/jpeg;base64,") >= 3 + 4  # crops + thumbnails
    assert "<div class='strip' data-camera='left'>" in page and "<div class='strip' data-camera='right'>" in page
    assert "id='timeline-svg'" in page and "data-gid='2' data-camera='right'" in page
    assert "id='latency-svg'" in page and "detect p99: 12.250 ms" in page
    assert "embed_crops (a count per re-ID call" in page  # not drawn as milliseconds
    assert "tracks switched to another person (reid.switch_below)</dt><dd>1<" in page
    assert "ids revised (matcher.revise_window_s)</dt><dd>0<" in page
    for img in re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page):
        assert base64.b64decode(img)[:2] == b"\xff\xd8"  # real JPEGs
    # self-contained, escaped, no secret
    assert not re.search(r"(?:src|href)\s*=\s*['\"](?!data:|#)", page)
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", page, re.IGNORECASE)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert SECRET not in page and "rtsp://***:***@10.0.0.5/stream" in page
    assert "events.jsonl: 1 line(s)" in page  # the truncated last line is reported, not fatal


def test_default_output_is_run_dir_report_html(fake_run: Path) -> None:
    out = build_report(fake_run)
    assert out == fake_run / "report.html" and out.stat().st_size > 10_000


def test_zero_identities_and_missing_optional_files(tmp_path: Path) -> None:
    run = _make_run(tmp_path, identities=False)
    page = build_report(run).read_text()
    assert _cards(page) == [] and "No global identity was created" in page
    shutil.rmtree(run / "report")
    for name in ("events.jsonl", "left.global.txt", "right.global.txt"):
        (run / name).unlink()
    page = build_report(run).read_text()
    assert "events.jsonl is missing" in page and "report/index.json is missing" in page
    assert "left.global.txt" in page and "No thumbnails for this camera" in page


def test_live_camera_times_and_a_tampered_index(tmp_path: Path) -> None:
    """Live cameras stamp frames with the wall clock: shown as dates, the timeline counts seconds after the start."""
    run = tmp_path / "live"
    g = IdentityGallery(run / "report", None, flush_every_s=0)
    t0 = 1_700_000_000.0
    for i in range(5):
        g.add("door", i, t0 + i, _img(), [(1, 6, (10.0, 10.0, 60.0, 120.0))])
    g.close()
    (run / "summary.json").write_text(json.dumps({"cameras": {"door": {"source": "rtsp://u:p@cam/x?token=abc"}}}))
    index = json.loads((run / "report" / "index.json").read_text())
    index["cameras"]["door"]["thumbnails"].append({"file": "../summary.json", "t": t0, "frame": 0})
    (run / "report" / "index.json").write_text(json.dumps(index))
    page = build_report(run).read_text()
    assert _cards(page) == ["6"] and time.strftime("%Y-%m-%d", time.localtime(t0)) in page
    assert "x: seconds after" in page and "abc" not in page and "u:p@" not in page
    assert "outside report/; left out" in page and page.count("data:image/jpeg;base64,") == 3 + 1  # thumbs + crop


def test_missing_summary_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "events.jsonl").write_text("")
    with pytest.raises(ReportError, match=r"summary\.json.*is missing.*events\.jsonl") as info:
        build_report(tmp_path)
    assert isinstance(info.value, ApnetError)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ReportError, match="not valid JSON"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_report(fake_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sub" / "page.html"
    assert main(["report", str(fake_run), "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ the gallery sink


def _img(h: int = 400, w: int = 300, value: int = 100) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def test_gallery_keeps_the_best_crop_and_times(tmp_path: Path) -> None:
    g = IdentityGallery(tmp_path, ReidConfig(), flush_every_s=0)
    # quality: size up to ref_box_height 160, halved when the box touches the border
    g.add("a", 0, 1.0, _img(value=10), [(7, 3, (50.0, 50.0, 110.0, 130.0))])  # 80 px high
    g.add("a", 1, 1.1, _img(value=20), [(7, 3, (50.0, 50.0, 110.0, 220.0))])  # 170 px: best
    g.add("a", 2, 1.2, _img(value=30), [(7, 3, (0.0, 50.0, 80.0, 290.0))])  # taller but truncated: 0.5
    g.add("a", 3, 1.3, _img(value=40), [(7, None, (50.0, 50.0, 110.0, 250.0))])  # no gid: ignored
    g.add("b", 0, 7.0, _img(value=50), [(1, 3, (10.0, 10.0, 20.0, 30.0))])  # tiny: quality 0, still a crop
    g.close()
    idx = json.loads((tmp_path / "index.json").read_text())
    a = idx["identities"]["3"]["a"]
    assert (a["first_t"], a["last_t"], a["frames"], a["tracks"]) == (1.0, 1.2, 3, [7])
    assert a["crop_t"] == 1.1 and a["box_height"] == 170.0 and a["quality"] == 1.0
    cv2 = pytest.importorskip("cv2")
    crop = cv2.imread(str(tmp_path / a["crop"]))
    assert crop.shape[0] == 160 and abs(int(crop.mean()) - 20) <= 2  # shrunk to crop_height, from frame 1
    b = idx["identities"]["3"]["b"]
    assert b["crop"] and b["quality"] == 0.0 and (tmp_path / b["crop"]).is_file()
    assert idx["cameras"]["a"]["frames"] == 4


def test_gallery_thumbnails_are_bounded_and_spread(tmp_path: Path) -> None:
    g = IdentityGallery(tmp_path, None, thumb_every_s=1.0, max_thumbnails=6, thumb_width=64, flush_every_s=0)
    for i in range(400):
        g.add("cam", i, i * 0.5, _img(48, 64, i % 255), [])
        assert len(list((tmp_path / "thumbs").glob("*.jpg"))) <= 6
    g.close()
    thumbs = json.loads((tmp_path / "index.json").read_text())["cameras"]["cam"]["thumbnails"]
    ts = [t["t"] for t in thumbs]
    assert 3 <= len(ts) <= 6 and ts[0] == 0.0 and ts[-1] >= 199.5 - 2 * (ts[1] - ts[0])
    gaps = np.diff(ts)
    assert gaps.min() > 0 and gaps.max() <= 2 * gaps.min()  # evenly spread over the whole run
    assert sorted(p.name for p in (tmp_path / "thumbs").iterdir()) == sorted(Path(t["file"]).name for t in thumbs)


def test_gallery_bounds_identities_and_intervals(tmp_path: Path) -> None:
    g = IdentityGallery(tmp_path, None, max_identities=3, max_intervals=2, gap_s=1.0, flush_every_s=0)
    for gid in range(10):
        g.add("a", gid, float(gid), _img(), [(gid, gid, (10.0, 10.0, 60.0, 120.0))])
    for k, t in enumerate((20.0, 30.0, 40.0, 40.5)):  # gid 9 comes back 3 times; 2 intervals kept
        g.add("a", 100 + k, t, _img(), [(9, 9, (10.0, 10.0, 60.0, 120.0))])
    g.close()
    idx = json.loads((tmp_path / "index.json").read_text())
    assert sorted(idx["identities"], key=int) == ["7", "8", "9"] and idx["evicted_identities"] == 7
    assert len(list((tmp_path / "crops").glob("*.jpg"))) == 3
    assert idx["identities"]["9"]["a"]["intervals"] == [[9.0, 9.0], [20.0, 40.5]]  # closest two merged


# ------------------------------------------------------------------------------------------------ a real browser


def _chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _WebSocket:
    """The client side of RFC 6455, just enough for the DevTools protocol (text frames, no extensions)."""

    def __init__(self, port: int, path: str, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self._buf = b""
        while b"\r\n\r\n" not in self._buf:
            self._fill()
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket upgrade refused: {head[:200]!r}")

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the browser closed the connection")
        self._buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _frame(self, opcode: int, data: bytes) -> None:
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = (np.frombuffer(data, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)).tobytes()
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._take(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._take(8))[0]
            mask = self._take(4) if b1 & 0x80 else None
            payload = self._take(n)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the websocket")
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode("utf-8")


class Browser:
    """Headless Chromium (no sandbox: root in a container; throw-away profile) driven over the DevTools protocol."""

    def __init__(self, binary: str, profile: Path, timeout: float = 15.0) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{binary} did not open its DevTools port (exit code {self.proc.returncode})")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        self.ws = _WebSocket(int(port), path, timeout)
        self._id = 0
        self.pending: list[dict[str, Any]] = []

    def call(self, method: str, params: Optional[dict] = None, session: Optional[str] = None) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            data = json.loads(self.ws.recv())
            if data.get("id") == self._id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
            self.pending.append(data)

    def _events_until(self, method: str, session: str, settle_s: float) -> list[dict[str, Any]]:
        """Every event of ``session`` until ``method`` arrives, then ``settle_s`` more seconds of them."""
        events: list[dict[str, Any]] = []
        seen, deadline = False, time.monotonic() + self.timeout
        end: Optional[float] = None
        while True:
            if self.pending:
                data = self.pending.pop(0)
            else:
                now = time.monotonic()
                if end is not None and now >= end:
                    return events
                if now > deadline:
                    raise TimeoutError(f"no {method} within {self.timeout} s")
                self.ws.sock.settimeout(max(0.01, (end or deadline) - now))
                try:
                    data = json.loads(self.ws.recv())
                except socket.timeout:
                    continue
                finally:
                    self.ws.sock.settimeout(self.timeout)
            if data.get("sessionId") != session:
                continue
            events.append(data)
            if data.get("method") == method and not seen:
                seen, end = True, time.monotonic() + settle_s

    def load(self, page: Path, settle_s: float = 0.3) -> tuple[list[str], dict[str, Any]]:
        """Open ``page``; return (console errors, facts about the DOM after the load event)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for m in ("Runtime.enable", "Log.enable", "Page.enable"):
                self.call(m, session=session)
            nav = self.call("Page.navigate", {"url": page.resolve().as_uri()}, session)
            errors = [f"navigation: {nav['errorText']}"] if nav.get("errorText") else []
            for ev in self._events_until("Page.loadEventFired", session, settle_s):
                p = ev.get("params", {})
                if ev.get("method") == "Runtime.exceptionThrown":
                    d = p.get("exceptionDetails", {})
                    errors.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
                elif ev.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    errors.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                                for a in p.get("args", [])))
                elif ev.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                    errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            expr = ("JSON.stringify({ready: document.readyState, body: Object.assign({}, document.body.dataset), "
                    "cards: Array.from(document.querySelectorAll('article.identity')).map(a => a.dataset.gid), "
                    "title: document.title, svgs: document.querySelectorAll('svg.chart').length, "
                    "images: document.images.length})")
            res = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
            return errors, json.loads(res["result"]["value"])
        finally:
            self.call("Target.closeTarget", {"targetId": target})

    def close(self) -> None:
        try:
            if hasattr(self, "ws"):
                self.call("Browser.close")
        except (OSError, RuntimeError, ValueError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium binary on PATH (chromium, chromium-browser, google-chrome); install it with "
                    "`apt-get install -y --no-install-recommends chromium`")
    b = Browser(binary, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def test_page_loads_in_chromium_without_console_errors(fake_run: Path, browser: Browser, tmp_path: Path) -> None:
    t0 = time.monotonic()
    errors, dom = browser.load(build_report(fake_run, tmp_path / "report.html"))
    assert errors == []
    assert dom["ready"] == "complete" and dom["title"].startswith("apnet-edge run report")
    assert dom["cards"] == ["1", "2"] and dom["body"]["identityCards"] == "2"  # the inline script ran
    assert dom["body"]["brokenImages"] == "0" and dom["images"] >= 7 and dom["svgs"] == 2
    assert time.monotonic() - t0 < 10


def test_browser_check_catches_errors(fake_run: Path, browser: Browser, tmp_path: Path) -> None:
    """Negative control: the same page with an exception, a console.error and a missing picture injected."""
    page = build_report(fake_run, tmp_path / "report.html").read_text()
    bad = tmp_path / "bad.html"
    bad.write_text(page.replace("</main>", "</main><img src='missing.png' alt='x'><script>console.error('boom');"
                                            "notDefinedAnywhere();</script>"))
    errors, dom = browser.load(bad)
    text = "\n".join(errors)
    assert "notDefinedAnywhere" in text and "console.error: boom" in text and "missing.png" in text, text
    assert dom["body"]["brokenImages"] == "1"


def test_empty_run_page_loads_in_chromium(tmp_path: Path, browser: Browser) -> None:
    errors, dom = browser.load(build_report(_make_run(tmp_path, identities=False)))
    assert errors == [] and dom["cards"] == [] and dom["body"]["identityCards"] == "0"


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.skipif(not (VIDEO.exists() and DET.exists() and REID.exists()),
                    reason="../shared video/models absent (vtest.avi, yolox_nano.onnx, 0248 re-ID)")
def test_run_writes_a_report_with_identities(tmp_path: Path) -> None:
    pytest.importorskip("supervision")
    from apnet_edge.pipeline.run import run_pipeline
    from apnet_edge.pipeline.schema import parse_cams

    cfg = parse_cams({
        "cameras": [{"id": "left", "source": str(VIDEO), "roi": [0, 0, 384, 576]},
                    {"id": "right", "source": str(VIDEO), "roi": [384, 0, 768, 576]}],
        "detector": {"model": str(DET), "threads": 2},
        "reid": {"model": str(REID), "card": str(CARD_0248), "threads": 2},
        "outputs": {"dir": str(tmp_path / "out"), "video": "none", "log_every_s": 0},
        "max_frames": 30,
    }, tmp_path)
    s = run_pipeline(cfg)
    out = tmp_path / "out"
    assert s["report"] == str(out / "report.html") and "report_error" not in s
    assert json.loads((out / "summary.json").read_text())["report"] == s["report"]
    page = (out / "report.html").read_text()
    cards = _cards(page)
    assert len(cards) >= 1 and page.count("<img src='data:image/jpeg;base64,") >= len(cards)
    assert (out / "report" / "index.json").is_file() and list((out / "report" / "crops").glob("g*_*.jpg"))
    binary = _chromium()
    if binary is not None:
        b = Browser(binary, tmp_path / "profile")
        try:
            errors, dom = b.load(out / "report.html")
        finally:
            b.close()
        assert errors == [] and dom["cards"] == cards


def test_report_failure_does_not_lose_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """_build_report never raises: the error goes into the summary, the outputs stay."""
    import apnet_edge.report as report
    from apnet_edge.pipeline.run import _build_report

    def broken(run_dir: Any, out: Any = None) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(report, "build_report", broken)
    assert _build_report(tmp_path) == {"report": None, "report_error": "OSError: disk full"}
