"""Per-node inference profiles: where one model execution's time goes, node by node (``apnet-edge bench --profile``).

The backends time their own nodes: OpenVINO's ``PERF_COUNT`` (per compiled node: its layer type and the kernel that
ran it, e.g. ``brgconv_avx512_amx_1x1_I8``) and ONNX Runtime's session profiler (per kernel: the operator and the
execution provider). A profile is the mean over ``runs`` infer calls, in microseconds per call, next to the backend's
own time for the call's model executions and the mean wall time of the call (which adds the runner's work and
reading the profile). Between the nodes' sum and the execution lies the backend's scheduling; with several threads,
OpenVINO's node times can add up to a little more than the execution. The profiler costs time: read the shares, and
take speeds from the timed runs of ``bench`` (profiler off).

TensorRT engines are profiled by NVIDIA's own tool: ``trtexec --loadEngine=E --dumpProfile --separateProfileRun``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np

PROFILED_BACKENDS = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class NodeTime:
    """One node's mean time, ``us`` microseconds (per model execution from a runner, per infer call in a
    :class:`ModelProfile`); ``kernel``: the backend's implementation of it."""

    name: str
    op_type: str
    kernel: str
    us: float


@dataclass(frozen=True)
class ModelProfile:
    """A model's per-node profile at one batch size; ``nodes`` sorted slowest first, times per ``infer`` call."""

    model: str
    backend: str
    precision: str
    batch: int
    executions_per_call: int  # model executions per infer call (a fixed-batch model runs a batch in chunks)
    runs: int
    wall_us: float  # mean wall time of one infer call (profiler on), microseconds
    execution_us: float  # the backend's own mean time for the call's executions (profiler on), microseconds
    nodes: tuple[NodeTime, ...]

    @property
    def node_us(self) -> float:
        """Sum of the nodes' times per infer call, microseconds."""
        return float(sum(n.us for n in self.nodes))

    def by_op_type(self) -> list[tuple[str, float, int]]:
        """(op type, microseconds per call, nodes that ran) per op type, slowest first."""
        acc: dict[str, list[float]] = {}
        for n in self.nodes:
            acc.setdefault(n.op_type, []).append(n.us)
        return sorted(((op, float(sum(v)), len(v)) for op, v in acc.items()), key=lambda r: -r[1])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["nodes"] = [asdict(n) for n in self.nodes]
        d["node_us"] = round(self.node_us, 1)
        return d


@dataclass(frozen=True)
class ExecutionProfile:
    """What a runner's :meth:`~apnet_edge.runners.base.Runner.node_profile` returns: mean time per node over the
    profiled executions (slowest first) and the mean time of one execution as the backend measured it."""

    nodes: tuple[NodeTime, ...]
    execution_us: float


def mean_node_times(executions: Sequence[dict[str, tuple[str, str, float]]],
                    execution_us: Sequence[float]) -> ExecutionProfile:
    """Mean per node over ``executions`` (each: node name -> (op type, kernel, microseconds)), slowest first, with
    the mean of ``execution_us`` (each execution's own time); nodes that never took time (reshapes folded away,
    constants) are left out."""
    mean = float(np.mean(execution_us)) if len(execution_us) else 0.0
    if not executions:
        return ExecutionProfile((), mean)
    total: dict[str, float] = {}
    kind: dict[str, tuple[str, str]] = {}
    for ex in executions:
        for name, (op, kernel, us) in ex.items():
            total[name] = total.get(name, 0.0) + us
            kind[name] = (op, kernel)
    n = len(executions)
    out = [NodeTime(name, kind[name][0], kind[name][1], t / n) for name, t in total.items() if t > 0]
    return ExecutionProfile(tuple(sorted(out, key=lambda x: -x.us)), mean)


