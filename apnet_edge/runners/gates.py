"""Float arithmetic inside the quantized attention gates of a CPU INT8 model, for OpenVINO's static-shape copies.

``quantize --target cpu`` quantizes each fused pyramid's gate ``y = x * scale + shift`` as ONNX Runtime runs it
fastest: QLinearMul then QLinearAdd, with the per-image ``scale`` and ``shift`` and the product quantized too. OpenVINO
fuses the same chain into one element-wise kernel with three requantizations; compiled for a static batch it runs
faster when only the gate's input map and its output are quantized (APNet-C ResNet-50 INT8, 2-vCPU Xeon with AMX:
+4 to +9 % images/s at batch 1, +9 to +10 % at batch 16; with a dynamic batch it is 5-22 % slower, so the runner
applies this only to its static copies). Dropping those inner rounding steps can only bring the result closer to FP32.
"""

from __future__ import annotations

from typing import Any, Sequence


def float_gate_arithmetic(model: Any, gates: Sequence[str]) -> int:
    """Bypass, in the ONNX ``model`` (edited in place), the QuantizeLinear -> DequantizeLinear pairs on the scale and
    shift of each gate Mul named in ``gates`` and between that Mul and the Add after it; drop the pairs nothing reads
    any more. The map input (the one a GlobalAveragePool also reads) and the Add's output keep their quantization.

    Returns the number of gate inputs rewired (0: nothing matched, the model is unchanged).
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def before_qdq(tensor: str) -> str | None:
        """``x`` when ``tensor`` = DequantizeLinear(QuantizeLinear(x)), else None."""
        dq = producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        q = producer.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None

    pooled = set()
    for n in graph.node:
        if n.op_type == "GlobalAveragePool":
            pooled.add(n.input[0])
            pooled.add(before_qdq(n.input[0]) or n.input[0])
    wanted = set(gates)
    rewired = 0
    for mul in [n for n in graph.node if n.op_type == "Mul" and n.name in wanted]:
        for k, tensor in enumerate(mul.input):  # the per-image scale
            src = before_qdq(tensor)
            if src is not None and tensor not in pooled and src not in pooled:
                mul.input[k] = src
                rewired += 1
        users = consumers.get(mul.output[0], [])
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            continue
        dqs = consumers.get(users[0].output[0], [])
        adds = [a for dq in dqs for a in consumers.get(dq.output[0], [])]
        if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs) or not adds \
                or any(a.op_type != "Add" for a in adds):
            continue
        dq_outs = {d.output[0] for d in dqs}
        for add in adds:
            for k, tensor in enumerate(add.input):
                if tensor in dq_outs:  # the product, unrounded
                    add.input[k] = mul.output[0]
                    rewired += 1
                else:  # the per-image shift
                    src = before_qdq(tensor)
                    if src is not None:
                        add.input[k] = src
                        rewired += 1
    if rewired:
        _drop_unread_qdq(graph)
    return rewired


def read_with_float_gates(core: Any, path: str, gates: Sequence[str]) -> Any:
    """OpenVINO ``core``'s model of the ONNX file ``path`` with :func:`float_gate_arithmetic` applied to ``gates``;
    None when nothing matched (read the file as it is). The runner's static copies and its crash probe both read the
    model this way, so the probe compiles exactly the graph the runner will."""
    import onnx

    proto = onnx.load(str(path))
    return core.read_model(proto.SerializeToString()) if float_gate_arithmetic(proto, gates) else None


def _drop_unread_qdq(graph: Any) -> None:
    """Remove QuantizeLinear/DequantizeLinear nodes whose outputs nothing reads (repeatedly: a Q feeding only a
    dropped DQ goes too)."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            return
        for n in dead:
            graph.node.remove(n)
