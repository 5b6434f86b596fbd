#!/usr/bin/env python
"""Report on one ``apnet-edge run`` output folder: identities, hand-offs, and global ids shared across cameras.

    python scripts/pipeline_report.py runs/latest [--json]

Reads ``events.jsonl`` (and ``summary.json`` and the ``<camera>.local.txt`` MOT files when present) and prints:

- per camera: frames processed, local tracks, tracks that got a global id, error;
- identities created (and provisional ids revised: ``identity_revised``, the track's last id counts; tracks matched
  anew after a tracker switch: ``track_switched``), hand-offs (per ``from -> to`` camera pair; ``a -> a`` is a
  re-entry into the same camera);
- global ids by the number of cameras they were seen in, and per camera pair the global ids seen in both;
- a geometric check for cameras cut from the SAME source (as in ``configs/cams.*.yaml``): tracks of two such cameras
  are the same person when their boxes, mapped back to source pixels through each camera's ``roi``, meet at the
  cut at the same source frame (y-IoU >= 0.6 and at most 8 px apart in x, in >= 2 frames) or, for two cameras with
  the same roi, overlap within 2 source frames (IoU >= 0.5: where two time halves meet). For those pairs it counts
  how many got the same global id, and it counts "conflicts": a global id on two boxes of the same source frame that
  are clearly not one person (a wrong merge). The geometry is skipped for cameras with ``loop``.
- with ``--reference REF_RUN``: every track is scored against pseudo ground truth, the tracks of a ONE-camera run on
  the uncut source (same detector and tracker; e.g. the source as one camera with no roi). Each track of the cut
  cameras is the reference track its boxes overlap most (IoU >= 0.5 with the reference box clipped to the camera's
  roi, in at least half its frames). Over pairs of tracks with a global id: across cameras, precision (pairs sharing
  a global id that are one person) and recall (pairs that are one person sharing a global id), the same within one
  camera (re-entries), and how many persons seen in >= 2 cameras kept ONE global id. The reference tracker's own id
  switches and fragments make this an estimate: use it to compare settings on the same footage.
- with ``--labels FILE`` too (e.g. ``configs/vtest.labels.yaml``): the reference's tracks labelled by eye with the
  person they follow, in segments (a track the reference tracker switched between two people is two segments); the
  scores then count persons instead of reference tracks, so a person who leaves and comes back (a new reference track)
  is one person, and frames outside every segment do not vote. Each segment carries the reference's box at its first
  frame: labels made on another reference run are refused. Also the multi-camera IDF1 of the global ids as written
  (:func:`mtmc_idf1`); ``--write-gt DIR`` writes that ground truth as MOTChallenge files (:func:`write_gt`) for
  TrackEval or ``python -m motmetrics.apps.eval_motchallenge DIR DIR/answers``.
- with ``--persons`` too: each such person's tracks and how each got its global id; with ``--sheets DIR``: a contact
  sheet per person (a row of crops per track) to check by eye whether the reference's "person" is one person (on
  ``vtest.avi`` the reference tracker switches between people in several long tracks).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional, Union

Box = tuple[float, float, float, float]


def read_events(run: Path) -> list[dict[str, Any]]:
    path = run / "events.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist; give the output folder of a run (outputs.dir)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_mot(path: Path) -> dict[int, dict[int, Box]]:
    """``<camera>.local.txt`` -> {track id: {source frame index (0-based): box x1,y1,x2,y2}}."""
    tracks: dict[int, dict[int, Box]] = defaultdict(dict)
    if not path.is_file():
        return tracks
    for line in path.read_text().splitlines():
        p = line.split(",")
        f, tid, x, y, w, h = int(p[0]) - 1, int(p[1]), float(p[2]), float(p[3]), float(p[4]), float(p[5])
        tracks[tid][f] = (x, y, x + w, y + h)
    return tracks


def _iou_1d(a0: float, a1: float, b0: float, b1: float) -> float:
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def _iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _x_gap(a: Box, b: Box) -> float:
    return max(0.0, max(a[0], b[0]) - min(a[2], b[2]))


def meet_at_cut(a: Box, b: Box) -> bool:
    """Two boxes of one source frame (source pixels) that are one person seen across a cut between two rois."""
    return _iou_1d(a[1], a[3], b[1], b[3]) >= 0.6 and _x_gap(a, b) <= 8.0


def clearly_apart(a: Box, b: Box) -> bool:
    """Two boxes of one source frame that cannot be one person (a global id on both is a wrong merge)."""
    return _x_gap(a, b) > 50.0 or _iou_1d(a[1], a[3], b[1], b[3]) < 0.3


def _shift(tracks: dict[int, dict[int, Box]], roi: Optional[list[int]]) -> dict[int, dict[int, Box]]:
    dx, dy = (roi[0], roi[1]) if roi else (0, 0)
    return {t: {f: (b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy) for f, b in fr.items()} for t, fr in tracks.items()}


def geometry(a: str, b: str, ta: dict[int, dict[int, Box]], tb: dict[int, dict[int, Box]], same_roi: bool,
             gid: dict[tuple[str, int], int]) -> dict[str, Any]:
    """Same-person track pairs of cameras ``a`` and ``b`` by geometry, and how many share a global id."""
    by_frame_b: dict[int, list[tuple[int, Box]]] = defaultdict(list)
    for t, fr in tb.items():
        for f, box in fr.items():
            by_frame_b[f].append((t, box))
    agree: Counter[tuple[int, int]] = Counter()
    conflicts: set[int] = set()
    for t, fr in ta.items():
        for f, box in fr.items():
            for df in ((-2, -1, 0, 1, 2) if same_roi else (0,)):
                for u, ubox in by_frame_b.get(f + df, ()):
                    if (_iou(box, ubox) >= 0.5) if same_roi else meet_at_cut(box, ubox):
                        agree[(t, u)] += 1
                    g = gid.get((a, t))
                    if df == 0 and g is not None and g == gid.get((b, u)) and clearly_apart(box, ubox):
                        conflicts.add(g)
    need = 1 if same_roi else 2
    pairs = sorted(p for p, n in agree.items() if n >= need)
    with_gid = [(t, u) for t, u in pairs if (a, t) in gid and (b, u) in gid]
    same = [(t, u) for t, u in with_gid if gid[(a, t)] == gid[(b, u)]]
    return {"cameras": [a, b], "kind": "time seam (same roi)" if same_roi else "spatial cut (same frames)",
            "same_person_pairs": len(pairs), "both_have_gid": len(with_gid), "same_gid": len(same),
            "same_gid_rate": round(len(same) / len(with_gid), 3) if with_gid else None,
            "different_gid_pairs": [[t, u, gid[(a, t)], gid[(b, u)]] for t, u in with_gid if (t, u) not in same],
            "conflict_gids": sorted(conflicts)}


def _clip(b: Box, roi: list[int]) -> Box:
    return (max(b[0], roi[0]), max(b[1], roi[1]), min(b[2], roi[2]), min(b[3], roi[3]))


def id_origins(events: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """(camera, track id) -> the global id it ended with and how it got it: ``{"gid", "how": "created" |
    "handoff" (with from_camera, similarity, gap_s, score, runner_up, distinct) | "revised" (with gid_from), "t"}``."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for e in events:
        if e["type"] == "identity_created":
            out[(e["camera"], e["track_id"])] = {"gid": e["gid"], "how": "created", "t": e.get("t")}
        elif e["type"] == "handoff":
            out[(e["to_camera"], e["track_id"])] = {"gid": e["gid"], "how": "handoff", "t": e.get("t"),
                                                    "from_camera": e.get("from_camera"),
                                                    "similarity": e.get("similarity"), "gap_s": e.get("gap_s"),
                                                    "score": e.get("score"), "runner_up": e.get("runner_up"),
                                                    "distinct": e.get("distinct")}
        elif e["type"] == "identity_revised":  # a provisional id moved: the track's final id counts
            out[(e["camera"], e["track_id"])] = {"gid": e["gid_to"], "how": "revised", "t": e.get("t"),
                                                 "gid_from": e.get("gid_from")}
    return out


