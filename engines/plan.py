"""What to build, decided without a GPU: ``plan_build(request, onnx_facts, env) -> BuildPlan``.

Everything that depends only on the command line, the ONNX file and the target's TensorRT/GPU lives here as pure
functions, so it is tested on any machine: precision and INT8 mode per TensorRT version, the builder flags and
Polygraphy ``CreateConfig`` keyword arguments they map to, the optimisation profile, DLA rules, file names, the
``apnet-edge build-engine`` command that rebuilds the engine, and the equivalent ``trtexec`` line.
:mod:`engines.build` then does the thin GPU part.

TensorRT versions and what they allow (from NVIDIA's migration guides):

* 8.5/8.6 (JetPack 5; 8.6 also in JetPack 6.0): weakly typed networks with the EXPLICIT_BATCH flag; FP16/INT8
  builder flags; implicit INT8 calibration (IInt8EntropyCalibrator2 + calibration cache); Q/DQ ONNX with the
  INT8 flag.
* 10.x (JetPack 6.1+): EXPLICIT_BATCH is implied; STRONGLY_TYPED networks (Q/DQ models build as written);
  FP16 flag still there (weak typing deprecated in 10.12); implicit calibration deprecated since 10.1.
* 11.x: every network is strongly typed; the FP16/INT8 flags and the INT8 calibrator are gone. FP16 needs an
  FP16 ONNX (ModelOpt AutoCast); INT8 needs a Q/DQ ONNX (``apnet-edge quantize --target tensorrt``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from apnet_edge.card import ModelCard
from apnet_edge.errors import ModelError
from apnet_edge.runners.tensorrt_runner import SIDECAR_SUFFIX, gpu_key, parse_version, short_version

PathLike = Union[str, Path]
Batch = tuple[int, int, int]

PRECISIONS = ("fp32", "fp16", "int8")
TASKS = ("reid", "detector")
DEFAULT_REID_BATCH: Batch = (1, 8, 32)
"""Re-ID profile (min, opt, max crops per call): opt = the pipeline's crops per frame (``reid.budget_per_frame``),
max = the largest re-ID call (``reid.max_batch``)."""
DEFAULT_DETECTOR_BATCH: Batch = (1, 4, 8)
"""Detector profile (frames per call; one per camera): tuned for 4 cameras, up to 8."""
DEFAULT_CALIB_IMAGES = 500
DEFAULT_OUT = Path("engines")
AUTOCAST_COMMAND = "python -m modelopt.onnx.autocast --onnx_path {onnx} --output_path {fp16}"
QUANTIZE_COMMAND = "apnet-edge quantize --onnx {onnx} --target tensorrt --calib <folder of person crops>"


# ------------------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class BuildEnv:
    """The target: TensorRT version, GPU (name as CUDA reports it, compute capability ``"8.7"``), DLA cores."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    num_dla_cores: int = 0
    total_memory: int = 0

    @property
    def version(self) -> tuple[int, ...]:
        return parse_version(self.tensorrt_version)

    @property
    def major(self) -> int:
        return self.version[0] if self.version else 0

    @property
    def has_strongly_typed(self) -> bool:
        """``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists (TensorRT 9.1+; always on in 11)."""
        return self.version[:2] >= (9, 1)

    @property
    def has_weak_typing(self) -> bool:
        """FP16/INT8 builder flags exist (removed in TensorRT 11)."""
        return self.major < 11

    @property
    def has_implicit_int8(self) -> bool:
        """The INT8 calibrator exists (deprecated in 10.1, removed in 11)."""
        return self.major < 11

    @property
    def needs_explicit_batch_flag(self) -> bool:
        """TensorRT 8.x needs EXPLICIT_BATCH to parse ONNX; 10 implies it (the flag is deprecated)."""
        return self.major < 10

    @property
    def has_dla(self) -> bool:
        """DLA can be targeted: any version before 11, then again from 11.4.1 (Jetson AGX Orin, JetPack 7.2.2+)."""
        return self.major < 11 or self.version[:3] >= (11, 4, 1)


@dataclass(frozen=True)
class OnnxFacts:
    """What :func:`engines.onnx_info.inspect_onnx` reads from an ONNX file (dims: int, or None when dynamic)."""

    path: Path
    sha256: str
    input_name: str
    input_shape: tuple[Optional[int], ...]
    input_dtype: str = "float32"
    outputs: tuple[str, ...] = ("output",)
    has_qdq: bool = False
    has_fp16: bool = False
    card: Optional[ModelCard] = None
    opset: int = 0
    external_data: tuple[str, ...] = ()
    card_source: str = ""  # "metadata", "sidecar '<path>'", or "" (no card)


