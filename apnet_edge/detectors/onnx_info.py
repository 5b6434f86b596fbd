"""What an ONNX file says about itself, read without ``onnx`` or a runtime: ``metadata_props`` and the
names and shapes of the graph's inputs and outputs.

A device may have ONNX Runtime, OpenVINO or TensorRT but not the ``onnx`` package, and the detectors need these
facts before choosing a runner (the Ultralytics class names, ``imgsz`` and ``stride`` live in ``metadata_props``).
The file is memory-mapped and only the few protobuf fields needed are decoded; the weights are skipped by length,
so a 50 MB model is read in about a millisecond.

Protobuf field numbers (onnx.proto3): ModelProto ``graph`` = 7, ``metadata_props`` = 14 (StringStringEntryProto:
``key`` = 1, ``value`` = 2); GraphProto ``input`` = 11, ``output`` = 12 (ValueInfoProto: ``name`` = 1, ``type`` = 2);
TypeProto ``tensor_type`` = 1 (``shape`` = 2); TensorShapeProto ``dim`` = 1 (``dim_value`` = 1, ``dim_param`` = 2).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

from apnet_edge.errors import ModelError

Dim = Optional[int]  # None: a dynamic (named or unknown) dimension


@dataclass(frozen=True)
class OnnxInfo:
    """``metadata`` (metadata_props as a dict) and (name, shape) of each graph input and output."""

    metadata: dict[str, str] = field(default_factory=dict)
    inputs: tuple[tuple[str, tuple[Dim, ...]], ...] = ()
    outputs: tuple[tuple[str, tuple[Dim, ...]], ...] = ()


class _Truncated(Exception):
    pass


def _varint(buf: Union[bytes, mmap.mmap, memoryview], pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Truncated
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise _Truncated


def _fields(buf: Union[bytes, mmap.mmap, memoryview], start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end or varint value) of each field in buf[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield num, wire, value, pos
        elif wire == 1:
            pos += 8
            yield num, wire, pos - 8, pos
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Truncated
            yield num, wire, pos, pos + n
            pos += n
        elif wire == 5:
            pos += 4
            yield num, wire, pos - 4, pos
        else:  # groups (3, 4) do not occur in ONNX files
            raise _Truncated
    if pos != end:
        raise _Truncated


def _text(buf: Union[bytes, mmap.mmap, memoryview], a: int, b: int) -> str:
    return bytes(buf[a:b]).decode("utf-8", errors="replace")


def _value_info(buf: Union[bytes, mmap.mmap, memoryview], a: int, b: int) -> tuple[str, tuple[Dim, ...]]:
    name, dims = "", []
    for num, wire, s, e in _fields(buf, a, b):
        if num == 1 and wire == 2:
            name = _text(buf, s, e)
        elif num == 2 and wire == 2:  # TypeProto
            for n2, w2, s2, e2 in _fields(buf, s, e):
                if n2 == 1 and w2 == 2:  # tensor_type
                    for n3, w3, s3, e3 in _fields(buf, s2, e2):
                        if n3 == 2 and w3 == 2:  # shape
                            for n4, w4, s4, e4 in _fields(buf, s3, e3):
                                if n4 == 1 and w4 == 2:  # dim
                                    d: Dim = None
                                    for n5, w5, s5, _e5 in _fields(buf, s4, e4):
                                        if n5 == 1 and w5 == 0:
                                            d = int(s5)
                                    dims.append(d if d is not None and d > 0 else None)
    return name, tuple(dims)


def read_onnx_info(path: Union[str, Path]) -> OnnxInfo:
    """Metadata and input/output shapes of the ONNX file ``path``.

    Raises ModelError when the file is missing or is not a readable ONNX model.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ONNX model {str(p)!r} not found; check the path")
    meta: dict[str, str] = {}
    inputs: list[tuple[str, tuple[Dim, ...]]] = []
    outputs: list[tuple[str, tuple[Dim, ...]]] = []
    initializer_names: set[str] = set()
    try:
        with open(p, "rb") as f:
            size = p.stat().st_size
            if size == 0:
                raise _Truncated
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                saw_graph = False
                for num, wire, s, e in _fields(buf, 0, size):
                    if num == 14 and wire == 2:
                        key = value = ""
                        for n2, w2, s2, e2 in _fields(buf, s, e):
                            if n2 == 1 and w2 == 2:
                                key = _text(buf, s2, e2)
                            elif n2 == 2 and w2 == 2:
                                value = _text(buf, s2, e2)
                        meta[key] = value
                    elif num == 7 and wire == 2:
                        saw_graph = True
                        for n2, w2, s2, e2 in _fields(buf, s, e):
                            if n2 == 11 and w2 == 2:
                                inputs.append(_value_info(buf, s2, e2))
                            elif n2 == 12 and w2 == 2:
                                outputs.append(_value_info(buf, s2, e2))
                            elif n2 == 5 and w2 == 2:  # initializer: its name (field 8) only
                                for n3, w3, s3, e3 in _fields(buf, s2, e2):
                                    if n3 == 8 and w3 == 2:
                                        initializer_names.add(_text(buf, s3, e3))
                if not saw_graph:
                    raise _Truncated
    except (_Truncated, ValueError, IndexError):
        raise ModelError(f"{str(p)!r} is not a readable ONNX model (truncated or another format)") from None
    real_inputs = tuple(i for i in inputs if i[0] not in initializer_names)  # old exports list weights as inputs
    return OnnxInfo(metadata=meta, inputs=real_inputs, outputs=tuple(outputs))