def final_gids(events: list[dict[str, Any]]) -> dict[tuple[str, int], int]:
    """(camera, track id) -> the global id it ended with (created, handed off, or revised to)."""
    return {k: v["gid"] for k, v in id_origins(events).items()}


def _same_file(source: str) -> str:
    p = Path(source)
    return str(p.resolve()) if p.exists() else source


Label = tuple[int, int, int, str]  # reference track id, first and last source frame (0-based), person
Person = Union[int, str]  # a reference track id, or with --labels a labelled person's name


def read_labels(path: Path, ref_tracks: dict[int, dict[int, Box]]) -> list[Label]:
    """The by-eye labels of ``path`` (YAML: ``persons`` name -> description, ``segments`` [track, first frame, last
    frame, person, [x1, y1, x2, y2]]), checked against the reference run's tracks (a segment's box must be the
    reference track's box at its first frame, IoU >= 0.9)."""
    import yaml

    if not path.is_file():
        raise SystemExit(f"--labels {path}: no such file")
    try:
        doc = yaml.safe_load(path.read_text())
        persons, segs = doc["persons"], doc["segments"]
        labels = [(int(t), int(a), int(b), str(p)) for t, a, b, p, _ in segs]
        boxes = [tuple(float(v) for v in box) for *_, box in segs]
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise SystemExit(f"--labels {path}: expected 'persons' (name: description) and 'segments' ([reference track, "
                         f"first frame, last frame, person, [x1, y1, x2, y2]]), could not read it: {exc}") from None
    for (t, a, b, p), box in zip(labels, boxes):
        where = f"--labels {path}: segment [{t}, {a}, {b}, {p}]"
        if p not in persons:
            raise SystemExit(f"{where}: person {p!r} is not listed under 'persons' ({', '.join(sorted(persons))})")
        got = ref_tracks.get(t, {}).get(a)
        if got is None or _iou(got, box) < 0.9:
            raise SystemExit(f"{where}: the reference has {'no box' if got is None else [round(v) for v in got]} for "
                             f"track {t} at frame {a}, the labels {[round(v) for v in box]}: these labels belong to "
                             f"another reference run (re-run the reference with the config and versions the file "
                             f"names, or label this one)")
    return labels


