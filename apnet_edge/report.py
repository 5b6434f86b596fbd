"""``apnet-edge report RUN_DIR``: one self-contained HTML page summarising a run of ``apnet-edge run``.

:func:`build_report` reads the run folder (``summary.json`` is required; ``events.jsonl``, the MOT files
``<camera>.global.txt`` and the picture gallery ``report/index.json`` written by
:class:`~apnet_edge.pipeline.gallery.IdentityGallery` are optional) and writes ``report.html`` with everything inline:
pictures as base64 ``data:`` URIs, charts as SVG generated here, CSS in a ``<style>`` element and a few lines of
JavaScript that only count what is on the page. The page references no external URL, so it opens offline and can be
mailed as one file.

Sections: the run (cameras, sources with credentials redacted, wall time, fps per camera, failures), a thumbnail
strip per camera, one card per global identity (best crop per camera, cameras seen, first/last seen, handoffs), a
timeline (one row per identity, a bar per camera, x = stream time) and the per-stage latency chart (p50/p95/p99).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from apnet_edge.errors import ApnetError
from apnet_edge.pipeline.schema import redact_url

GALLERY_DIR = "report"
INDEX_NAME = "index.json"
CAMERA_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")
PERCENTILE_COLORS = (("p50_ms", "p50", "#9ecae1"), ("p95_ms", "p95", "#4292c6"), ("p99_ms", "p99", "#08519c"))
EPOCH_MIN = 1e8  # timestamps above this are wall-clock seconds (live cameras), below it stream seconds (files)
MAX_IMAGE_BYTES = 2_000_000  # a picture larger than this is not embedded


class ReportError(ApnetError, ValueError):
    """A run folder cannot be reported: it is missing, or lacks/corrupts an essential file (summary.json)."""


@dataclass
class CameraSeen:
    """One identity in one camera, from the gallery (times, crop) and/or the MOT file (frames)."""

    first_t: Optional[float] = None
    last_t: Optional[float] = None
    first_frame: Optional[int] = None
    last_frame: Optional[int] = None
    rows: int = 0
    crop: Optional[str] = None  # data URI
    intervals: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Identity:
    gid: int
    cameras: dict[str, CameraSeen] = field(default_factory=dict)
    handoffs: int = 0
    cross_camera_handoffs: int = 0
    created_camera: Optional[str] = None
    created_t: Optional[float] = None

    @property
    def first_t(self) -> Optional[float]:
        ts = [c.first_t for c in self.cameras.values() if c.first_t is not None]
        return min(ts) if ts else self.created_t

    @property
    def last_t(self) -> Optional[float]:
        ts = [c.last_t for c in self.cameras.values() if c.last_t is not None]
        return max(ts) if ts else None


@dataclass
class RunData:
    run_dir: Path
    summary: dict[str, Any]
    camera_ids: list[str]
    sources: dict[str, str]
    identities: dict[int, Identity]
    thumbnails: dict[str, list[tuple[str, float, int]]]  # camera -> [(data URI, t, frame)]
    event_counts: Counter
    notes: list[str]
    epoch: bool = False


# ---------------------------------------------------------------------------------------------------- reading


def _read_summary(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise ReportError(f"run folder {str(run_dir)!r} does not exist; give the outputs.dir of an "
                          f"`apnet-edge run` (e.g. runs/latest)")
    path = run_dir / "summary.json"
    if not path.is_file():
        present = sorted(p.name for p in run_dir.iterdir())[:12]
        raise ReportError(f"{str(path)!r} is missing: a report needs the summary.json that `apnet-edge run` writes "
                          f"when it ends (was the run killed, or is this not a run folder?); found: "
                          f"{', '.join(present) or 'nothing'}")
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"{str(path)!r} is not valid JSON ({exc}); re-run `apnet-edge run` to rewrite it") from None
    if not isinstance(summary, dict):
        raise ReportError(f"{str(path)!r} must hold a JSON object, found {type(summary).__name__}")
    return summary


def _data_uri(path: Path, notes: list[str]) -> Optional[str]:
    try:
        data = path.read_bytes()
    except OSError:
        notes.append(f"picture {path.name} listed in the gallery index is missing")
        return None
    if len(data) > MAX_IMAGE_BYTES:
        notes.append(f"picture {path.name} is larger than {MAX_IMAGE_BYTES} bytes and was left out")
        return None
    mime = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _picture(gdir: Path, rel: Any, notes: list[str]) -> Optional[str]:
    """The data URI of a picture the gallery index names (only files inside the gallery folder)."""
    path = (gdir / str(rel)).resolve()
    if gdir.resolve() not in path.parents:
        notes.append(f"the gallery index names {str(rel)!r}, outside {GALLERY_DIR}/; left out")
        return None
    return _data_uri(path, notes)


def _identity(ids: dict[int, Identity], gid: Any) -> Optional[Identity]:
    try:
        g = int(gid)
    except (TypeError, ValueError):
        return None
    ident = ids.get(g)
    if ident is None:
        ident = ids[g] = Identity(g)
    return ident


def _read_events(path: Path, ids: dict[int, Identity], sources: dict[str, str], notes: list[str]) -> Counter:
    counts: Counter = Counter()
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if not isinstance(ev, dict):
                bad += 1
                continue
            kind = str(ev.get("type"))
            counts[kind] += 1
            if kind == "run_started":
                for cam in ev.get("cameras") or []:
                    if isinstance(cam, dict) and "id" in cam:
                        sources.setdefault(str(cam["id"]), str(cam.get("source", "")))
            elif kind == "identity_created":
                ident = _identity(ids, ev.get("gid"))
                if ident is not None and ident.created_t is None:
                    ident.created_camera, ident.created_t = ev.get("camera"), _num(ev.get("t"))
            elif kind == "handoff":
                ident = _identity(ids, ev.get("gid"))
                if ident is not None:
                    ident.handoffs += 1
                    ident.cross_camera_handoffs += int(ev.get("from_camera") != ev.get("to_camera"))
    if bad:
        notes.append(f"events.jsonl: {bad} line(s) are not JSON objects and were skipped (a run that was killed "
                     f"can leave half a line)")
    return counts


def _read_mot(path: Path, camera: str, ids: dict[int, Identity], notes: list[str]) -> None:
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 2:
                continue
            try:
                frame, gid = int(float(parts[0])), int(float(parts[1]))
            except ValueError:
                bad += 1
                continue
            ident = _identity(ids, gid)
            assert ident is not None
            seen = ident.cameras.setdefault(camera, CameraSeen())
            seen.rows += 1
            seen.first_frame = frame if seen.first_frame is None else min(seen.first_frame, frame)
            seen.last_frame = frame if seen.last_frame is None else max(seen.last_frame, frame)
    if bad:
        notes.append(f"{path.name}: {bad} malformed line(s) skipped")


def _read_gallery(gdir: Path, ids: dict[int, Identity], thumbs: dict[str, list[tuple[str, float, int]]],
                  notes: list[str]) -> None:
    path = gdir / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        notes.append(f"{GALLERY_DIR}/{INDEX_NAME} cannot be read ({exc}); no pictures")
        return
    if not isinstance(index, dict):
        notes.append(f"{GALLERY_DIR}/{INDEX_NAME} is not a JSON object; no pictures")
        return
    for cid, cam in (index.get("cameras") or {}).items():
        for th in (cam or {}).get("thumbnails") or []:
            uri = _picture(gdir, th.get("file", ""), notes)
            if uri is not None:
                thumbs.setdefault(str(cid), []).append((uri, _num(th.get("t")) or 0.0, int(th.get("frame") or 0)))
    for gid, per_cam in (index.get("identities") or {}).items():
        ident = _identity(ids, gid)
        if ident is None or not isinstance(per_cam, dict):
            continue
        for cid, s in per_cam.items():
            if not isinstance(s, dict):
                continue
            seen = ident.cameras.setdefault(str(cid), CameraSeen())
            seen.first_t, seen.last_t = _num(s.get("first_t")), _num(s.get("last_t"))
            if seen.first_frame is None and s.get("first_frame") is not None:
                seen.first_frame, seen.last_frame = int(s["first_frame"]) + 1, int(s["last_frame"]) + 1  # 1-based
            seen.intervals = [(float(a), float(b)) for a, b in s.get("intervals") or [] if _num(a) is not None]
            if not seen.intervals and seen.first_t is not None and seen.last_t is not None:
                seen.intervals = [(seen.first_t, seen.last_t)]
            if s.get("crop"):
                seen.crop = _picture(gdir, s["crop"], notes)
    if index.get("evicted_identities"):
        notes.append(f"the picture gallery dropped {index['evicted_identities']} least recently seen identities "
                     f"(limit {index.get('limits', {}).get('max_identities', '?')}); they have no pictures or times")
    if index.get("write_errors"):
        notes.append(f"the picture gallery failed to write {index['write_errors']} file(s) during the run")


def _num(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def load_run(run_dir: Union[str, Path]) -> RunData:
    """Read a run folder into :class:`RunData`; raises :class:`ReportError` when summary.json is unusable."""
    run_dir = Path(run_dir)
    summary = _read_summary(run_dir)
    notes: list[str] = []
    ids: dict[int, Identity] = {}
    sources: dict[str, str] = {}
    raw_cams = summary.get("cameras")
    cams: dict[str, Any] = raw_cams if isinstance(raw_cams, dict) else {}
    for cid, c in cams.items():
        if isinstance(c, dict) and c.get("source") is not None:
            sources[str(cid)] = str(c["source"])
    counts: Counter = Counter()
    events = run_dir / "events.jsonl"
    if events.is_file():
        counts = _read_events(events, ids, sources, notes)
    else:
        notes.append("events.jsonl is missing (outputs.events: false?): handoff counts and creation times unknown")
    camera_ids = list(dict.fromkeys([*map(str, cams), *sources]))
    mot_missing = []
    for cid in camera_ids:
        mot = run_dir / f"{cid}.global.txt"
        if mot.is_file():
            _read_mot(mot, cid, ids, notes)
        else:
            mot_missing.append(mot.name)
    if mot_missing:
        notes.append(f"MOT file(s) missing (outputs.mot: false?): {', '.join(mot_missing)}")
    thumbs: dict[str, list[tuple[str, float, int]]] = {}
    gdir = run_dir / GALLERY_DIR
    if (gdir / INDEX_NAME).is_file():
        _read_gallery(gdir, ids, thumbs, notes)
    else:
        notes.append(f"{GALLERY_DIR}/{INDEX_NAME} is missing (outputs.report: false, or a run from an older "
                     f"version): no thumbnails, crops or timeline")
    for cid in list(thumbs) + [c for i in ids.values() for c in i.cameras]:
        if cid not in camera_ids:
            camera_ids.append(cid)
    times = [t for i in ids.values() for c in i.cameras.values() for t in (c.first_t, c.last_t) if t is not None]
    times += [t for ts in thumbs.values() for _, t, _ in ts]
    epoch = bool(times) and max(times) > EPOCH_MIN
    return RunData(run_dir, summary, camera_ids, {k: redact_url(v) for k, v in sources.items()}, ids, thumbs, counts,
                   notes, epoch)


# ---------------------------------------------------------------------------------------------------- rendering


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _fmt_t(t: Optional[float], epoch: bool) -> str:
    if t is None:
        return "–"
    if epoch:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return f"{t:.1f} s"


def _fmt_num(v: Any, unit: str = "", digits: int = 1) -> str:
    f = _num(v)
    if f is None:
        return "–"
    return f"{f:.{digits}f}{unit}"


def _nice_step(span: float, ticks: int = 6) -> float:
    if span <= 0:
        return 1.0
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _cam_color(camera_ids: list[str], cid: str) -> str:
    k = camera_ids.index(cid) if cid in camera_ids else len(camera_ids)
    return CAMERA_COLORS[k % len(CAMERA_COLORS)]


def _header(run: RunData) -> str:
    s = run.summary
    rows = []
    raw_cams = s.get("cameras")
    cams: dict[str, Any] = raw_cams if isinstance(raw_cams, dict) else {}
    for cid in run.camera_ids:
        c = cams.get(cid) or {}
        err = c.get("error")
        rows.append(
            f"<tr><td><span class='swatch' style='background:{_cam_color(run.camera_ids, cid)}'></span>{_e(cid)}</td>"
            f"<td class='src'>{_e(redact_url(run.sources.get(cid, '')))}</td>"
            f"<td>{_e(c.get('frames_processed', '–'))}</td><td>{_e(c.get('frames_read', '–'))}</td>"
            f"<td>{_e(c.get('frames_dropped', '–'))}</td><td>{_fmt_num(c.get('fps'), '', 2)}</td>"
            f"<td>{_e(c.get('reconnects', '–'))}</td>"
            f"<td class='{'err' if err else 'ok'}'>{_e(redact_url(str(err))) if err else 'ok'}</td></tr>")
    failures = [redact_url(str(f)) for f in s.get("failures") or []]
    if s.get("report_error"):
        failures.append(f"previous report: {redact_url(str(s['report_error']))}")
    fail_html = ("<div class='failures'><h3>Failures</h3><ul>" + "".join(f"<li>{_e(f)}</li>" for f in failures)
                 + "</ul></div>") if failures else "<p class='ok'>No failures.</p>"
    facts = [("wall time", _fmt_num(s.get("wall_s"), " s")), ("model build", _fmt_num(s.get("model_build_s"), " s")),
             ("peak memory", _fmt_num(s.get("peak_rss_mb"), " MB", 0)),
             ("identities created", s.get("identities_created", "–")),
             ("identities in the report", len(run.identities)),
             ("handoffs", run.event_counts.get("handoff", (s.get("events") or {}).get("handoff", "–"))),
             ("ids revised (matcher.revise_window_s)", run.event_counts.get("identity_revised", 0)),
             ("tracks switched to another person (reid.switch_below)", run.event_counts.get("track_switched", 0)),
             ("gallery size at the end", s.get("gallery_size", "–")),
             ("stopped early (Ctrl-C)", "yes" if s.get("stopped") else "no")]
    facts_html = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts)
    return (f"<section id='run'><h2>Run</h2><dl class='facts'>{facts_html}</dl>"
            "<table class='cams'><thead><tr><th>camera</th><th>source</th><th>frames processed</th>"
            "<th>frames read</th><th>dropped</th><th>fps</th><th>reconnects</th><th>status</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{fail_html}</section>")


def _thumbnails(run: RunData) -> str:
    parts = ["<section id='cameras'><h2>Cameras</h2>"]
    for cid in run.camera_ids:
        thumbs = run.thumbnails.get(cid, [])
        parts.append(f"<h3><span class='swatch' style='background:{_cam_color(run.camera_ids, cid)}'></span>"
                     f"{_e(cid)}</h3>")
        if not thumbs:
            parts.append("<p class='muted'>No thumbnails for this camera.</p>")
            continue
        figs = "".join(f"<figure><img src='{uri}' alt='{_e(cid)} at {_e(_fmt_t(t, run.epoch))}' loading='eager'>"
                       f"<figcaption>{_e(_fmt_t(t, run.epoch))} · frame {frame + 1}</figcaption></figure>"
                       for uri, t, frame in thumbs)
        parts.append(f"<div class='strip' data-camera='{_e(cid)}'>{figs}</div>")
    parts.append("</section>")
    return "".join(parts)


def _sorted_identities(run: RunData) -> list[Identity]:
    def key(i: Identity) -> tuple:
        ft = i.first_t
        frames = [c.first_frame for c in i.cameras.values() if c.first_frame is not None]
        return (ft is None, ft if ft is not None else 0.0, min(frames) if frames else 0, i.gid)

    return sorted(run.identities.values(), key=key)


def _identities(run: RunData, max_cards: int) -> str:
    idents = _sorted_identities(run)
    parts = [f"<section id='identities'><h2>Identities <span class='count'>{len(idents)}</span></h2>"]
    if not idents:
        parts.append("<p class='empty'>No global identity was created in this run (nobody was matched, or no "
                     "track lived long enough to be embedded).</p></section>")
        return "".join(parts)
    for ident in idents[:max_cards]:
        cams = [c for c in run.camera_ids if c in ident.cameras]
        figs = []
        rows = []
        for cid in cams:
            seen = ident.cameras[cid]
            color = _cam_color(run.camera_ids, cid)
            img = (f"<img src='{seen.crop}' alt='G{ident.gid} in {_e(cid)}'>" if seen.crop
                   else "<div class='nocrop'>no crop</div>")
            figs.append(f"<figure style='border-color:{color}'>{img}<figcaption>{_e(cid)}</figcaption></figure>")
            frames = (f"{seen.first_frame}–{seen.last_frame}" if seen.first_frame is not None else "–")
            rows.append(f"<tr><td><span class='swatch' style='background:{color}'></span>{_e(cid)}</td>"
                        f"<td>{_e(_fmt_t(seen.first_t, run.epoch))}</td><td>{_e(_fmt_t(seen.last_t, run.epoch))}</td>"
                        f"<td>{_e(frames)}</td></tr>")
        created = (f"created in {_e(ident.created_camera)} at {_e(_fmt_t(ident.created_t, run.epoch))}"
                   if ident.created_camera else "")
        parts.append(
            f"<article class='identity' id='g{ident.gid}' data-gid='{ident.gid}'>"
            f"<h3>G{ident.gid}</h3><div class='crops'>{''.join(figs)}</div>"
            f"<dl><div><dt>cameras</dt><dd>{_e(', '.join(cams) or '–')}</dd></div>"
            f"<div><dt>first seen</dt><dd>{_e(_fmt_t(ident.first_t, run.epoch))}</dd></div>"
            f"<div><dt>last seen</dt><dd>{_e(_fmt_t(ident.last_t, run.epoch))}</dd></div>"
            f"<div><dt>handoffs</dt><dd>{ident.handoffs} ({ident.cross_camera_handoffs} across cameras)</dd></div>"
            f"</dl><p class='muted'>{created}</p>"
            f"<table class='seen'><thead><tr><th>camera</th><th>first seen</th><th>last seen</th><th>MOT frames</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></article>")
    if len(idents) > max_cards:
        parts.append(f"<p class='muted'>{len(idents) - max_cards} more identities are not shown "
                     f"(max_cards={max_cards}).</p>")
    parts.append("</section>")
    return "".join(parts)


def _timeline_svg(run: RunData, max_rows: int) -> str:
    idents = [i for i in _sorted_identities(run) if any(c.intervals for c in i.cameras.values())][:max_rows]
    if not idents:
        return ("<section id='timeline'><h2>Timeline</h2><p class='empty'>No identity has seen times (no "
                "identities, or no picture gallery).</p></section>")
    spans = [iv for i in idents for c in i.cameras.values() for iv in c.intervals]
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    if hi - lo < 1e-6:
        hi = lo + 1.0
    step = _nice_step(hi - lo)
    if not run.epoch:  # stream time: the axis starts on a tick (0 for a run from the start of its files)
        lo = math.floor(lo / step) * step
    origin = lo if run.epoch else 0.0
    label_w, plot_w, row_h, top, bottom = 70, 860, 22, 24, 30
    height = top + row_h * len(idents) + bottom
    width = label_w + plot_w + 20

    def x(t: float) -> float:
        return label_w + (t - lo) / (hi - lo) * plot_w

    out = [f"<svg class='chart' id='timeline-svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
           f"role='img' aria-label='timeline of identities across cameras'>"]
    tick = math.ceil((lo - origin) / step) * step + origin
    while tick <= hi + 1e-9:
        xt = x(tick)
        out.append(f"<line x1='{xt:.1f}' y1='{top - 4}' x2='{xt:.1f}' y2='{height - bottom}' class='grid'/>"
                   f"<text x='{xt:.1f}' y='{height - bottom + 16}' class='tick' text-anchor='middle'>"
                   f"{_e(_fmt_axis(tick - origin, step))}</text>")
        tick += step
    lanes = {cid: k for k, cid in enumerate(run.camera_ids)}
    lane_h = max(2.0, (row_h - 6) / max(1, len(run.camera_ids)))
    for r, ident in enumerate(idents):
        y0 = top + r * row_h
        if r % 2 == 0:
            out.append(f"<rect x='0' y='{y0}' width='{width}' height='{row_h}' class='band'/>")
        out.append(f"<text x='{label_w - 8}' y='{y0 + row_h * 0.68:.1f}' text-anchor='end' class='label'>"
                   f"G{ident.gid}</text>")
        for cid, seen in ident.cameras.items():
            ly = y0 + 3 + lanes.get(cid, 0) * lane_h
            color = _cam_color(run.camera_ids, cid)
            for a, b in seen.intervals:
                w = max(2.0, x(b) - x(a))
                tip = f"G{ident.gid} in {cid}: {_fmt_t(a, run.epoch)} – {_fmt_t(b, run.epoch)}"
                out.append(f"<rect class='bar' data-gid='{ident.gid}' data-camera='{_e(cid)}' x='{x(a):.1f}' "
                           f"y='{ly:.1f}' width='{w:.1f}' height='{lane_h - 1:.1f}' fill='{color}'>"
                           f"<title>{_e(tip)}</title></rect>")
    out.append("</svg>")
    axis = ("seconds after " + _fmt_t(lo, True)) if run.epoch else "stream time (seconds)"
    legend = "".join(f"<span><span class='swatch' style='background:{_cam_color(run.camera_ids, c)}'></span>{_e(c)}"
                     f"</span>" for c in run.camera_ids)
    more = len([i for i in run.identities.values() if any(c.intervals for c in i.cameras.values())]) - len(idents)
    tail = f"<p class='muted'>{more} more identities are not drawn.</p>" if more > 0 else ""
    return (f"<section id='timeline'><h2>Timeline</h2><p class='legend'>{legend} <span class='muted'>x: {_e(axis)}"
            f"</span></p><div class='scroll'>{''.join(out)}</div>{tail}</section>")


def _fmt_axis(v: float, step: float) -> str:
    digits = 0 if step >= 1 else min(3, int(math.ceil(-math.log10(step))))
    return f"{v:.{digits}f}"


def _latency_svg(run: RunData) -> str:
    lat = run.summary.get("latency_ms")
    if not isinstance(lat, dict) or not lat:
        return ("<section id='latency'><h2>Latency per stage</h2><p class='empty'>summary.json has no latency_ms "
                "(no frame was processed).</p></section>")
    stages = [(k, v) for k, v in lat.items() if isinstance(v, dict) and not k.endswith("_crops")]
    counts_only = [(k, v) for k, v in lat.items() if isinstance(v, dict) and k.endswith("_crops")]
    vmax = max([_num(v.get(key)) or 0.0 for _, v in stages for key, _, _ in PERCENTILE_COLORS] + [1e-3])
    label_w, plot_w, bar_h, gap, top = 150, 600, 9, 12, 10
    group_h = bar_h * len(PERCENTILE_COLORS) + gap
    height = top + group_h * len(stages) + 30
    width = label_w + plot_w + 90
    step = _nice_step(vmax, 5)
    hi = math.ceil(vmax / step) * step

    def x(v: float) -> float:
        return label_w + v / hi * plot_w

    out = [f"<svg class='chart' id='latency-svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
           f"role='img' aria-label='per-stage latency p50 p95 p99 in milliseconds'>"]
    tick = 0.0
    while tick <= hi + 1e-9:
        out.append(f"<line x1='{x(tick):.1f}' y1='{top - 4}' x2='{x(tick):.1f}' y2='{height - 26}' class='grid'/>"
                   f"<text x='{x(tick):.1f}' y='{height - 10}' class='tick' text-anchor='middle'>"
                   f"{_fmt_axis(tick, step)}</text>")
        tick += step
    for r, (stage, v) in enumerate(stages):
        y0 = top + r * group_h
        out.append(f"<text x='{label_w - 8}' y='{y0 + bar_h * 2:.1f}' text-anchor='end' class='label'>{_e(stage)}"
                   f"</text>")
        for k, (key, name, color) in enumerate(PERCENTILE_COLORS):
            val = _num(v.get(key)) or 0.0
            y = y0 + k * bar_h
            out.append(f"<rect class='bar' data-stage='{_e(stage)}' x='{label_w}' y='{y}' "
                       f"width='{max(1.0, x(val) - label_w):.1f}' height='{bar_h - 1}' fill='{color}'>"
                       f"<title>{_e(stage)} {name}: {val:.3f} ms</title></rect>"
                       f"<text x='{x(val) + 4:.1f}' y='{y + bar_h - 1.5:.1f}' class='val'>{val:.2f}</text>")
    out.append("</svg>")
    legend = "".join(f"<span><span class='swatch' style='background:{c}'></span>{n}</span>"
                     for _, n, c in PERCENTILE_COLORS)
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v.get('count', '–'))}</td><td>{_fmt_num(v.get('mean_ms'), '', 2)}"
                   f"</td><td>{_fmt_num(v.get('p50_ms'), '', 2)}</td><td>{_fmt_num(v.get('p95_ms'), '', 2)}</td>"
                   f"<td>{_fmt_num(v.get('p99_ms'), '', 2)}</td><td>{_fmt_num(v.get('max_ms'), '', 2)}</td></tr>"
                   for k, v in stages)
    extra = "".join(f"<p class='muted'>{_e(k)} (a count per re-ID call, not ms): mean {_fmt_num(v.get('mean_ms'), '', 1)}"
                    f", max {_fmt_num(v.get('max_ms'), '', 0)}</p>" for k, v in counts_only)
    return (f"<section id='latency'><h2>Latency per stage</h2><p class='legend'>{legend} <span class='muted'>"
            f"milliseconds</span></p><div class='scroll'>{''.join(out)}</div>{extra}<details><summary>numbers"
            f"</summary><table class='lat'><thead><tr><th>stage</th><th>count</th><th>mean</th><th>p50</th>"
            f"<th>p95</th><th>p99</th><th>max</th></tr></thead><tbody>{rows}</tbody></table></details></section>")


CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header nav a{color:#b3e5fc;margin-right:14px;text-decoration:none}
main{padding:8px 24px 40px}section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;margin:16px 0;
padding:8px 16px 16px}h2{font-size:17px;margin:8px 0 12px}h2 .count{background:#eceff1;border-radius:10px;
padding:0 8px;font-size:13px}h3{font-size:15px;margin:12px 0 6px}
.muted{color:#757575}.empty{color:#757575;font-style:italic}.ok{color:#2e7d32}.err{color:#c62828}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:baseline}
dl.facts{display:flex;flex-wrap:wrap;gap:6px 26px;margin:0 0 12px}dl div{display:flex;gap:6px}dt{color:#616161}
dd{margin:0;font-weight:600}table{border-collapse:collapse;font-size:13px}
td,th{border-bottom:1px solid #eee;padding:3px 10px 3px 0;text-align:left}td.src{font-family:monospace}
.failures{border-left:4px solid #c62828;background:#ffebee;padding:4px 12px;margin-top:10px}
.strip{display:flex;gap:8px;overflow-x:auto;padding-bottom:6px}.strip figure{margin:0;flex:none}
.strip img{display:block;width:240px;height:auto;border-radius:3px}figcaption{font-size:12px;color:#616161}
#identities{display:flex;flex-wrap:wrap;gap:12px}#identities h2,#identities>p{flex-basis:100%}
article.identity{border:1px solid #ddd;border-radius:6px;padding:6px 10px;width:max-content;max-width:100%;
background:#fcfcfc}article.identity h3{margin:2px 0 6px}.crops{display:flex;gap:6px}
.crops figure{margin:0;border-top:4px solid;padding-top:3px;text-align:center}
.crops img{display:block;height:128px;width:auto}.nocrop{height:128px;width:64px;background:#eee;font-size:11px;
display:flex;align-items:center;justify-content:center;color:#999}article dl{margin:6px 0;font-size:13px}
.scroll{overflow-x:auto}svg.chart{display:block;font-size:11px}svg .grid{stroke:#e0e0e0}
svg .band{fill:#f5f5f5}svg .label{font-size:12px;fill:#333}svg .tick,svg .val{fill:#666}
.legend>span{margin-right:14px}ul.notes li{color:#6d4c41}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var cards = document.querySelectorAll('article.identity');
  var broken = 0;
  document.querySelectorAll('img').forEach(function (img) {
    if (!img.complete || img.naturalWidth === 0) { broken += 1; }
  });
  document.body.setAttribute('data-identity-cards', String(cards.length));
  document.body.setAttribute('data-broken-images', String(broken));
  document.body.setAttribute('data-ready', '1');
});
"""


