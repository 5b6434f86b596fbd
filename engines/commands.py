"""``apnet-edge build-engine``: the argparse pair the CLI wires in (``add_arguments(parser)``, ``run(args)``).

Importing this module imports nothing heavy (no TensorRT, Polygraphy, CUDA, onnx); ``run`` imports them when
it needs them. Library errors (:class:`apnet_edge.errors.ApnetError`) propagate to the CLI, which turns them into
a one-line message and exit code 2; ``run`` returns 1 when the accuracy gate fails, else 0.

    apnet-edge build-engine --onnx apnet.onnx --fp16 --batch 1,8,32 --out engines/ --verify crops/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Optional

HELP = "build a TensorRT engine (FP32/FP16/INT8, dynamic batch, DLA) from an ONNX model, with sidecar and gate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``build-engine`` options to ``parser``."""
    parser.add_argument("--onnx", required=True, help="the ONNX model: apnet-edge export / quantize output, or a YOLO "
                                                      "detector ONNX")
    prec = parser.add_mutually_exclusive_group()
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="FP32 engine (TF32 off)")
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16",
                      help="FP16 engine (default, except a Q/DQ ONNX -> int8; TensorRT 11: needs an FP16 ONNX)")
    prec.add_argument("--int8", dest="precision", action="store_const", const="int8",
                      help="INT8: a Q/DQ ONNX builds explicitly quantized; an FP32 ONNX is calibrated on --calib "
                           "crops (TensorRT 8.x-10.x)")
    parser.add_argument("--batch", help="optimisation profile MIN,OPT,MAX crops per call (default 1,8,32 for re-ID, "
                                        "1,4,8 for detectors; one number = fixed batch)")
    parser.add_argument("--input-size", help="HEIGHT,WIDTH for an ONNX with dynamic image size (e.g. 640,640)")
    parser.add_argument("--task", choices=["reid", "detector"],
                        help="default: reid when the ONNX carries an apnet-edge model card, else detector")
    parser.add_argument("--card", help="model-card JSON for a re-ID ONNX without apnet-edge metadata (default: "
                                        "<model>.card.json beside it)")
    parser.add_argument("--workspace", type=int, metavar="MIB", help="builder workspace limit in MiB (default: "
                                                                      "TensorRT's; on Jetson e.g. 1024)")
    parser.add_argument("--timing-cache", help="timing cache file to reuse and update (default: "
                                               "<out>/timing_<gpu>_<cc>_<trt>.cache)")
    parser.add_argument("--no-timing-cache", action="store_true", help="build without a timing cache")
    parser.add_argument("--dla-core", type=int, metavar="N", help="build for DLA core N (Jetson AGX Orin / Orin NX; "
                                                                   "fixed batch; FP16 or INT8)")
    parser.add_argument("--no-gpu-fallback", action="store_true",
                        help="with --dla-core: fail instead of running DLA-unsupported layers on the GPU")
    parser.add_argument("--calib", help="folder of person crops for implicit INT8 calibration of an FP32 ONNX")
    parser.add_argument("--calib-cache", help="INT8 calibration cache to write and reuse (default: "
                                              "<out>/<model>_<sha>_int8.calib)")
    parser.add_argument("--calib-images", type=int, default=500, help="crops used for calibration (default 500)")
    parser.add_argument("--out", default="engines", help="output folder (default engines/)")
    parser.add_argument("--name", help="model name in the engine file name (default: the ONNX file's stem)")
    parser.add_argument("--force", action="store_true", help="rebuild even if an up-to-date engine exists")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the trtexec line, build nothing")
    parser.add_argument("--assume-device", metavar="TRT,GPU,CC[,DLA]",
                        help="plan for another device, e.g. '10.3.0,Orin,8.7,2' (implies --dry-run; no GPU needed)")
    parser.add_argument("--cuda-binding", choices=["cuda-python", "pycuda", "polygraphy"],
                        help="CUDA binding for device queries (default: the first installed)")
    gate = parser.add_argument_group("accuracy gate")
    gate.add_argument("--verify", metavar="DIR", help="after building, compare the engine with the FP32 ONNX on the "
                                                      "crops in DIR (ONNX Runtime reference)")
    gate.add_argument("--reference", help="FP32 reference ONNX for --verify (default: --onnx; give the FP32 model "
                                          "when --onnx is a Q/DQ file)")
    gate.add_argument("--labelled", action="store_true", help="DIR is a Market-1501-named folder: also compare mAP")
    gate.add_argument("--min-cosine", type=float, help="mean cosine threshold (default: fp16 0.999, int8 0.98)")
    gate.add_argument("--max-map-drop", type=float, default=0.01, help="largest allowed mAP drop, a fraction "
                                                                       "(default 0.01)")
    gate.add_argument("--json", dest="json_out", help="write the build result (and gate result) to this JSON file")


