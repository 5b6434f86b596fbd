#!/usr/bin/env python
"""Memory soak of the run loop: ``run_pipeline`` on looped sources for a given wall time, resident memory sampled.

Every file / image-folder camera of the cams file gets ``loop: true`` (live cameras are left as they are), annotated
video is off unless ``--video`` says otherwise, and the detector / re-ID use ``--threads`` CPU threads. Every
``--interval`` seconds the process's resident memory (``VmRSS`` from ``/proc/self/status``), the frames processed so
far and the sizes of the run's bounded state (gallery, bound tracks, scheduler tracks, tracker tracks, latency
samples; see ``run_pipeline(progress=...)``) are appended to ``<out>/soak.json`` (rewritten after every sample, so
an interrupted soak keeps its data). At the end it prints the median RSS of the first and of the last minute, their
change in percent, the slope over the second half of the run (MB/min, after warm-up), and the frames processed.
With ``--trim`` each sample also calls glibc's ``malloc_trim(0)`` right after reading VmRSS and records the RSS
after it (``rss_trimmed_mb``): memory that was freed but kept by the allocator is returned, so a growth of
``rss_mb`` with a flat ``rss_trimmed_mb`` is allocator high-water, not live memory (not a leak).

    python scripts/soak.py --cameras configs/cams.example.yaml --minutes 10 --threads 1 --out runs/soak

Exit status 0; 1 with ``--fail-above PCT`` when the first-to-last-minute RSS change exceeds PCT percent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional


def rss_mb() -> float:
    """Resident memory of this process in MiB (``VmRSS``), 0.0 where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def malloc_trim() -> bool:
    """glibc ``malloc_trim(0)``: give freed heap pages back to the OS; False where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def _slope(points: list[tuple[float, float]]) -> Optional[float]:
    """Least-squares slope of (x, y) points, None with fewer than 3."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx > 0 else None


def _trend(samples: list[dict[str, Any]], key: str, window_s: float) -> dict[str, Any]:
    end = samples[-1]["t"]
    first = [s[key] for s in samples if s["t"] <= window_s]
    last = [s[key] for s in samples if s["t"] >= end - window_s]
    f, la = statistics.median(first), statistics.median(last)
    slope = _slope([(s["t"] / 60.0, s[key]) for s in samples if s["t"] >= end / 2])
    name = key[:-3]  # rss / rss_trimmed
    return {f"{name}_first_minute_mb": round(f, 1), f"{name}_last_minute_mb": round(la, 1),
            f"{name}_change_pct": round(100.0 * (la - f) / f, 2) if f else None,
            f"{name}_min_mb": round(min(s[key] for s in samples), 1),
            f"{name}_max_mb": round(max(s[key] for s in samples), 1),
            f"{name}_slope_second_half_mb_per_min": round(slope, 3) if slope is not None else None}