VISIBLE = 0.5  # a labelled reference box is expected in a camera when at least this fraction of it lies in its roi


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


Truth = tuple[dict[tuple[str, int], list[tuple[Person, Box]]], dict[tuple[str, int], list[Box]],
              dict[tuple[str, int], list[tuple[int, Box]]], dict[str, tuple[int, int]]]


def labelled_truth(run: Path, info: dict[str, dict[str, Any]], ref_tracks: dict[int, dict[int, Box]],
                   who: dict[tuple[int, int], Person], size: tuple[float, float]) -> Truth:
    """Per (camera, source frame), in source pixels: the labelled reference boxes clipped to the camera's roi when at
    least :data:`VISIBLE` of the box is inside (person, box); the other reference boxes in view (unlabelled, or mostly
    outside), which count neither way; the boxes the run wrote with their global ids (``<camera>.global.txt``, as
    written live: a revision does not rewrite earlier lines). And per camera the source frames it read [start, end)."""
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    gt: dict[tuple[str, int], list[tuple[Person, Box]]] = defaultdict(list)
    ignore: dict[tuple[str, int], list[Box]] = defaultdict(list)
    pred: dict[tuple[str, int], list[tuple[int, Box]]] = defaultdict(list)
    spans: dict[str, tuple[int, int]] = {}
    for c, ci in info.items():
        roi = ci.get("roi") or [0, 0, int(size[0]) + 1, int(size[1]) + 1]
        for g, fr in _shift(read_mot(run / f"{c}.global.txt"), ci.get("roi")).items():
            for f, b in fr.items():
                pred[(c, f)].append((g, b))
        start = ci.get("start_frame") or 0
        n = summary.get("cameras", {}).get(c, {}).get("frames_processed")
        ends = [e for e in (ci.get("end_frame") or None, None if n is None else start + n) if e]  # 0: to the end
        end = min(ends) if ends else 1 + max((f for cam, f in pred if cam == c), default=start - 1)
        spans[c] = (start, end)
        for t, fr in ref_tracks.items():
            for f, b in fr.items():
                cb = _clip(b, roi)
                if not start <= f < end or _area(cb) <= 0:
                    continue
                if (t, f) in who and _area(cb) >= VISIBLE * _area(b):
                    gt[(c, f)].append((who[(t, f)], cb))
                else:
                    ignore[(c, f)].append(cb)
    return gt, ignore, pred, spans