def render_html(run: RunData, max_cards: int = 1000, max_timeline_rows: int = 500) -> str:
    """The report page of ``run`` as one HTML string (no external reference)."""
    name = run.run_dir.resolve().name
    notes = ("<section id='notes'><h2>Missing or partial inputs</h2><ul class='notes'>"
             + "".join(f"<li>{_e(n)}</li>" for n in run.notes) + "</ul></section>") if run.notes else ""
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    body = "".join([_header(run), _thumbnails(run), _identities(run, max_cards), _timeline_svg(run, max_timeline_rows),
                    _latency_svg(run), notes])
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>apnet-edge run report: {_e(name)}</title><style>{CSS}</style></head>"
            f"<body data-identities='{len(run.identities)}'><header><h1>apnet-edge run report: {_e(name)}</h1>"
            f"<div class='muted'>{_e(str(run.run_dir))} · generated {_e(generated)} · cameras "
            f"{_e(', '.join(run.camera_ids) or '–')}</div>"
            "<nav><a href='#run'>run</a><a href='#cameras'>cameras</a><a href='#identities'>identities</a>"
            "<a href='#timeline'>timeline</a><a href='#latency'>latency</a></nav></header>"
            f"<main>{body}</main><script>{SCRIPT}</script></body></html>\n")


def build_report(run_dir: Union[str, Path], out: Union[str, Path, None] = None) -> Path:
    """Write the run's report page (default ``<run_dir>/report.html``) and return its path.

    Raises:
        ReportError: ``run_dir`` does not exist or its ``summary.json`` is missing or not valid JSON.
    """
    run = load_run(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_html(run), encoding="utf-8")
    os.replace(tmp, path)
    return path