def profiled_backend(model: str, backend: str = "auto") -> str:
    """The backend ``model`` runs on for ``backend``, when it can be profiled; ModelError otherwise (TensorRT: how to
    use trtexec instead)."""
    from apnet_edge.errors import ModelError
    from apnet_edge.runners import backend_for

    name = backend_for(model, backend)
    if name not in PROFILED_BACKENDS:
        hint = (" For a TensorRT engine: trtexec --loadEngine=ENGINE --dumpProfile --separateProfileRun."
                if name == "tensorrt" else "")
        raise ModelError(f"per-node profiles are available on {' and '.join(PROFILED_BACKENDS)}; {str(model)!r} runs "
                         f"on {name or backend}.{hint}")
    return name


def profile_model(model: str, backend: str = "auto", batch: int = 1, threads: Optional[int] = None, runs: int = 50,
                  warmup: int = 5, crops: Optional[Sequence[np.ndarray]] = None, static_shapes: bool = True,
                  runner_kwargs: Optional[dict[str, Any]] = None) -> ModelProfile:
    """Profile ``model`` node by node at ``batch`` (``runs`` timed infer calls after ``warmup``), on ONNX Runtime or
    OpenVINO (``static_shapes``: OpenVINO runs a copy compiled for that static batch, as ``bench`` does).

    Raises ModelError for another backend (TensorRT: use trtexec, see the module docstring)."""
    from apnet_edge.bench import bench_runner_kwargs, make_batch, time_batch
    from apnet_edge.errors import ModelError
    from apnet_edge.runners import load_runner

    name = profiled_backend(model, backend)
    if batch < 1 or runs < 1 or warmup < 0:
        raise ModelError(f"profile needs batch >= 1, runs >= 1 and warmup >= 0; found {batch}, {runs}, {warmup}")
    kwargs = {**bench_runner_kwargs(model, backend, (batch,), static_shapes, runner_kwargs), "profile": True}
    with load_runner(model, backend=backend, threads=threads, **kwargs) as runner:
        timing = time_batch(runner, make_batch(runner, batch, crops), warmup, runs, min_seconds=0.0)  # exactly `runs`
        per_call = math.ceil(batch / runner.max_batch) if runner.max_batch else 1
        prof = runner.node_profile(runs * per_call)
        precision = getattr(runner, "precision", "fp32")
    scaled = tuple(NodeTime(n.name, n.op_type, n.kernel, round(n.us * per_call, 2)) for n in prof.nodes)
    return ModelProfile(str(model), name, precision, batch, per_call, runs, round(timing.mean_ms * 1000.0, 1),
                        round(prof.execution_us * per_call, 1), scaled)


def format_profile(p: ModelProfile, top: int = 15) -> str:
    """The ``top`` slowest nodes and the time per op type, as a terminal table."""
    lines = [f"{p.model} ({p.backend}, {p.precision}), batch {p.batch}, profiler on: {p.wall_us / 1000:.2f} ms per "
             f"infer call (mean of {p.runs}); the backend's execution {p.execution_us / 1000:.2f} ms"
             + (f" ({p.executions_per_call} executions)" if p.executions_per_call > 1 else "")
             + f"; its {len(p.nodes)} nodes' own times add up to {p.node_us / 1000:.2f} ms"]
    head = f"{'us':>9} {'share':>6}  {'op type':<22} {'kernel':<30} node"
    lines += ["", head, "-" * len(head)]
    for n in p.nodes[:top]:
        share = 100.0 * n.us / p.node_us if p.node_us else 0.0
        lines.append(f"{n.us:>9.1f} {share:>5.1f}%  {n.op_type[:22]:<22} {n.kernel[:30]:<30} {n.name}")
    if len(p.nodes) > top:
        rest = sum(n.us for n in p.nodes[top:])
        lines.append(f"{rest:>9.1f} {100.0 * rest / p.node_us if p.node_us else 0.0:>5.1f}%  "
                     f"({len(p.nodes) - top} more nodes)")
    lines += ["", f"{'us':>9} {'nodes':>6}  op type", "-" * 30]
    lines += [f"{us:>9.1f} {count:>6}  {op}" for op, us, count in p.by_op_type()]
    return "\n".join(lines)
