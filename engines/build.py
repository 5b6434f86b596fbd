"""The thin GPU part of ``build-engine``: carry out a :class:`~engines.plan.BuildPlan` with TensorRT through
Polygraphy's loaders, then write the engine and its sidecar.

    ONNX --(our parser call, errors kept)--> (builder, network, parser)
         --CreateConfig(**plan.create_config_kwargs())--> config   (+ DLA core, + INT8 calibrator)
         --EngineBytesFromNetwork(..., save_timing_cache=...)--> serialized engine
         --atomic write--> <name>.engine + <name>.build.json

Polygraphy's ``NetworkFromOnnxPath`` is not used for parsing because it logs the parser's errors and raises a
bare "Could not parse ONNX correctly"; we parse with ``trt.OnnxParser`` ourselves (on a builder that uses
apnet-edge's TensorRT logger) so that a failure raises :class:`EngineBuildError` with the parser's own messages.
The bytes are written to a temporary file and renamed, so a failed or interrupted build never leaves a partial
engine behind (Polygraphy's ``SaveEngine`` writes in place).
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from apnet_edge.errors import ModelError, require
from apnet_edge.files import file_sha256
from apnet_edge.runners.tensorrt_runner import (
    EngineInfo,
    ensure_tensorrt,
    read_engine_info,
    take_trt_errors,
    trt_logger,
    write_engine_info,
)
from engines.plan import BuildEnv, BuildPlan

if TYPE_CHECKING:
    import tensorrt as trt

MAX_PARSER_OPSET = {8: 17}
"""Highest ONNX opset TensorRT's parser takes, per TensorRT major version (8.5/8.6: 17)."""


