"""``apnet-edge run --cameras cams.yaml``: argparse pair for the CLI (no heavy import at module level)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``run`` options to ``parser``."""
    parser.add_argument("--cameras", required=True, metavar="CAMS_YAML",
                        help="cameras, detector, tracker, re-ID, matcher and outputs (see configs/cams.example.yaml)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (overrides outputs.dir)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="stop each camera after N frames (overrides max_frames)")
    parser.add_argument("--video", choices=("none", "per_camera", "mosaic", "both"), default=None,
                        help="annotated video output (overrides outputs.video)")
    parser.add_argument("--realtime", action="store_true",
                        help="pace file and folder sources to their own frame rate, like live cameras")
    parser.add_argument("--check", action="store_true", help="validate the cams file and the models, then exit")


def run(args: argparse.Namespace) -> int:
    """Validate, run to the end (Ctrl-C stops cleanly), print the summary. 0 = every camera ok, 1 = some failed."""
    import dataclasses
    import json
    import logging
    import signal
    import threading

    from apnet_edge.pipeline.schema import load_cams

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_cams(args.cameras)
    outputs = cfg.outputs
    if args.out is not None:
        outputs = dataclasses.replace(outputs, dir=args.out)
    if args.video is not None:
        outputs = dataclasses.replace(outputs, video=args.video)
    cameras = cfg.cameras
    if args.realtime:
        cameras = tuple(dataclasses.replace(c, realtime=True) for c in cameras)
    cfg = dataclasses.replace(cfg, outputs=outputs, cameras=cameras,
                              max_frames=cfg.max_frames if args.max_frames is None else args.max_frames)
    from apnet_edge.pipeline.run import build_detector, build_reid, run_pipeline

    detector = build_detector(cfg.detector)
    reid = build_reid(cfg.reid)
    if args.check:
        print(f"ok: {len(cfg.cameras)} cameras, detector {cfg.detector.model}, re-ID {cfg.reid.model}")
        return 0
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        summary = run_pipeline(cfg, stop=stop, detector=detector, reid=reid)
    finally:
        signal.signal(signal.SIGINT, previous)
    print(json.dumps({k: summary[k] for k in ("wall_s", "cameras", "identities_created", "failures")}, indent=2))
    print(f"summary: {outputs.dir}/summary.json")
    if summary.get("report"):
        print(f"report: {summary['report']}")
    elif summary.get("report_error"):
        print(f"report: not written ({summary['report_error']}); try `apnet-edge report {outputs.dir}`")
    return 1 if summary["failures"] else 0
