"""Latency and throughput of any model the runners accept: ``apnet-edge bench``.

For each batch size: warm-up runs, then timed runs of ``runner.infer`` on a pre-processed batch (so the
numbers are the model's, not the JPEG decoder's); p50/p95/p99 latency in milliseconds, images/s from the
median, peak resident memory of the process, and the machine, backend and library versions.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class BatchTiming:
    batch: int
    runs: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    images_per_s: float


@dataclass(frozen=True)
class BenchResult:
    model: str
    backend: str
    precision: str
    threads: Optional[int]
    timings: tuple[BatchTiming, ...]
    peak_rss_mb: float
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["timings"] = [asdict(t) for t in self.timings]
        return d

    def timing(self, batch: int) -> BatchTiming:
        return next(t for t in self.timings if t.batch == batch)


def cpu_name() -> str:
    """The CPU model name (Linux /proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> Optional[str]:
    """The first NVIDIA GPU's name from nvidia-smi, or None."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    """Versions of the inference libraries that are importable (without importing the heavy ones anew)."""
    from importlib import metadata

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("onnxruntime", "openvino", "torch", "tensorrt", "opencv-python-headless", "opencv-python", "onnx"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_info() -> dict[str, Any]:
    import os

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "gpu": gpu_name(), "platform": platform.platform(),
            "libraries": library_versions()}


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def time_batch(runner: Any, batch: np.ndarray, warmup: int, runs: int, min_seconds: float) -> BatchTiming:
    """Time ``runner.infer(batch)``: ``warmup`` untimed calls, then at least ``runs`` calls and ``min_seconds``."""
    for _ in range(warmup):
        runner.infer(batch)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        runner.infer(batch)
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * runs:
            break
    ms = np.array(times) * 1000.0
    p50 = float(np.percentile(ms, 50))
    n = len(batch)
    return BatchTiming(n, len(times), round(p50, 3), round(float(np.percentile(ms, 95)), 3),
                       round(float(np.percentile(ms, 99)), 3), round(float(ms.mean()), 3),
                       round(n / (p50 / 1000.0), 2))


def make_batch(runner: Any, n: int, crops: Optional[Sequence[np.ndarray]] = None, seed: int = 0) -> np.ndarray:
    """A pre-processed (N, ...) float32 batch for ``runner``: from real crops when given, else random pixels."""
    from apnet_edge.preprocess import preprocess_crops

    card = runner.card
    if crops:
        chosen = [crops[i % len(crops)] for i in range(n)]
    else:
        rng = np.random.default_rng(seed)
        h, w = card.input_size
        chosen = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    return preprocess_crops(chosen, card)


def bench_runner_kwargs(model: str, backend: str, batches: Sequence[int], static_shapes: bool,
                        runner_kwargs: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """``load_runner`` keyword arguments for measuring ``model`` at ``batches``: ``runner_kwargs``, plus on OpenVINO
    (``static_shapes``) a copy compiled for each static batch size."""
    from apnet_edge.runners import backend_for

    kwargs = dict(runner_kwargs or {})
    if static_shapes and backend_for(model, backend) == "openvino":
        kwargs.setdefault("static_batches", tuple(batches))
    return kwargs


def bench_model(model: str, backend: str = "auto", batches: Sequence[int] = (1, 16), threads: Optional[int] = None,
                warmup: int = 3, runs: int = 10, min_seconds: float = 2.0, crops: Optional[Sequence[np.ndarray]] = None,
                runner_kwargs: Optional[dict[str, Any]] = None, static_shapes: bool = True) -> BenchResult:
    """Benchmark ``model`` at each batch size in ``batches`` (batches larger than a fixed-batch model's limit are
    split by the runner, so images/s stays comparable). ``static_shapes``: on OpenVINO, run each batch size on a copy
    compiled for that static batch (as a deployment with a fixed batch would; faster), else on the dynamic model."""
    from apnet_edge.runners import load_runner

    timings = []
    with load_runner(model, backend=backend, threads=threads,
                     **bench_runner_kwargs(model, backend, batches, static_shapes, runner_kwargs)) as runner:
        for n in batches:
            timings.append(time_batch(runner, make_batch(runner, n, crops), warmup, runs, min_seconds))
        name, precision = runner.backend, getattr(runner, "precision", "fp32")
    return BenchResult(str(model), name, precision, threads, tuple(timings), round(peak_rss_mb(), 1), machine_info())


def format_table(results: Sequence[BenchResult]) -> str:
    """A terminal table: one row per model and batch size; with two or more models, the ratio to the first."""
    head = f"{'model':<36} {'backend':<12} {'prec':<6} {'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'img/s':>9}"
    lines = [head, "-" * len(head)]
    for r in results:
        for t in r.timings:
            name = Path(r.model).name[-36:]
            lines.append(f"{name:<36} {r.backend:<12} {r.precision:<6} {t.batch:>5} {t.p50_ms:>9.2f} {t.p95_ms:>9.2f} "
                         f"{t.p99_ms:>9.2f} {t.images_per_s:>9.1f}")
    if len(results) > 1:
        base = results[0]
        for other in results[1:]:
            for t in other.timings:
                try:
                    b = base.timing(t.batch)
                except StopIteration:
                    continue
                lines.append(f"batch {t.batch}: {Path(other.model).name} is {t.images_per_s / b.images_per_s:.2f}x "
                             f"the images/s of {Path(base.model).name}")
    lines.append(f"peak RSS {max(r.peak_rss_mb for r in results):.0f} MiB on {results[0].machine.get('cpu')}"
                 + (f" / {results[0].machine['gpu']}" if results[0].machine.get("gpu") else ""))
    return "\n".join(lines)


def write_json(results: Sequence[BenchResult], path: str | Path, profiles: Sequence[Any] = ()) -> None:
    """A JSON list with one object per model; with ``profiles`` (:class:`~apnet_edge.profiling.ModelProfile`), each
    model's object also holds its per-node profiles under ``"profiles"`` (one per batch size)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in results:
        row = r.to_dict()
        mine = [q.to_dict() for q in profiles if (q.model, q.backend) == (r.model, r.backend)]
        if mine:
            row["profiles"] = mine
        rows.append(row)
    p.write_text(json.dumps(rows, indent=2))


def plot_latency(results: Sequence[BenchResult], path: str | Path) -> Path:
    """Latency (p50, ms) and images/s against batch size, one line per model, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    for r in results:
        b = [t.batch for t in r.timings]
        label = f"{Path(r.model).name} ({r.backend})"
        ax[0].plot(b, [t.p50_ms for t in r.timings], "o-", label=label)
        ax[1].plot(b, [t.images_per_s for t in r.timings], "o-", label=label)
    ax[0].set(xlabel="batch", ylabel="p50 latency (ms)", xscale="log")
    ax[1].set(xlabel="batch", ylabel="images/s", xscale="log")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