class EngineBuildError(ModelError):
    """TensorRT could not parse the ONNX or build the engine; ``errors`` holds TensorRT's own messages."""

    def __init__(self, message: str, errors: Optional[list[str]] = None) -> None:
        self.errors = list(errors or [])
        if self.errors:
            message += "\n" + "\n".join(f"  {e}" for e in self.errors)
        super().__init__(message)


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_engine` wrote. ``seconds``: build wall time; ``skipped``: an up-to-date engine existed."""

    engine_path: Path
    sidecar_path: Path
    info: EngineInfo
    seconds: float
    skipped: bool = False


def current_env(device: int = 0, cuda_binding: Optional[str] = None) -> BuildEnv:
    """This machine as a build target: TensorRT version, GPU name and compute capability, DLA cores.

    Raises MissingDependencyError without TensorRT (naming ``pip install 'apnet-edge[trt]'``), CudaError without a
    usable GPU.
    """
    version = ensure_tensorrt("building TensorRT engines")
    import tensorrt as trt_mod

    from apnet_edge.runners.cuda_shim import device_info

    dev = device_info(device, cuda_binding)
    try:
        num_dla = int(trt_mod.Builder(trt_logger()).num_DLA_cores)
    except (AttributeError, TypeError):
        num_dla = 0
    return BuildEnv(tensorrt_version=version, gpu_name=dev.name, compute_capability=dev.compute_capability,
                    num_dla_cores=num_dla, total_memory=dev.total_memory)


def parse_onnx(plan: BuildPlan) -> tuple[trt.Builder, trt.INetworkDefinition, trt.OnnxParser]:
    """Create the network with the plan's flags and parse the ONNX into it.

    Raises EngineBuildError carrying every parser error (node, operator, description), with a hint when the
    opset is newer than this TensorRT parses.
    """
    ensure_tensorrt("building TensorRT engines")
    import tensorrt as trt_mod

    logger = trt_logger()
    take_trt_errors()
    builder = trt_mod.Builder(logger)
    flags = 0
    for name in plan.network_flags():
        flags |= 1 << int(getattr(trt_mod.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    trt_mod.init_libnvinfer_plugins(logger, "")
    parser = trt_mod.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(plan.onnx.path))
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    if not ok or errors:
        errors = errors or take_trt_errors() or ["(the parser reported no details)"]
        hint = ""
        top = MAX_PARSER_OPSET.get(plan.env.major)
        if top is not None and plan.onnx.opset > top:
            hint = (f" The model uses opset {plan.onnx.opset}; TensorRT {plan.env.tensorrt_version} parses up to "
                    f"{top}: re-export with --opset {top}.")
        raise EngineBuildError(f"TensorRT {plan.env.tensorrt_version} cannot parse {str(plan.onnx.path)!r}.{hint} "
                               f"Parser errors:", errors)
    return builder, network, parser


def make_config_loader(plan: BuildPlan, calibrator: Any = None) -> Callable[[Any, Any], Any]:
    """A ``(builder, network) -> IBuilderConfig`` callable: Polygraphy's ``CreateConfig`` with the plan's kwargs
    (names turned into TensorRT objects), then the DLA core (CreateConfig always picks core 0)."""
    import tensorrt as trt_mod
    from polygraphy.backend.trt import CreateConfig, Profile

    kw = plan.create_config_kwargs()
    name, lo, opt, hi = kw.pop("profiles")[0]
    kw["profiles"] = [Profile().add(name, min=lo, opt=opt, max=hi)]
    if "memory_pool_limits" in kw:
        kw["memory_pool_limits"] = {trt_mod.MemoryPoolType.WORKSPACE: int(kw["memory_pool_limits"]["WORKSPACE"])}
    if calibrator is not None:
        kw["calibrator"] = calibrator
    create = CreateConfig(**kw)
    dla_core = plan.dla_core

    def load(builder: Any, network: Any) -> Any:
        config = create(builder, network)
        if dla_core is not None:
            config.DLA_core = int(dla_core)
        return config

    return load


def _atomic_write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_info(plan: BuildPlan, engine_sha256: str, seconds: float, calibration: Optional[dict[str, Any]] = None
              ) -> EngineInfo:
    """The sidecar record of a build of ``plan`` (pure)."""
    from apnet_edge import __version__

    p = plan.profile
    notes = list(plan.notes)
    if plan.onnx.external_data:
        notes.append(f"source ONNX keeps its weights in {', '.join(plan.onnx.external_data)} (not in its sha256)")
    return EngineInfo(
        tensorrt_version=plan.env.tensorrt_version, gpu_name=plan.env.gpu_name,
        compute_capability=plan.env.compute_capability, precision=plan.precision, task=plan.task,
        input_name=p.input_name, profile_min=p.min, profile_opt=p.opt, profile_max=p.max,
        source_onnx=str(plan.onnx.path), source_onnx_sha256=plan.onnx.sha256, build_command=plan.command_line(),
        card=plan.card.to_dict() if plan.card is not None else None, trtexec_command=plan.trtexec_command(),
        int8_mode=plan.int8_mode, strongly_typed=plan.strongly_typed, dla_core=plan.dla_core,
        gpu_fallback=plan.gpu_fallback, workspace_mib=plan.request.workspace_mib,
        timing_cache=str(plan.timing_cache) if plan.timing_cache is not None else None, calibration=calibration,
        engine_file=plan.engine_path.name, engine_sha256=engine_sha256,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), build_seconds=seconds,
        apnet_edge_version=__version__, notes=tuple(notes))


def up_to_date(plan: BuildPlan) -> Optional[EngineInfo]:
    """The existing engine's sidecar when it was built from the same ONNX with the same command, else None."""
    if not plan.engine_path.is_file():
        return None
    try:
        info = read_engine_info(plan.engine_path)
    except ModelError:
        return None
    if info is None or info.source_onnx_sha256 != plan.onnx.sha256 or info.build_command != plan.command_line():
        return None
    return info


def build_engine(plan: BuildPlan, force: bool = False, calib_crops: Any = None) -> BuildResult:
    """Build, save and describe the engine of ``plan``.

    Args:
        plan: from :func:`engines.plan.plan_build`.
        force: rebuild even when an engine built from the same ONNX with the same command exists (without it,
            such an engine is kept and reported as ``skipped``; a different one at the path is an error).
        calib_crops: implicit INT8 only: BGR uint8 crops to calibrate on instead of ``plan.request.calib_dir``.

    Raises:
        EngineBuildError: parse or build failure, with TensorRT's messages.
        ModelError: the engine path holds another engine and ``force`` is off.
        MissingDependencyError: TensorRT or Polygraphy missing (``pip install 'apnet-edge[trt]'``).
    """
    existing = None if force else up_to_date(plan)
    if existing is not None:
        return BuildResult(plan.engine_path, plan.sidecar_path, existing, 0.0, skipped=True)
    if plan.engine_path.exists() and not force:
        raise ModelError(f"{str(plan.engine_path)!r} exists and was built from another ONNX or with other settings; "
                         f"pass --force to replace it, or --name to build beside it")
    ensure_tensorrt("building TensorRT engines")
    require("polygraphy", "trt", "building TensorRT engines")
    from polygraphy.backend.trt import EngineBytesFromNetwork
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    t0 = time.perf_counter()
    calibrator, calibration = None, None
    fresh_cache: Optional[Path] = None
    if plan.int8_mode == "implicit":
        from engines.calibration import CropBatches, make_calibrator

        assert plan.calib_cache is not None and plan.card is not None
        source = calib_crops if calib_crops is not None else plan.request.calib_dir
        data = None
        if source is not None:
            data = CropBatches(source, plan.card, plan.profile.input_name, plan.profile.opt[0],
                               plan.request.calib_images)
        elif not plan.calib_cache.is_file():
            raise ModelError(f"calibration cache {str(plan.calib_cache)!r} does not exist; pass --calib DIR of "
                             f"person crops to create it")
        plan.calib_cache.parent.mkdir(parents=True, exist_ok=True)
        # crops given: calibrate on them into a fresh file (Polygraphy's calibrator would replay an existing cache
        # and never look at the crops); it replaces the old cache only once the engine is built
        if data is not None:
            fresh_cache = plan.calib_cache.with_name(f".{plan.calib_cache.name}.{os.getpid()}.tmp")
        calibrator = make_calibrator(data, fresh_cache or plan.calib_cache)
        calibration = {"cache": str(plan.calib_cache), "algorithm": "IInt8EntropyCalibrator2",
                       "folder": str(plan.request.calib_dir) if plan.request.calib_dir else None,
                       "images": data.num_images if data is not None else None,
                       "batch": plan.profile.opt[0]}
    if plan.timing_cache is not None:
        plan.timing_cache.parent.mkdir(parents=True, exist_ok=True)

    network = parse_onnx(plan)
    config = make_config_loader(plan, calibrator)
    take_trt_errors()
    engine_bytes: Optional[bytes] = None
    try:
        with G_LOGGER.verbosity(G_LOGGER.WARNING):
            engine_bytes = EngineBytesFromNetwork(
                network, config=config,
                save_timing_cache=str(plan.timing_cache) if plan.timing_cache is not None else None)()
    except PolygraphyException as exc:
        raise EngineBuildError(f"TensorRT {plan.env.tensorrt_version} could not build {str(plan.onnx.path)!r} "
                               f"({plan.precision}, profile {plan.profile.batch}): {str(exc).strip()}. "
                               f"TensorRT errors:", take_trt_errors() or ["(none logged; see the log above)"]
                               ) from None
    finally:
        if calibrator is not None and hasattr(calibrator, "free"):
            calibrator.free()
        if fresh_cache is not None and engine_bytes is None:  # the build failed: keep the old cache as it was
            fresh_cache.unlink(missing_ok=True)
    assert engine_bytes is not None
    if fresh_cache is not None and plan.calib_cache is not None and fresh_cache.is_file():
        os.replace(fresh_cache, plan.calib_cache)
    _atomic_write(plan.engine_path, engine_bytes)
    seconds = time.perf_counter() - t0
    info = make_info(plan, file_sha256(plan.engine_path), seconds, calibration)
    side = write_engine_info(plan.engine_path, info)
    return BuildResult(plan.engine_path, side, info, seconds)