def mtmc_idf1(truth: Truth) -> dict[str, Any]:
    """Multi-camera IDF1 (Ristani et al., 2016) of :func:`labelled_truth`'s written boxes against its labelled persons:
    every (camera, source frame) is one time step, a written box is a person's when IoU >= 0.5, and IDTP is the best
    one-to-one mapping of persons to global ids (Hungarian) counted over all cameras, so a person keeps credit only
    for the frames under the one global id mapped to them. Written boxes on an unlabelled or mostly hidden reference
    box (the sign, the post the detector takes for a person) count neither way."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    gt, ignore, pred, _ = truth
    together: Counter[tuple[Person, int]] = Counter()  # (person, global id) -> time steps matched
    n_pred = 0
    for key, boxes in pred.items():
        for g, b in boxes:
            hits = {p for p, gb in gt.get(key, ()) if _iou(b, gb) >= 0.5}
            if not hits and any(_iou(b, ib) >= 0.5 for ib in ignore.get(key, ())):
                continue
            n_pred += 1
            for p in hits:
                together[(p, g)] += 1
    n_gt = sum(len(v) for v in gt.values())
    persons = sorted({p for p, _ in together}, key=str)
    gids = sorted({g for _, g in together})
    idtp = 0
    if together:
        m = np.array([[together.get((p, g), 0) for g in gids] for p in persons], np.int64)
        rows, cols = linear_sum_assignment(-m)
        idtp = int(m[rows, cols].sum())

    def ratio(a: int, b: int) -> Optional[float]:
        return round(a / b, 3) if b else None

    return {"idf1": ratio(2 * idtp, n_gt + n_pred), "idp": ratio(idtp, n_pred), "idr": ratio(idtp, n_gt),
            "idtp": idtp, "gt_boxes": n_gt, "written_boxes": n_pred}


def _run_and_reference(run: Path, reference: Path, labels: Optional[Path]) -> tuple[
        list[dict[str, Any]], dict[str, dict[str, Any]], dict[int, dict[int, Box]], dict[tuple[int, int], Person],
        tuple[float, float]]:
    """The run's events and cameras, the reference's tracks, who each reference (track, frame) is (the track id, or
    with ``labels`` the labelled person; unlabelled frames absent) and the source size (width, height) in pixels."""
    events = read_events(run)
    started = next((e for e in events if e["type"] == "run_started"), {"cameras": []})
    info = {c["id"]: c for c in started["cameras"]}
    ref_events = read_events(reference)
    ref_cams = next((e for e in ref_events if e["type"] == "run_started"), {"cameras": []})["cameras"]
    if len(ref_cams) != 1 or ref_cams[0].get("roi") or ref_cams[0].get("loop"):
        raise SystemExit(f"{reference}: the reference must be a run of ONE camera on the whole source (no roi, no loop)")
    if any(c.get("loop") for c in info.values()):
        raise SystemExit(f"{run}: looped cameras cannot be scored (frame indices are not source frames)")
    if any(_same_file(c["source"]) != _same_file(ref_cams[0]["source"]) for c in info.values()):
        raise SystemExit(f"{run}: every camera must read the reference's source {ref_cams[0]['source']!r}")
    ref_tracks = read_mot(reference / f"{ref_cams[0]['id']}.local.txt")
    who: dict[tuple[int, int], Person] = {(t, f): t for t, fr in ref_tracks.items() for f in fr}  # (track, frame)
    if labels is not None:
        who = {(t, f): p for t, a, b, p in read_labels(labels, ref_tracks) for f in ref_tracks[t] if a <= f <= b}
    width = max((b[2] for fr in ref_tracks.values() for b in fr.values()), default=0.0)
    height = max((b[3] for fr in ref_tracks.values() for b in fr.values()), default=0.0)
    return events, info, ref_tracks, who, (width, height)


def score_against(run: Path, reference: Path, labels: Optional[Path] = None) -> dict[str, Any]:
    """Pairwise identity precision/recall of ``run`` against the tracks of a one-camera ``reference`` run, or with
    ``labels`` (:func:`read_labels`) against the persons those tracks were labelled with by eye."""
    events, info, ref_tracks, who, (width, height) = _run_and_reference(run, reference, labels)
    by_frame: dict[int, list[tuple[int, Box]]] = defaultdict(list)
    for t, fr in ref_tracks.items():
        for f, box in fr.items():
            by_frame[f].append((t, box))
    person: dict[tuple[str, int], Person] = {}
    boxes: dict[tuple[str, int], dict[int, Box]] = {}
    n_tracks = 0
    for c, ci in info.items():
        roi = ci.get("roi") or [0, 0, int(width) + 1, int(height) + 1]
        for t, fr in _shift(read_mot(run / f"{c}.local.txt"), ci.get("roi")).items():
            n_tracks += 1
            boxes[(c, t)] = fr
            votes: Counter[Person] = Counter()
            for f, box in fr.items():
                best = max(((_iou(box, _clip(rb, roi)), u) for u, rb in by_frame.get(f, ())), default=(0.0, -1))
                if best[0] >= 0.5 and (best[1], f) in who:
                    votes[who[(best[1], f)]] += 1
            if votes and votes.most_common(1)[0][1] >= 0.5 * len(fr):
                person[(c, t)] = votes.most_common(1)[0][0]
    gid = {k: g for k, g in final_gids(events).items() if k in person}
    counts = {"across": Counter(), "within": Counter()}
    for a, b in itertools.combinations(sorted(gid), 2):
        same_p, same_g = person[a] == person[b], gid[a] == gid[b]
        kind = "across" if a[0] != b[0] else "within"
        counts[kind]["tp" if same_p and same_g else "fp" if same_g else "fn" if same_p else "tn"] += 1

    def prf(n: Counter) -> dict[str, Any]:
        p = n["tp"] / (n["tp"] + n["fp"]) if n["tp"] + n["fp"] else None
        r = n["tp"] / (n["tp"] + n["fn"]) if n["tp"] + n["fn"] else None
        f1 = 2 * p * r / (p + r) if p and r else 0.0 if p is not None and r is not None else None
        return {"same_person_same_gid": n["tp"], "other_person_same_gid": n["fp"], "same_person_other_gid": n["fn"],
                "precision": None if p is None else round(p, 3), "recall": None if r is None else round(r, 3),
                "f1": None if f1 is None else round(f1, 3)}

    cams_of: dict[Person, set[str]] = defaultdict(set)
    gids_of: dict[Person, set[int]] = defaultdict(set)
    for k, g in gid.items():
        cams_of[person[k]].add(k[0])
        gids_of[person[k]].add(g)
    multi = [p for p, cs in cams_of.items() if len(cs) >= 2]
    truth = None if labels is None else labelled_truth(run, info, ref_tracks, who, (width, height))
    return {"reference": str(reference), "labels": None if labels is None else str(labels), "tracks": n_tracks,
            "tracks_matched_to_reference": len(person),
            "tracks_with_gid_scored": len(gid), "across_cameras": prf(counts["across"]),
            "within_camera": prf(counts["within"]), "persons_in_several_cameras": len(multi),
            "persons_in_several_cameras_with_one_gid": sum(1 for p in multi if len(gids_of[p]) == 1),
            "persons": person_breakdown(sorted(multi, key=str), person, boxes, gid, events),
            "identity": None if truth is None else mtmc_idf1(truth),
            "switches": None if truth is None else check_switches(events, boxes, truth)}


VOTE_BEFORE_SWITCH = (15, 40)  # source frames before a track_switched event whose labelled person is "before"
VOTE_FROM_SWITCH = 20  # source frames from the event on whose labelled person is "after"


def check_switches(events: list[dict[str, Any]], boxes: dict[tuple[str, int], dict[int, Box]], truth: Truth
                   ) -> dict[str, Any]:
    """Each ``track_switched`` event against the labelled persons: the person the track's ``boxes`` ((camera, track)
    -> source frame -> box in source pixels) follow 15-40 source frames before the event (before the held crops) and
    in the 20 frames from it. ``real``: two different persons; ``false``: the same one; ``unclear``: either side has
    no labelled box (the track ends, an unlabelled person)."""
    gt = truth[0]
    counts: Counter[str] = Counter()
    rows = []

    def follows(c: str, track: dict[int, Box], frames: range) -> Optional[Person]:
        votes: Counter[Person] = Counter()
        for g in frames:
            if g in track:
                iou, p = max(((_iou(track[g], b), q) for q, b in gt.get((c, g), ())), default=(0.0, None),
                             key=lambda x: x[0])
                if iou >= 0.5 and p is not None:
                    votes[p] += 1
        return votes.most_common(1)[0][0] if votes else None

    for e in events:
        if e["type"] != "track_switched":
            continue
        c, t, f = e["camera"], e["track_id"], e["frame"]
        track = boxes.get((c, t), {})
        before = follows(c, track, range(f - VOTE_BEFORE_SWITCH[1], f - VOTE_BEFORE_SWITCH[0]))
        after = follows(c, track, range(f, f + VOTE_FROM_SWITCH))
        verdict = "unclear" if before is None or after is None else "real" if before != after else "false"
        counts[verdict] += 1
        rows.append({"camera": c, "track_id": t, "frame": f, "before": before, "after": after, "verdict": verdict})
    return {"detected": len(rows), **{k: counts.get(k, 0) for k in ("real", "false", "unclear")}, "events": rows}


def write_gt(run: Path, reference: Path, labels: Path, out: Path) -> list[Path]:
    """The labelled persons as MOTChallenge ground truth for each camera of ``run``, to score the run's
    ``<camera>.global.txt`` with standard tools: ``out/<camera>/gt/gt.txt`` (``frame,id,x,y,w,h,conf,class,
    visibility``; frame numbers and camera pixels as in the run's own files; a person is the same id in every camera,
    listed in ``out/persons.json``), ``out/<camera>/seqinfo.ini`` (seqLength = the camera's last source frame + 1,
    so its frame numbers fit) and ``out/answers/<camera>.txt`` (a copy of the run's global-id file). Reference boxes
    that count neither way (unlabelled, or mostly outside the roi) are rows with conf 0 and class 8 (distractor:
    TrackEval drops written boxes on them; py-motmetrics drops them). Returns the gt files."""
    import shutil

    import cv2

    _, info, ref_tracks, who, size = _run_and_reference(run, reference, labels)
    gt, ignore, _, spans = labelled_truth(run, info, ref_tracks, who, size)
    ids = {p: i + 1 for i, p in enumerate(sorted({p for rows in gt.values() for p, _ in rows}, key=str))}
    cap = cv2.VideoCapture(next(iter(info.values()))["source"])  # every camera reads the reference's source
    fps = round(cap.get(cv2.CAP_PROP_FPS) or 0.0, 3)  # 0 when unknown (an image folder): TrackEval reads seqLength
    cap.release()
    (out / "answers").mkdir(parents=True, exist_ok=True)
    (out / "persons.json").write_text(json.dumps({str(i): str(p) for p, i in ids.items()}, indent=1) + "\n")
    written = []
    for c, ci in info.items():
        dx, dy = (ci["roi"][0], ci["roi"][1]) if ci.get("roi") else (0, 0)
        w, h = (ci["roi"][2] - dx, ci["roi"][3] - dy) if ci.get("roi") else (int(size[0]) + 1, int(size[1]) + 1)
        rows = []
        for f in range(*spans[c]):
            for flag, items in ((1, [(ids[p], b) for p, b in gt.get((c, f), ())]),
                                (0, [(-1, b) for b in ignore.get((c, f), ())])):
                for i, b in items:
                    rows.append(f"{f + 1},{i},{b[0] - dx:.1f},{b[1] - dy:.1f},{b[2] - b[0]:.1f},{b[3] - b[1]:.1f},"
                                f"{flag},{1 if flag else 8},1\n")
        (out / c / "gt").mkdir(parents=True, exist_ok=True)
        (out / c / "gt" / "gt.txt").write_text("".join(rows))
        (out / c / "seqinfo.ini").write_text(f"[Sequence]\nname={c}\nimDir=img1\nframeRate={fps}\n"
                                             f"seqLength={spans[c][1]}\nimWidth={w}\nimHeight={h}\nimExt=.jpg\n")
        if (run / f"{c}.global.txt").is_file():
            shutil.copyfile(run / f"{c}.global.txt", out / "answers" / f"{c}.txt")
        written.append(out / c / "gt" / "gt.txt")
    return written


def person_breakdown(persons: list[Person], person: dict[tuple[str, int], Person], boxes: dict[tuple[str, int], dict[int, Box]],
                     gid: dict[tuple[str, int], int], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per reference person: each of its tracks (source frames, first/last box in source pixels, final global id)
    and how the track got its id (:func:`id_origins`), in time order: where a person seen by several cameras was
    split, and why."""
    how = {k: {n: v for n, v in o.items() if n != "gid"} for k, o in id_origins(events).items()}
    out = []
    for p in persons:
        keys = sorted((k for k, u in person.items() if u == p), key=lambda k: min(boxes[k]))
        tracks = []
        for k in keys:
            fr = boxes[k]
            frames = sorted(fr)
            f0, f1 = frames[0], frames[-1]
            picks = sorted({frames[round(i * (len(frames) - 1) / (SHEET_CROPS - 1))] for i in range(SHEET_CROPS)})
            tracks.append({"camera": k[0], "track_id": k[1], "frames": [f0, f1],
                           "first_box": [round(v, 1) for v in fr[f0]], "last_box": [round(v, 1) for v in fr[f1]],
                           "gid": gid.get(k), **how.get(k, {"how": "no id"}),
                           "samples": [[f, *(round(v, 1) for v in fr[f])] for f in picks]})
        out.append({"person": p, "gids": sorted({t["gid"] for t in tracks if t["gid"] is not None}), "tracks": tracks})
    return out


SHEET_CROPS = 8  # crops per track on a person's contact sheet (evenly spaced over the track's frames)
TILE_W, TILE_H, LABEL_W = 48, 112, 120  # pixels


def write_sheets(persons: list[dict[str, Any]], source: str, out: Path) -> list[Path]:
    """One PNG per person of :func:`person_breakdown` (``--sheets``): a row per track, time order, with its camera,
    track id, global id and frames, then :data:`SHEET_CROPS` crops of it cut from ``source`` (the video or image
    folder every camera reads; boxes are source pixels). To check by eye whether the tracks the reference run calls
    one person are one person: a tracker's identity switch in the reference run shows as a change of clothes along
    a row or between rows. ``person_<id>_split.png`` when the person got several global ids. Returns the files."""
    import cv2
    import numpy as np

    need: dict[int, list[tuple[int, int, list[float]]]] = defaultdict(list)  # frame -> (person idx, row, box)
    for i, p in enumerate(persons):
        for r, t in enumerate(p["tracks"]):
            for f, *box in t["samples"]:
                need[int(f)].append((i, r, box))
    tiles: dict[tuple[int, int], list[Any]] = defaultdict(list)  # (person idx, row) -> crops, in frame order
    src = Path(source)
    if src.is_dir():
        files = sorted(q for q in src.iterdir() if q.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
        frames = ((f, cv2.imread(str(files[f]))) for f in sorted(need) if f < len(files))
    else:
        cap = cv2.VideoCapture(str(src))
        if not cap.isOpened():
            raise SystemExit(f"--sheets: cannot open the cameras' source {source!r}; run from the folder the run was "
                             "started in, or where that path resolves")

        def _read() -> Any:
            f, last = 0, max(need, default=-1)
            while f <= last:
                ok, img = cap.read()
                if not ok:
                    return
                yield f, img
                f += 1
        frames = _read()
    for f, img in frames:
        if img is None:
            continue
        for i, r, box in need.get(f, ()):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            crop = img[max(0, y1):max(0, y2), max(0, x1):max(0, x2)]
            if crop.size:
                tiles[(i, r)].append(cv2.resize(crop, (TILE_W, TILE_H)))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, p in enumerate(persons):
        rows = []
        for r, t in enumerate(p["tracks"]):
            label = np.full((TILE_H, LABEL_W, 3), 255, np.uint8)
            for j, text in enumerate((f"{t['camera']} track {t['track_id']}", f"gid {t['gid']}",
                                      f"frames {t['frames'][0]}-{t['frames'][1]}")):
                cv2.putText(label, text, (3, 22 + 28 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
            row = list(tiles.get((i, r), []))  # frames are read in increasing order
            row += [np.zeros((TILE_H, TILE_W, 3), np.uint8)] * (SHEET_CROPS - len(row))
            rows.append(np.concatenate([label, *row], axis=1))
        pid = f"{p['person']:03d}" if isinstance(p["person"], int) else p["person"]
        name = f"person_{pid}{'_split' if len(p['gids']) > 1 else ''}.png"
        cv2.imwrite(str(out / name), np.concatenate(rows, axis=0))
        written.append(out / name)
    return written


def report(run: Path) -> dict[str, Any]:
    events = read_events(run)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    started = next((e for e in events if e["type"] == "run_started"), {"cameras": []})
    cams = [c["id"] for c in started["cameras"]]
    kinds = Counter(e["type"] for e in events)
    gid = final_gids(events)
    handoffs = Counter(f"{e['from_camera']} -> {e['to_camera']}" for e in events if e["type"] == "handoff")
    cross = sum(n for k, n in handoffs.items() if k.split(" -> ")[0] != k.split(" -> ")[1])
    cams_of: dict[int, set[str]] = defaultdict(set)
    for (c, _t), g in gid.items():
        cams_of[g].add(c)
    span = Counter(len(v) for v in cams_of.values())
    pair_gids = {f"{a}+{b}": sum(1 for v in cams_of.values() if {a, b} <= v) for a, b in itertools.combinations(cams, 2)}
    per_cam: dict[str, Any] = {}
    for c in cams:
        s = summary.get("cameras", {}).get(c, {})
        per_cam[c] = {"frames_processed": s.get("frames_processed"), "error": s.get("error"),
                      "tracks": sum(1 for e in events if e["type"] == "track_started" and e["camera"] == c),
                      "tracks_with_gid": sum(1 for k in gid if k[0] == c)}
    out: dict[str, Any] = {
        "run": str(run), "cameras": per_cam,
        "identities_created": kinds.get("identity_created", 0),
        "identities_revised": kinds.get("identity_revised", 0),
        "tracks_switched": kinds.get("track_switched", 0),
        "identities_merged": sum(1 for e in events if e["type"] == "identity_revised" and e.get("merged")),
        "handoffs": kinds.get("handoff", 0), "handoffs_cross_camera": cross,
        "handoffs_distinct": sum(1 for e in events if e["type"] == "handoff" and e.get("distinct")),
        "handoffs_by_pair": dict(sorted(handoffs.items())),
        "global_ids": len(cams_of),
        "global_ids_by_camera_count": {str(k): span[k] for k in sorted(span)},
        "global_ids_in_several_cameras": sum(n for k, n in span.items() if k >= 2),
        "global_ids_per_camera_pair": pair_gids,
        "failures": summary.get("failures", []),
    }
    info = {c["id"]: c for c in started["cameras"]}
    if any(c.get("loop") for c in info.values()):
        out["geometry"] = "skipped: looped cameras (frame indices are not source frames)"
        return out
    mot = {c: _shift(read_mot(run / f"{c}.local.txt"), info[c].get("roi")) for c in cams}
    geo = []
    for a, b in itertools.combinations(cams, 2):
        if info[a]["source"] != info[b]["source"] or not mot[a] or not mot[b]:
            continue
        fa = {f for fr in mot[a].values() for f in fr}
        fb = {f for fr in mot[b].values() for f in fr}
        same_roi = info[a].get("roi") == info[b].get("roi")
        if same_roi and not any(f + d in fb for f in fa for d in (-2, -1, 1, 2)):
            continue
        if not same_roi and not fa & fb:
            continue
        geo.append(geometry(a, b, mot[a], mot[b], same_roi, gid))
    out["geometry"] = geo
    return out


def print_report(r: dict[str, Any]) -> None:
    print(f"run: {r['run']}")
    for c, s in r["cameras"].items():
        err = f"  ERROR: {s['error']}" if s["error"] else ""
        print(f"  camera {c}: {s['frames_processed']} frames, {s['tracks']} tracks, "
              f"{s['tracks_with_gid']} with a global id{err}")
    print(f"identities created: {r['identities_created']}"
          + (f" (revised ids: {r['identities_revised']}, {r['identities_merged']} merged away)"
             if r.get("identities_revised") else ""))
    if r.get("tracks_switched"):
        print(f"tracks the tracker moved to another person (track_switched, matched anew): {r['tracks_switched']}")
    print(f"hand-offs: {r['handoffs']} ({r['handoffs_cross_camera']} across cameras, the rest re-entries"
          + (f"; {r['handoffs_distinct']} as distinctive match{'es' if r['handoffs_distinct'] > 1 else ''} under the "
             f"threshold" if r.get("handoffs_distinct") else "") + ")")
    for k, n in r["handoffs_by_pair"].items():
        print(f"  {k}: {n}")
    by = ", ".join(f"{n} in {k} camera{'s' if k != '1' else ''}" for k, n in r["global_ids_by_camera_count"].items())
    print(f"global ids: {r['global_ids']} ({by})")
    for k, n in r["global_ids_per_camera_pair"].items():
        print(f"  seen in both {k}: {n}")
    geo = r.get("geometry")
    if isinstance(geo, str):
        print(f"geometry: {geo}")
    for g in geo or []:
        if isinstance(g, str):
            break
        a, b = g["cameras"]
        print(f"geometry {a} / {b} ({g['kind']}): {g['same_person_pairs']} same-person track pairs, "
              f"{g['both_have_gid']} with a global id on both sides, {g['same_gid']} with the SAME global id"
              + (f" ({100 * g['same_gid_rate']:.0f} %)" if g["same_gid_rate"] is not None else "")
              + f"; wrong merges (one id on two people at once): {len(g['conflict_gids'])}")
    if r["failures"]:
        print("failures: " + "; ".join(r["failures"]))
    sc = r.get("scored")
    if sc:
        how = f" labelled by {sc['labels']}" if sc.get("labels") else ""
        print(f"scored against {sc['reference']}{how}: {sc['tracks_matched_to_reference']} of {sc['tracks']} tracks "
              f"matched a {'labelled person' if how else 'reference track'}, {sc['tracks_with_gid_scored']} of them "
              f"with a global id")
        for kind in ("across_cameras", "within_camera"):
            k = sc[kind]
            print(f"  track pairs {kind.replace('_', ' ')}: precision {k['precision']}, recall {k['recall']}, "
                  f"F1 {k['f1']} (same person + same id {k['same_person_same_gid']}, other person + same id "
                  f"{k['other_person_same_gid']}, same person + other id {k['same_person_other_gid']})")
        print(f"  persons seen in >= 2 cameras: {sc['persons_in_several_cameras']}, "
              f"{sc['persons_in_several_cameras_with_one_gid']} of them with ONE global id")
        i = sc.get("identity")
        if i:
            print(f"  multi-camera IDF1 {i['idf1']} (IDP {i['idp']}, IDR {i['idr']}: {i['idtp']} of {i['gt_boxes']} "
                  f"labelled boxes under their person's global id, {i['written_boxes']} written boxes)")
        w = sc.get("switches")
        if w and w["detected"]:
            print(f"  tracker switches detected: {w['detected']}, by the labels {w['real']} real, {w['false']} false "
                  f"(the same person before and after), {w['unclear']} unclear")


def print_persons(sc: dict[str, Any]) -> None:
    """The per-person breakdown of :func:`person_breakdown` (``--persons``)."""
    for p in sc["persons"]:
        kind = "reference track" if isinstance(p["person"], int) else "label"
        print(f"person {p['person']} ({kind}): global ids {p['gids']}" + ("" if len(p["gids"]) == 1 else "  SPLIT"))
        for t in p["tracks"]:
            b0, b1 = t["first_box"], t["last_box"]
            got = {"created": "created it", "no id": "no global id", "revised": f"revised from {t.get('gid_from')}"}.get(
                t["how"], f"handoff from {t.get('from_camera')}, similarity {t.get('similarity')}, gap {t.get('gap_s')} s"
                + (f" (score {t['score']}, runner-up {t['runner_up']})" if t.get("runner_up") is not None else "")
                + (" (distinctive match)" if t.get("distinct") else ""))
            print(f"  {t['camera']:>10} track {t['track_id']:<4} frames {t['frames'][0]}-{t['frames'][1]}  "
                  f"x {b0[0]:.0f}-{b0[2]:.0f} -> {b1[0]:.0f}-{b1[2]:.0f}  height {b1[3] - b1[1]:.0f}  "
                  f"gid {t['gid']}: {got}")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="identities, hand-offs and cross-camera global ids of a run folder")
    ap.add_argument("run", help="output folder of `apnet-edge run` (outputs.dir)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    ap.add_argument("--reference", metavar="REF_RUN",
                    help="score identities against the tracks of a one-camera run on the uncut source")
    ap.add_argument("--persons", action="store_true",
                    help="with --reference: list every person seen in >= 2 cameras with its tracks (frames, first "
                    "and last box in source pixels, global id) and how each got its id: where people are split, why")
    ap.add_argument("--sheets", metavar="DIR",
                    help="with --reference: write a contact sheet per person seen in >= 2 cameras to DIR (a row of "
                    "crops per track, with its global id) to check the reference's persons and the run's ids by eye")
    ap.add_argument("--labels", metavar="FILE",
                    help="with --reference: the reference's tracks labelled by eye with the person they follow (e.g. "
                    "configs/vtest.labels.yaml for configs/cams.full.yaml); score against those persons")
    ap.add_argument("--write-gt", metavar="DIR",
                    help="with --labels: write the labelled persons as MOTChallenge ground truth per camera to DIR "
                    "(DIR/<camera>/gt/gt.txt, seqinfo.ini, and the run's global-id files as DIR/answers/<camera>.txt) "
                    "for TrackEval or py-motmetrics")
    args = ap.parse_args(argv)
    if (args.persons or args.sheets or args.labels) and not args.reference:
        ap.error("--persons, --sheets and --labels need --reference REF_RUN (persons are the reference run's tracks)")
    if args.write_gt and not args.labels:
        ap.error("--write-gt needs --reference REF_RUN and --labels FILE (the ground truth is the labelled persons)")
    r = report(Path(args.run))
    if args.reference:
        r["scored"] = score_against(Path(args.run), Path(args.reference), Path(args.labels) if args.labels else None)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print_report(r)
        if args.persons:
            print_persons(r["scored"])
    if args.write_gt:
        files = write_gt(Path(args.run), Path(args.reference), Path(args.labels), Path(args.write_gt))
        print(f"ground truth for {len(files)} cameras in {args.write_gt}", file=sys.stderr if args.json else sys.stdout)
    if args.sheets:
        source = next(e for e in read_events(Path(args.run)) if e["type"] == "run_started")["cameras"][0]["source"]
        files = write_sheets(r["scored"]["persons"], source, Path(args.sheets))
        print(f"{len(files)} contact sheets in {args.sheets}", file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
