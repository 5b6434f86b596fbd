"""Score one set of pipeline settings on seven multi-camera scenes cut from ``vtest.avi``, against labelled people.

One scene is one draw: where the cut lies and which tracks start where change which ids a run gets wrong, and a
setting that helps one scene can hurt another. Tune on the mean over all of them::

    python scripts/vtest_scenes.py --base configs/cams.example.yaml --out runs/scenes
    python scripts/vtest_scenes.py --base configs/cams.example.yaml --out runs/scenes --set reid.refresh_frames=6

Each scene takes the base file's detector, tracker, re-ID and matcher settings (``--set section.key=value`` changes
one, value in YAML; not the topology or outputs, which each scene sets) and replaces its cameras, all reading the
base's first camera's source:

- ``halves``, ``cut320``, ``cut448``, ``thirds``: side-by-side regions of interest cut at x = 384, 320, 448 and at
  thirds (people walk from one into the next), with edge transits of 0-5 s between neighbours, bonus 0.15, as in
  ``configs/cams.example.yaml``;
- ``time_halves``, ``time3``: the video's halves / thirds in time played side by side (people who come back);
- ``four``: halves x time halves (``configs/cams.four.yaml``'s cameras), no topology.

The scenes are scored with ``pipeline_report.py``'s labelled multi-camera IDF1 against
``configs/vtest.labels.yaml``, which labels the tracks of a run of ``configs/cams.full.yaml``: ``--reference`` names
that run's folder, made first when it is missing. Prints one line per scene (IDF1, cross-camera pair scores, and the
tracker switches the run detected, checked against the labels) and the mean IDF1; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from apnet_edge.errors import ApnetError, ConfigError  # noqa: E402
from apnet_edge.pipeline.schema import parse_cams  # noqa: E402

SCENES = ("halves", "cut320", "cut448", "thirds", "time_halves", "time3", "four")
CUTS = {"halves": (0.5,), "cut320": (320 / 768,), "cut448": (448 / 768,), "thirds": (1 / 3, 2 / 3)}
TRANSIT = {"min_s": 0.0, "max_s": 5.0, "bonus": 0.15}
SCENE_KEYS = ("matcher.topology", "outputs")  # what every scene sets itself: a --set there would be lost


def scene_cameras(scene: str, source: str, size: tuple[int, int], frames: int) -> tuple[list[dict[str, Any]],
                                                                                          list[dict[str, Any]]]:
    """(cameras, topology) of ``scene`` as raw cams-file entries, for a source of ``size`` (width, height) pixels and
    ``frames`` frames."""
    width, height = size
    if scene in CUTS:
        xs = [0, *(round(f * width) for f in CUTS[scene]), width]
        ids = ["left", "right"] if len(xs) == 3 else [f"part{i + 1}" for i in range(len(xs) - 1)]
        cams = [{"id": c, "source": source, "roi": [x0, 0, x1, height]} for c, x0, x1 in zip(ids, xs, xs[1:])]
        topo = []
        for a, b in zip(ids, ids[1:]):
            topo.append({"src": a, "dst": b, "exit": ["right"], "entry": ["left"], **TRANSIT})
            topo.append({"src": b, "dst": a, "exit": ["left"], "entry": ["right"], **TRANSIT})
        return cams, topo
    if scene in ("time_halves", "time3"):
        n = 2 if scene == "time_halves" else 3
        cuts = [round(i * frames / n) for i in range(n + 1)]
        return [{"id": f"t{i + 1}", "source": source, "start_frame": a, "end_frame": b}
                for i, (a, b) in enumerate(zip(cuts, cuts[1:]))], []
    if scene == "four":
        half, mid = width // 2, frames // 2
        return [{"id": f"{side}_{t}", "source": source, "roi": [x0, 0, x1, height], "start_frame": a, "end_frame": b}
                for t, (a, b) in (("a", (0, mid)), ("b", (mid, frames)))
                for side, (x0, x1) in (("left", (0, half)), ("right", (half, width)))], []
    raise ConfigError(f"unknown scene {scene!r}; choose from {', '.join(SCENES)}")


def apply_sets(raw: dict[str, Any], sets: list[str]) -> None:
    """``section.key=value`` (value parsed as YAML) into the raw cams dict."""
    for s in sets:
        key, sep, value = s.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {s!r}: expected section.key=value, e.g. reid.refresh_frames=6")
        if key in SCENE_KEYS or section in SCENE_KEYS:
            raise ConfigError(f"--set {s!r}: each scene sets {key} itself (cameras, topology and outputs are the "
                              f"scene's); change the detector, tracker, reid or matcher settings")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"--set {s!r}: {section!r} is not a section of the cams file")
        raw[section][name] = yaml.safe_load(value)


def source_facts(source: str) -> tuple[tuple[int, int], int]:
    """((width, height) in pixels, frame count) of a video file (ApnetError when it cannot be read)."""
    from apnet_edge.crops import read_frames, video_frame_count

    frames = video_frame_count(source)
    if frames <= 0:
        raise ConfigError(f"{source!r} does not say how many frames it has; the scenes need a video file")
    height, width = read_frames(source, [0])[0].shape[:2]
    return (width, height), frames


def run_quietly(cfg: Any, **models: Any) -> None:
    """``run_pipeline(cfg, **models)`` without its progress output (``models``: prebuilt ``detector``, ``reid``)."""
    from apnet_edge.pipeline.run import run_pipeline

    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            run_pipeline(cfg, **models)
    finally:
        logging.disable(logging.NOTSET)


def ensure_reference(reference: Path) -> None:
    """Run ``configs/cams.full.yaml`` into ``reference`` unless a finished run is there."""
    import dataclasses

    from apnet_edge.pipeline.schema import load_cams

    if (reference / "summary.json").is_file():
        return
    print(f"reference run (configs/cams.full.yaml) into {reference} ...", flush=True)
    cfg = load_cams(ROOT / "configs" / "cams.full.yaml")
    run_quietly(dataclasses.replace(cfg, outputs=dataclasses.replace(cfg.outputs, dir=str(reference), video="none",
                                                                     report=False, log_every_s=0.0)))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="cams file whose detector, tracker, reid and matcher are used")
    ap.add_argument("--out", required=True, help="folder for the runs (<out>/<scene>/)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="change one setting of the base for every scene (repeatable)")
    ap.add_argument("--scenes", default=",".join(SCENES), help=f"comma-separated subset of {', '.join(SCENES)}")
    ap.add_argument("--reference", help="run of configs/cams.full.yaml (default <out>/reference; made when missing)")
    ap.add_argument("--labels", default=str(ROOT / "configs" / "vtest.labels.yaml"), help="labels of that run")
    ap.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    args = ap.parse_args(argv)

    import pipeline_report

    base = Path(args.base)
    try:
        raw_base = yaml.safe_load(base.read_text())
        if not isinstance(raw_base, dict) or not raw_base.get("cameras"):
            raise ConfigError(f"{base}: not a cams file with cameras")
        apply_sets(raw_base, args.sets)
        scenes = [s.strip() for s in args.scenes.split(",") if s.strip()]
        for s in scenes:
            if s not in SCENES:
                raise ConfigError(f"unknown scene {s!r}; choose from {', '.join(SCENES)}")
        base_cfg = parse_cams(raw_base, base.resolve().parent)
        source = base_cfg.cameras[0].source
        size, frames = source_facts(source)
    except (ApnetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    reference = Path(args.reference) if args.reference else out / "reference"
    ensure_reference(reference)
    from apnet_edge.pipeline.run import build_detector, build_reid

    # every scene runs the base's detector and re-ID model: build them once
    models = {"detector": build_detector(base_cfg.detector), "reid": build_reid(base_cfg.reid)}
    rows = []
    for scene in scenes:
        raw = copy.deepcopy(raw_base)
        cams, topo = scene_cameras(scene, source, size, frames)
        raw["cameras"] = cams
        raw.setdefault("matcher", {})["topology"] = topo
        raw["outputs"] = {"dir": str(out / scene), "video": "none", "report": False, "log_every_s": 0.0}
        raw["max_frames"] = 0
        try:
            cfg = parse_cams(raw, base.resolve().parent)
        except ConfigError as exc:
            print(f"error: {base} as scene {scene}: {exc}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        run_quietly(cfg, **models)
        sc = pipeline_report.score_against(out / scene, reference, Path(args.labels))
        ident, pairs, sw = sc["identity"], sc["across_cameras"], sc["switches"]
        rows.append({"scene": scene, "idf1": ident["idf1"], "idp": ident["idp"], "idr": ident["idr"],
                     "pairs_across": pairs, "persons_in_several_cameras": sc["persons_in_several_cameras"],
                     "with_one_gid": sc["persons_in_several_cameras_with_one_gid"],
                     "switches": {k: sw[k] for k in ("detected", "real", "false", "unclear")},
                     "wall_s": round(time.perf_counter() - t0, 1)})
        print(f"{scene:12s} IDF1 {ident['idf1']:.3f} (IDP {ident['idp']:.3f} IDR {ident['idr']:.3f})  "
              f"cross-camera pairs P {pairs['precision']} R {pairs['recall']} F1 {pairs['f1']}  one id {rows[-1]['with_one_gid']} of "
              f"{rows[-1]['persons_in_several_cameras']}  switches {sw['real']} real / {sw['false']} false / "
              f"{sw['unclear']} unclear  ({rows[-1]['wall_s']} s)", flush=True)
    mean = round(sum(r["idf1"] for r in rows) / len(rows), 4) if rows else None
    total = {k: sum(r["switches"][k] for r in rows) for k in ("real", "false", "unclear")}
    print(f"mean IDF1 over {len(rows)} scenes: {mean}; tracker switches detected: {total['real']} real, "
          f"{total['false']} false, {total['unclear']} unclear")
    if args.json:
        Path(args.json).write_text(json.dumps({"base": str(base), "set": args.sets, "scenes": rows,
                                               "mean_idf1": mean}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