def summarise(samples: list[dict[str, Any]], window_s: float = 60.0) -> dict[str, Any]:
    """First-minute vs last-minute median RSS, % change, second-half slope (MB/min), frames, state first/last.

    The samples taken before the first frame was processed (models loaded, cameras opening) are left out.
    """
    samples = [s for s in samples if s["frames"] > 0]
    if not samples:
        return {}
    t0 = samples[0]["t"]
    samples = [{**s, "t": s["t"] - t0} for s in samples]
    out: dict[str, Any] = {"duration_s": round(samples[-1]["t"], 1), "samples": len(samples)}
    out.update(_trend(samples, "rss_mb", window_s))
    if all("rss_trimmed_mb" in s for s in samples):
        out.update(_trend(samples, "rss_trimmed_mb", window_s))
    out.update({"frames_processed": samples[-1]["frames"], "state_first": samples[0].get("state"),
                "state_last": samples[-1].get("state")})
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", required=True, help="cams YAML (e.g. configs/cams.example.yaml)")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall time to run (default 10)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for detector, re-ID and OpenCV (default 1)")
    ap.add_argument("--video", default="none", choices=("none", "per_camera", "mosaic", "both"),
                    help="annotated video (default none)")
    ap.add_argument("--out", default="runs/soak", help="output folder: the run's outputs and soak.json")
    ap.add_argument("--trim", action="store_true",
                    help="also record the RSS after malloc_trim(0) at each sample (allocator high-water vs live)")
    ap.add_argument("--fail-above", type=float, default=None, metavar="PCT",
                    help="exit 1 when the last-minute RSS exceeds the first minute's by more than PCT percent")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import cv2

    from apnet_edge.pipeline.run import build_detector, build_reid, run_pipeline
    from apnet_edge.pipeline.schema import load_cams

    cv2.setNumThreads(max(1, args.threads))
    cfg = load_cams(args.cameras)
    out = Path(args.out)
    cameras = tuple(dataclasses.replace(c, loop=True) if not c.is_live else c for c in cfg.cameras)
    cfg = dataclasses.replace(
        cfg, cameras=cameras, max_frames=0,
        detector=dataclasses.replace(cfg.detector, threads=args.threads),
        reid=dataclasses.replace(cfg.reid, threads=args.threads),
        outputs=dataclasses.replace(cfg.outputs, dir=str(out / "run"), video=args.video, log_every_s=0.0))
    detector, reid = build_detector(cfg.detector), build_reid(cfg.reid)

    stop = threading.Event()
    latest: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    out.mkdir(parents=True, exist_ok=True)
    report = out / "soak.json"
    meta = {"cameras": args.cameras, "minutes": args.minutes, "interval_s": args.interval, "threads": args.threads,
            "video": args.video, "trim": args.trim}

    def write(result: Optional[dict[str, Any]] = None) -> None:
        tmp = report.with_suffix(".tmp")
        tmp.write_text(json.dumps({**meta, "result": result, "samples": samples}, indent=1))
        tmp.replace(report)

    def on_progress(state: dict[str, Any]) -> None:
        latest.clear()
        latest.update(state)

    t0 = time.monotonic()

    def sampler() -> None:
        while True:
            state = dict(latest)
            frames = state.pop("frames", {})
            sample = {"t": round(time.monotonic() - t0, 2), "rss_mb": round(rss_mb(), 2),
                      "frames": sum(frames.values()), "frames_per_camera": frames, "state": state}
            if args.trim and malloc_trim():
                sample["rss_trimmed_mb"] = round(rss_mb(), 2)
            samples.append(sample)
            write()
            if stop.wait(args.interval):
                return

    th = threading.Thread(target=sampler, name="soak-sampler", daemon=True)
    th.start()
    timer = threading.Timer(args.minutes * 60.0, stop.set)
    timer.daemon = True
    timer.start()
    try:
        summary = run_pipeline(cfg, stop=stop, detector=detector, reid=reid, progress=on_progress,
                               progress_every_s=max(0.5, args.interval / 2))
    except KeyboardInterrupt:
        summary = None
    finally:
        stop.set()
        timer.cancel()
        th.join(timeout=10.0)
    if summary is not None:  # the exact final count (the last progress call may be a few seconds old)
        frames = {cid: c["frames_processed"] for cid, c in summary["cameras"].items()}
        samples.append({"t": round(time.monotonic() - t0, 2), "rss_mb": round(rss_mb(), 2),
                        "frames": sum(frames.values()), "frames_per_camera": frames,
                        "state": {k: v for k, v in summary["state"].items() if k != "frames"}, "final": True})
    result = summarise([s for s in samples if not s.get("final")])
    if summary is not None:
        result.update({"frames_processed": samples[-1]["frames"], "frames_per_camera": samples[-1]["frames_per_camera"],
                       "loops": {cid: c["loops"] for cid, c in summary["cameras"].items()},
                       "failures": summary["failures"], "identities_created": summary["identities_created"],
                       "gallery_size": summary["gallery_size"], "gallery_evicted": summary["gallery_evicted"],
                       "peak_rss_mb": summary["peak_rss_mb"], "state_after_run": summary["state"]})
    write(result)
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("state")}, indent=2))
    print(f"soak: {report}")
    change = result.get("rss_change_pct")
    if args.fail_above is not None and change is not None and change > args.fail_above:
        print(f"FAIL: RSS grew {change}% (> {args.fail_above}%)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