def parse_assume_device(text: str) -> Any:
    """``"10.3.0,Orin,8.7,2"`` -> BuildEnv (TensorRT version, GPU name, compute capability, DLA cores)."""
    from apnet_edge.errors import ConfigError
    from engines.plan import BuildEnv

    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (3, 4) or not all(parts[:3]):
        raise ConfigError(f"--assume-device takes TRT_VERSION,GPU_NAME,COMPUTE_CAPABILITY[,DLA_CORES], e.g. "
                          f"'10.3.0,Orin,8.7,2'; got {text!r}")
    try:
        dla = int(parts[3]) if len(parts) == 4 else 0
    except ValueError:
        raise ConfigError(f"--assume-device: DLA cores must be an integer; got {parts[3]!r}") from None
    return BuildEnv(tensorrt_version=parts[0], gpu_name=parts[1], compute_capability=parts[2], num_dla_cores=dla)


def request_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~engines.plan.BuildRequest` of parsed ``build-engine`` arguments."""
    from engines.plan import DEFAULT_CALIB_IMAGES, BuildRequest, parse_batch, parse_input_size

    def path(v: Optional[str]) -> Optional[Path]:
        return Path(v) if v else None

    return BuildRequest(
        onnx=Path(args.onnx), precision=args.precision, batch=parse_batch(args.batch),
        input_size=parse_input_size(args.input_size), workspace_mib=args.workspace,
        timing_cache=path(args.timing_cache), use_timing_cache=not args.no_timing_cache, dla_core=args.dla_core,
        gpu_fallback=not args.no_gpu_fallback, calib_dir=path(args.calib), calib_cache=path(args.calib_cache),
        calib_images=args.calib_images if args.calib_images is not None else DEFAULT_CALIB_IMAGES,
        out_dir=Path(args.out), name=args.name, task=args.task, card_file=path(args.card))


def run(args: argparse.Namespace, out: Callable[[str], None] = lambda s: print(s, flush=True)) -> int:
    """Plan, print the plan and the equivalent trtexec line, build, write the sidecar, optionally run the gate.

    Returns 0 on success (or a passed gate), 1 when the gate fails. Raises ApnetError subclasses on bad input,
    missing TensorRT (naming ``pip install 'apnet-edge[trt]'``) or a failed build (with TensorRT's errors).
    """
    from engines.onnx_info import inspect_onnx
    from engines.plan import plan_build

    request = request_from_args(args)
    facts = inspect_onnx(request.onnx, request.card_file)
    if args.assume_device:
        env, dry = parse_assume_device(args.assume_device), True
    else:
        from engines.build import current_env

        env, dry = current_env(cuda_binding=args.cuda_binding), bool(args.dry_run)
    plan = plan_build(request, facts, env)
    out(plan.summary())
    out("trtexec equivalent:\n  " + plan.trtexec_command())
    report: dict[str, Any] = {"plan": {"engine": str(plan.engine_path), "precision": plan.precision,
                                       "profile": [list(plan.profile.min), list(plan.profile.opt),
                                                   list(plan.profile.max)],
                                       "builder_flags": plan.builder_flags(), "network_flags": plan.network_flags(),
                                       "build_command": plan.command_line(),
                                       "trtexec_command": plan.trtexec_command()}}
    if dry:
        out("dry run: nothing built")
        _write_json(args, report)
        return 0

    from engines.build import build_engine

    result = build_engine(plan, force=args.force)
    if result.skipped:
        out(f"up to date: {result.engine_path} (built {result.info.built_at} from the same ONNX; --force rebuilds)")
    else:
        out(f"built {result.engine_path} in {result.seconds:.1f} s; sidecar {result.sidecar_path}")
    report["build"] = result.info.to_dict()
    code = 0
    if args.verify:
        from engines.verify import verify_engine

        reference = args.reference or args.onnx
        if facts.has_qdq and not args.reference:
            out("note: --verify compares with the Q/DQ ONNX itself (INT8 on ONNX Runtime); pass --reference "
                "<fp32.onnx> to gate against FP32")
        gate = verify_engine(result.engine_path, reference, args.verify, labelled=args.labelled,
                             min_mean_cosine=args.min_cosine, max_map_drop=args.max_map_drop)
        out(gate.summary())
        report["gate"] = gate.to_dict()
        code = 0 if gate.passed else 1
    _write_json(args, report)
    return code


def _write_json(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if getattr(args, "json_out", None):
        Path(args.json_out).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