@dataclass(frozen=True)
class BuildRequest:
    """What the user asked for (the ``build-engine`` flags). None means "decide from the model and target".

    ``workspace_mib`` in MiB; ``timing_cache``: a path, None for the default path beside the engine, or disabled
    with ``use_timing_cache=False``.
    """

    onnx: Path
    precision: Optional[str] = None
    batch: Optional[Batch] = None
    input_size: Optional[tuple[int, int]] = None
    workspace_mib: Optional[int] = None
    timing_cache: Optional[Path] = None
    use_timing_cache: bool = True
    dla_core: Optional[int] = None
    gpu_fallback: bool = True
    calib_dir: Optional[Path] = None
    calib_cache: Optional[Path] = None
    calib_images: int = DEFAULT_CALIB_IMAGES
    out_dir: Path = DEFAULT_OUT
    name: Optional[str] = None
    task: Optional[str] = None
    card_file: Optional[Path] = None


@dataclass(frozen=True)
class Profile:
    """One optimisation profile for the single image input: full shapes, e.g. ``(1, 3, 256, 128)``."""

    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def batch(self) -> Batch:
        return (self.min[0], self.opt[0], self.max[0])

    @property
    def fixed(self) -> bool:
        return self.min == self.max

    @staticmethod
    def dims(shape: Sequence[int]) -> str:
        """``(1, 3, 256, 128)`` -> ``"1x3x256x128"`` (trtexec's shape syntax)."""
        return "x".join(str(int(d)) for d in shape)


# ------------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class BuildPlan:
    """Everything :func:`engines.build.build_engine` needs; see :func:`plan_build`."""

    request: BuildRequest
    env: BuildEnv
    onnx: OnnxFacts
    task: str
    card: Optional[ModelCard]
    precision: str
    int8_mode: Optional[str]  # None, "explicit" (Q/DQ ONNX) or "implicit" (calibrator)
    strongly_typed: bool
    fp16_flag: bool
    int8_flag: bool
    tf32: bool
    profile: Profile
    engine_path: Path
    timing_cache: Optional[Path]
    calib_cache: Optional[Path]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def sidecar_path(self) -> Path:
        return self.engine_path.with_name(self.engine_path.stem + SIDECAR_SUFFIX)

    @property
    def dla_core(self) -> Optional[int]:
        return self.request.dla_core

    @property
    def gpu_fallback(self) -> bool:
        return self.request.dla_core is not None and self.request.gpu_fallback

    @property
    def workspace_bytes(self) -> Optional[int]:
        w = self.request.workspace_mib
        return None if w is None else int(w) * (1 << 20)

    def network_flags(self) -> list[str]:
        """Names of ``trt.NetworkDefinitionCreationFlag`` members to set."""
        flags = []
        if self.env.needs_explicit_batch_flag:
            flags.append("EXPLICIT_BATCH")
        if self.strongly_typed and self.env.has_strongly_typed:
            flags.append("STRONGLY_TYPED")
        return flags

    def builder_flags(self) -> list[str]:
        """Names of ``trt.BuilderFlag`` members the build sets (what CreateConfig turns the kwargs into)."""
        flags = []
        if self.tf32:
            flags.append("TF32")
        if self.fp16_flag:
            flags.append("FP16")
        if self.int8_flag:
            flags.append("INT8")
        if self.dla_core is not None:
            if self.env.major < 11:  # as Polygraphy's CreateConfig(use_dla=True) sets them
                flags.append("PREFER_PRECISION_CONSTRAINTS")
            if self.gpu_fallback:
                flags.append("GPU_FALLBACK")
            elif self.env.major < 11:
                flags.append("DIRECT_IO")
        return flags

    def create_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for Polygraphy's ``CreateConfig``, with TensorRT objects as names:
        ``profiles`` as ``[(input, min, opt, max)]``, ``memory_pool_limits`` as ``{"WORKSPACE": bytes}``.
        The calibrator (implicit INT8) and ``DLA_core`` (CreateConfig always picks core 0) are added by the build."""
        kw: dict[str, Any] = {
            "tf32": self.tf32, "fp16": self.fp16_flag, "int8": self.int8_flag,
            "profiles": [(self.profile.input_name, self.profile.min, self.profile.opt, self.profile.max)],
        }
        if self.workspace_bytes is not None:
            kw["memory_pool_limits"] = {"WORKSPACE": self.workspace_bytes}
        if self.timing_cache is not None:
            kw["load_timing_cache"] = str(self.timing_cache)
        if self.dla_core is not None:
            kw["use_dla"] = True
            kw["allow_gpu_fallback"] = self.gpu_fallback
        return kw

    def command_line(self) -> str:
        """The ``apnet-edge build-engine`` command that builds this engine again (stored in the sidecar)."""
        r = self.request
        args = ["apnet-edge", "build-engine", "--onnx", str(r.onnx), f"--{self.precision}",
                "--batch", ",".join(str(b) for b in self.profile.batch)]
        if r.input_size is not None:
            args += ["--input-size", f"{r.input_size[0]},{r.input_size[1]}"]
        if r.task is not None:
            args += ["--task", r.task]
        if r.card_file is not None:
            args += ["--card", str(r.card_file)]
        if r.workspace_mib is not None:
            args += ["--workspace", str(r.workspace_mib)]
        if not r.use_timing_cache:
            args.append("--no-timing-cache")
        elif r.timing_cache is not None:
            args += ["--timing-cache", str(r.timing_cache)]
        if r.dla_core is not None:
            args += ["--dla-core", str(r.dla_core)]
            if not r.gpu_fallback:
                args.append("--no-gpu-fallback")
        if self.int8_mode == "implicit":
            if r.calib_dir is not None:
                args += ["--calib", str(r.calib_dir), "--calib-images", str(r.calib_images)]
            if r.calib_cache is not None:
                args += ["--calib-cache", str(r.calib_cache)]
        args += ["--out", str(r.out_dir)]
        if r.name is not None:
            args += ["--name", r.name]
        return shlex.join(args)

    def trtexec_command(self) -> str:
        """The equivalent ``trtexec`` command line for this TensorRT version."""
        p, env = self.profile, self.env
        args = ["trtexec", f"--onnx={self.onnx.path}", f"--saveEngine={self.engine_path}"]
        if any(d is None for d in self.onnx.input_shape):
            name = p.input_name
            args += [f"--minShapes={name}:{Profile.dims(p.min)}", f"--optShapes={name}:{Profile.dims(p.opt)}",
                     f"--maxShapes={name}:{Profile.dims(p.max)}"]
        if self.strongly_typed and env.has_strongly_typed and env.major < 11:
            args.append("--stronglyTyped")  # always on (and the flag a no-op) in TensorRT 11
        if self.fp16_flag:
            args.append("--fp16")
        if self.int8_flag:
            args.append("--int8")
        if self.int8_mode == "implicit" and self.calib_cache is not None:
            args.append(f"--calib={self.calib_cache}")  # trtexec reads the cache; it cannot calibrate on images
        if not self.tf32 and env.major < 11:
            args.append("--noTF32")
        if self.request.workspace_mib is not None:
            args.append(f"--memPoolSize=workspace:{int(self.request.workspace_mib)}")  # MiB
        if self.timing_cache is not None:
            args.append(f"--timingCacheFile={self.timing_cache}")
        if self.dla_core is not None:
            args.append(f"--useDLACore={self.dla_core}")
            if self.gpu_fallback:
                args.append("--allowGPUFallback")
        return shlex.join(args)

    def summary(self) -> str:
        """A few human-readable lines (for the CLI)."""
        env, p = self.env, self.profile
        mode = {"explicit": "explicit Q/DQ", "implicit": "implicit calibration"}.get(self.int8_mode or "", "")
        lines = [
            f"model      {self.onnx.path}  (task {self.task}, sha256 {self.onnx.sha256[:12]})",
            f"target     TensorRT {env.tensorrt_version} on {env.gpu_name} (compute capability "
            f"{env.compute_capability})" + (f", DLA core {self.dla_core}" if self.dla_core is not None else ""),
            f"precision  {self.precision}" + (f" ({mode})" if mode else "")
            + ("; strongly typed" if self.strongly_typed else "")
            + (f"; builder flags {', '.join(self.builder_flags())}" if self.builder_flags() else ""),
            f"profile    {p.input_name}: min {Profile.dims(p.min)}  opt {Profile.dims(p.opt)}  "
            f"max {Profile.dims(p.max)}",
            f"engine     {self.engine_path}",
            f"sidecar    {self.sidecar_path}",
        ]
        if self.timing_cache is not None:
            lines.append(f"timing     {self.timing_cache}")
        if self.calib_cache is not None:
            lines.append(f"calib      {self.calib_cache}"
                         + (f" (from {self.request.calib_dir})" if self.request.calib_dir else " (reused)"))
        lines += [f"note       {n}" for n in self.notes]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ helpers


def parse_batch(text: Union[str, Sequence[int], None]) -> Optional[Batch]:
    """``"1,8,32"`` -> ``(1, 8, 32)``; a single ``"8"`` -> ``(8, 8, 8)`` (a fixed batch). ModelError unless
    ``1 <= min <= opt <= max``."""
    if text is None:
        return None
    if isinstance(text, str):
        parts = [t for t in re.split(r"[,\s]+", text.strip()) if t]
        try:
            vals = [int(t) for t in parts]
        except ValueError:
            raise ModelError(f"--batch takes MIN,OPT,MAX integers (e.g. 1,8,32) or one fixed batch; got "
                             f"{text!r}") from None
    else:
        vals = [int(v) for v in text]
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ModelError(f"--batch takes MIN,OPT,MAX (three integers, e.g. 1,8,32) or one fixed batch; got {text!r}")
    lo, opt, hi = vals
    if not 1 <= lo <= opt <= hi:
        raise ModelError(f"--batch must satisfy 1 <= min <= opt <= max; got {lo},{opt},{hi}")
    return (lo, opt, hi)


def parse_input_size(text: Union[str, Sequence[int], None]) -> Optional[tuple[int, int]]:
    """``"640,640"`` or ``"640x640"`` -> ``(640, 640)`` (height, width in pixels)."""
    if text is None:
        return None
    parts = re.split(r"[,x\s]+", text.strip()) if isinstance(text, str) else [str(v) for v in text]
    try:
        h, w = (int(p) for p in parts if p)
    except ValueError:
        raise ModelError(f"--input-size takes HEIGHT,WIDTH in pixels (e.g. 640,640); got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ModelError(f"--input-size must be positive; got {text!r}")
    return (h, w)


def slug(text: str) -> str:
    """File-name-safe lowercase token: ``"NVIDIA GeForce RTX 4090"`` -> ``"geforce-rtx-4090"``."""
    t = re.sub(r"\(.*?\)", "", str(text)).lower()
    t = re.sub(r"^nvidia[\s_-]+", "", t.strip())
    t = re.sub(r"[^a-z0-9.]+", "-", t).strip("-.")
    return t or "gpu"


def safe_name(text: str) -> str:
    """Model name for file names: letters, digits, ``._-`` only."""
    t = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return t or "model"


def engine_file_name(name: str, precision: str, batch: Batch, env: BuildEnv, dla_core: Optional[int] = None) -> str:
    """``apnet_c_fp16_b1-8-32_geforce-rtx-4090_sm89_trt10.8.0.engine``: model, precision (and DLA core), profile
    batch, GPU, compute capability, TensorRT version."""
    dla = f"_dla{dla_core}" if dla_core is not None else ""
    cc = env.compute_capability.replace(".", "")
    return (f"{safe_name(name)}_{precision}{dla}_b{batch[0]}-{batch[1]}-{batch[2]}_{slug(env.gpu_name)}_sm{cc}"
            f"_trt{short_version(env.tensorrt_version)}.engine")


def default_timing_cache(out_dir: Path, env: BuildEnv) -> Path:
    """One timing cache per GPU model and TensorRT version in the output folder, shared by all builds there."""
    cc = env.compute_capability.replace(".", "")
    return out_dir / f"timing_{slug(env.gpu_name)}_sm{cc}_trt{short_version(env.tensorrt_version)}.cache"


def default_calib_cache(out_dir: Path, name: str, sha256: str) -> Path:
    """The INT8 calibration cache of one source ONNX (keyed by its hash: a new model gets a new cache)."""
    return out_dir / f"{safe_name(name)}_{sha256[:8]}_int8.calib"


def _layout(shape: Sequence[Optional[int]], card: Optional[ModelCard]) -> str:
    if len(shape) == 4 and shape[1] == 3:
        return "NCHW"
    if len(shape) == 4 and shape[3] == 3:
        return "NHWC"
    return card.layout if card is not None else "NCHW"


def choose_profile(onnx: OnnxFacts, task: str, batch: Optional[Batch], card: Optional[ModelCard],
                   input_size: Optional[tuple[int, int]] = None, fixed_batch: bool = False) -> Profile:
    """The optimisation profile for the ONNX's image input.

    Batch: the ONNX's own when static (a different ``batch`` is an error), else ``batch`` or the task's default
    (:data:`DEFAULT_REID_BATCH` / :data:`DEFAULT_DETECTOR_BATCH`); ``fixed_batch`` (DLA) pins min = max = opt.
    Height/width: the ONNX's when static, else ``input_size``, else the card's ``input_size``.
    """
    shape = list(onnx.input_shape)
    where = f"ONNX model {str(onnx.path)!r}"
    if len(shape) != 4:
        raise ModelError(f"{where}: input {onnx.input_name!r} has rank {len(shape)}; expected an image batch "
                         f"(N, 3, H, W) or (N, H, W, 3)")
    layout = _layout(shape, card)
    hw_axes = (2, 3) if layout == "NCHW" else (1, 2)
    c_axis = 1 if layout == "NCHW" else 3
    for axis, want in zip(hw_axes, input_size or (None, None)):
        if shape[axis] is not None and want is not None and shape[axis] != want:
            raise ModelError(f"{where} has a fixed input size {shape[hw_axes[0]]}x{shape[hw_axes[1]]}; "
                             f"--input-size {input_size[0]},{input_size[1]} does not match it"  # type: ignore[index]
                             f" (drop --input-size)")
    if card is not None and all(shape[a] is not None for a in hw_axes):
        static = (shape[hw_axes[0]], shape[hw_axes[1]])
        if tuple(card.input_size) != static:
            raise ModelError(f"{where}: its model card says input_size {tuple(card.input_size)} but the graph takes "
                             f"{static[0]}x{static[1]}; fix the card")
    for i, axis in enumerate(hw_axes):
        if shape[axis] is None:
            if input_size is not None:
                shape[axis] = input_size[i]
            elif card is not None:
                shape[axis] = card.input_size[i]
            else:
                raise ModelError(f"{where} has a dynamic input height/width and no model card; pass "
                                 f"--input-size HEIGHT,WIDTH (e.g. 640,640 for a YOLO detector)")
    if shape[c_axis] is None:
        shape[c_axis] = 3
    fixed_onnx = shape[0]
    if fixed_onnx is not None:
        if batch is not None and batch != (fixed_onnx,) * 3:
            raise ModelError(f"{where} has a fixed batch of {fixed_onnx}; --batch {','.join(map(str, batch))} needs "
                             f"an ONNX with a dynamic batch (re-export it: apnet-edge export makes one), or pass "
                             f"--batch {fixed_onnx}")
        b: Batch = (fixed_onnx, fixed_onnx, fixed_onnx)
    else:
        b = batch or (DEFAULT_REID_BATCH if task == "reid" else DEFAULT_DETECTOR_BATCH)
        if fixed_batch and b[0] != b[2]:
            b = (b[1], b[1], b[1])
    tail = tuple(int(d) for d in shape[1:])  # type: ignore[arg-type]
    return Profile(onnx.input_name, (b[0], *tail), (b[1], *tail), (b[2], *tail))


def _autocast_hint(onnx: Path) -> str:
    fp16 = onnx.with_name(onnx.stem + "_fp16.onnx")
    return AUTOCAST_COMMAND.format(onnx=onnx, fp16=fp16)


# ------------------------------------------------------------------------------------------------ plan_build


def plan_build(request: BuildRequest, onnx: OnnxFacts, env: BuildEnv) -> BuildPlan:
    """Decide how to build ``onnx`` for ``env`` as ``request`` asks. Pure: touches no GPU, no file.

    Precision (``request.precision`` None = automatic: int8 for a Q/DQ ONNX, fp16 for an FP16 ONNX or on
    TensorRT < 11, else fp32):

    ========  ==================================  ============================  ===========================
    asked     TensorRT 8.5/8.6                    TensorRT 9.1-10.x             TensorRT 11
    ========  ==================================  ============================  ===========================
    fp32      no flag (TF32 off)                  no flag (TF32 off)            strongly typed
    fp16      FP16 flag                           FP16 flag; FP16 ONNX:         FP16 ONNX only (AutoCast),
                                                  strongly typed                strongly typed
    int8 Q/DQ INT8 + FP16 flags                   STRONGLY_TYPED network        strongly typed
    int8 FP32 INT8 + FP16 + entropy calibrator    same (deprecated since 10.1)  error: use a Q/DQ ONNX
    ========  ==================================  ============================  ===========================

    Raises ModelError for every combination that cannot build, saying what to do instead.
    """
    r = request
    where = f"ONNX model {str(onnx.path)!r}"
    notes: list[str] = []
    if r.precision is not None and r.precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {PRECISIONS}, got {r.precision!r}")
    if r.task is not None and r.task not in TASKS:
        raise ModelError(f"task must be one of {TASKS}, got {r.task!r}")
    if r.workspace_mib is not None and int(r.workspace_mib) <= 0:
        raise ModelError(f"--workspace is in MiB and must be > 0, got {r.workspace_mib}")
    if r.calib_images < 1:
        raise ModelError(f"--calib-images must be >= 1, got {r.calib_images}")
    if env.version[:2] < (8, 5):
        raise ModelError(f"TensorRT {env.tensorrt_version} is too old (apnet-edge needs >= 8.5)")
    task = r.task or ("reid" if onnx.card is not None else "detector")
    card = onnx.card
    if task == "reid" and card is None:
        raise ModelError(f"{where} carries no apnet-edge model card (metadata 'apnet_edge.card', or a "
                         f"{onnx.path.stem}.card.json beside it): export it with apnet-edge export, pass --card "
                         f"FILE for a third-party re-ID model, or --task detector for a YOLO detector")

    # ---- precision
    precision = r.precision
    if precision is None:
        if onnx.has_qdq:
            precision = "int8"
        elif onnx.has_fp16 or env.has_weak_typing:
            precision = "fp16"
        else:
            precision = "fp32"
            notes.append(f"TensorRT {env.tensorrt_version} builds FP16 only from an FP16 ONNX; building FP32. For "
                         f"FP16: {_autocast_hint(onnx.path)}, then build that file")
    if onnx.has_qdq and precision != "int8":
        raise ModelError(f"{where} holds Q/DQ (quantize/dequantize) nodes, i.e. it is an INT8 model: build it with "
                         f"--int8, or build the FP32 ONNX for --{precision}")
    if onnx.has_fp16 and precision == "fp32":
        raise ModelError(f"{where} has FP16 tensors (e.g. from ModelOpt AutoCast): build it with --fp16, or build "
                         f"the FP32 ONNX for --fp32")

    int8_mode: Optional[str] = None
    strongly_typed = not env.has_weak_typing  # TensorRT 11: always
    fp16_flag = int8_flag = False
    tf32 = precision != "fp32"
    calib_cache: Optional[Path] = None
    if precision == "fp16":
        if onnx.has_fp16 and env.has_strongly_typed:
            strongly_typed = True
            notes.append("the ONNX already has FP16 types: built strongly typed, as written")
        elif env.has_weak_typing:
            fp16_flag = True
        else:
            raise ModelError(f"TensorRT {env.tensorrt_version} removed the FP16 builder flag: FP16 engines are built "
                             f"from an FP16 ONNX. Convert it with ModelOpt AutoCast: {_autocast_hint(onnx.path)} "
                             f"(pip install nvidia-modelopt[onnx]; keep it out of the runtime environment), then "
                             f"build that file with --fp16; or build --fp32")
    elif precision == "int8":
        if onnx.has_qdq:
            int8_mode = "explicit"
            if env.has_strongly_typed:
                strongly_typed = True
                notes.append("Q/DQ ONNX: explicitly quantized, strongly typed (layers outside Q/DQ pairs run in "
                             "the ONNX's float type)")
            else:
                int8_flag = fp16_flag = True
                notes.append("Q/DQ ONNX: explicitly quantized with the INT8 flag (TensorRT 8.x); FP16 is "
                             "allowed for layers outside Q/DQ pairs")
        else:
            int8_mode = "implicit"
            if not env.has_implicit_int8:
                raise ModelError(f"TensorRT {env.tensorrt_version} removed implicit INT8 calibration (the INT8 "
                                 f"builder flag and IInt8Calibrator): INT8 engines are built from a Q/DQ ONNX. Make "
                                 f"one on any machine with: {QUANTIZE_COMMAND.format(onnx=onnx.path)}, then run "
                                 f"build-engine --int8 on that file")
            if card is None:
                raise ModelError(f"implicit INT8 calibration feeds person crops pre-processed by the model card, "
                                 f"and {where} has none (a detector?); build it with --fp16, or quantize it to a "
                                 f"Q/DQ ONNX first")
            calib_cache = r.calib_cache or default_calib_cache(r.out_dir, r.name or onnx.path.stem, onnx.sha256)
            if r.calib_dir is None and r.calib_cache is None:
                raise ModelError(f"--int8 on an FP32 ONNX calibrates on real person crops: pass --calib DIR (a "
                                 f"folder of crops; the calibration cache {calib_cache} is written and reused by "
                                 f"later builds), or --calib-cache FILE; or build a Q/DQ ONNX from "
                                 f"{QUANTIZE_COMMAND.format(onnx=onnx.path)}")
            int8_flag = fp16_flag = True
            if env.version[:2] >= (10, 1):
                notes.append(f"implicit INT8 calibration is deprecated since TensorRT 10.1 and gone in 11; prefer "
                             f"a Q/DQ ONNX ({QUANTIZE_COMMAND.format(onnx=onnx.path)})")

    # ---- DLA
    if r.dla_core is not None:
        if r.dla_core < 0:
            raise ModelError(f"--dla-core must be >= 0, got {r.dla_core}")
        if not env.has_dla:
            raise ModelError(f"TensorRT {env.tensorrt_version} has no DLA support (DLA returns in 11.4.1 on Jetson "
                             f"AGX Orin with JetPack 7.2.2+); drop --dla-core")
        if env.num_dla_cores <= 0:
            raise ModelError(f"{env.gpu_name} reports no DLA core (DLA is on Jetson AGX Orin and Orin NX, not on Orin "
                             f"Nano or desktop GPUs); drop --dla-core")
        if r.dla_core >= env.num_dla_cores:
            raise ModelError(f"--dla-core {r.dla_core}: {env.gpu_name} has {env.num_dla_cores} DLA core(s), numbered "
                             f"0..{env.num_dla_cores - 1}")
        if precision == "fp32":
            raise ModelError("DLA runs FP16 or INT8 only: add --fp16 or --int8 to --dla-core")
        if r.batch is not None and r.batch[0] != r.batch[2]:
            raise ModelError(f"DLA supports no dynamic shapes: its profile must have min = opt = max; pass a fixed "
                             f"batch, e.g. --batch {r.batch[1]} (smaller batches are padded)")
        if strongly_typed and env.has_weak_typing:
            # Polygraphy's DLA setup adds PREFER_PRECISION_CONSTRAINTS (before TensorRT 11), a precision hint that
            # strongly typed networks do not take: DLA builds stay weakly typed there.
            strongly_typed = False
            fp16_flag = True
            int8_flag = precision == "int8"
            notes.append("DLA on TensorRT < 11: built weakly typed with the precision flags")
        notes.append("DLA: fixed batch (smaller batches are padded); layers DLA cannot run "
                     + ("fall back to the GPU" if r.gpu_fallback else "fail the build (--no-gpu-fallback)"))

    profile = choose_profile(onnx, task, r.batch, card, r.input_size, fixed_batch=r.dla_core is not None)
    if card is not None:
        extra = dict(card.extra)
        extra["precision"] = precision
        extra["tensorrt"] = {"version": env.tensorrt_version, "int8_mode": int8_mode}
        card = replace(card, extra=extra)
    name = r.name or onnx.path.stem
    engine_path = r.out_dir / engine_file_name(name, precision, profile.batch, env, r.dla_core)
    timing_cache = None
    if r.use_timing_cache:
        timing_cache = r.timing_cache or default_timing_cache(r.out_dir, env)
    if r.calib_dir is not None and int8_mode != "implicit":
        notes.append("--calib is used only to calibrate an FP32 ONNX for INT8; ignored")
    return BuildPlan(request=r, env=env, onnx=onnx, task=task, card=card, precision=precision, int8_mode=int8_mode,
                     strongly_typed=strongly_typed, fp16_flag=fp16_flag, int8_flag=int8_flag, tf32=tf32,
                     profile=profile, engine_path=engine_path, timing_cache=timing_cache, calib_cache=calib_cache,
                     notes=tuple(notes))


def same_gpu(a: str, b: str) -> bool:
    """Whether two CUDA device names are the same GPU model (see :func:`~apnet_edge.runners.tensorrt_runner.gpu_key`)."""
    return gpu_key(a) == gpu_key(b)
