"""export.mixed_precision: module groups, their order and the bisection that picks which stay in INT8."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from export.mixed_precision import (  # noqa: E402
    HEAD_GROUP,
    SEGMENTS,
    LayerGroup,
    budget_prefix,
    layer_groups,
    longest_passing_prefix,
    node_macs,
    order_by_error_per_mac,
    search_keep_float,
)


def _conv_graph(names: list[str], channels: int = 4, size: int = 8):
    """A chain of 3x3 convolutions (stride 1, pad 1) named ``names``, shapes inferred: (1, C, size, size)."""
    nodes, inits = [], []
    prev = "x"
    for i, name in enumerate(names):
        w = f"w{i}"
        inits.append(numpy_helper.from_array(np.ones((channels, channels, 3, 3), np.float32), w))
        nodes.append(helper.make_node("Conv", [prev, w], [f"t{i}"], name=name, pads=[1, 1, 1, 1]))
        prev = f"t{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         ["N", channels, size, size])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_macs_of_a_convolution_are_output_elements_times_kernel():
    model = _conv_graph(["/a/Conv", "/b/Conv"], channels=4, size=8)
    macs = node_macs(model)
    assert macs == {"/a/Conv": 4 * 8 * 8 * (4 * 3 * 3), "/b/Conv": 4 * 8 * 8 * (4 * 3 * 3)}


def test_resnet_stages_split_into_blocks_and_other_modules_stay_whole():
    names = ["/conv1/Conv",
             "/layer1/layer1.0/conv1/Conv", "/layer1/layer1.0/conv2/Conv",
             "/layer1/layer1.1/conv1/Conv", "/layer1/layer1.1/conv2/Conv",
             "/pyramids.0/fc/fc.0/Conv", "/pyramids.0/fc1/Conv",
             "/fc1/Conv", "/Conv"]
    model = _conv_graph(names)
    groups = layer_groups(model, names)
    assert [g.name for g in groups] == ["/conv1", "/layer1/layer1.0", "/layer1/layer1.1", "/pyramids.0", "/fc1",
                                      HEAD_GROUP]
    assert groups[1].nodes == ("/layer1/layer1.0/conv1/Conv", "/layer1/layer1.0/conv2/Conv")
    assert all(g.macs == len(g.nodes) * 4 * 64 * 36 for g in groups)
    # only the quantizable nodes are grouped: a module with none has no group
    assert [g.name for g in layer_groups(model, names[1:5])] == ["/layer1/layer1.0", "/layer1/layer1.1"]


def test_graph_without_module_names_is_cut_into_segments_of_equal_compute():
    names = [f"conv_{i}" for i in range(40)]
    groups = layer_groups(_conv_graph(names), names)
    assert len(groups) == SEGMENTS
    assert [n for g in groups for n in g.nodes] == names  # every node once, in graph order
    assert max(g.macs for g in groups) <= 2 * min(g.macs for g in groups) + 1


def test_order_puts_compute_heavy_tolerant_groups_first():
    groups = [LayerGroup("stem", ("a",), 10), LayerGroup("big", ("b",), 1000), LayerGroup("head", ("c",), 0),
              LayerGroup("mid", ("d",), 500)]
    errors = [0.01, 0.001, 0.02, 0.004]
    assert order_by_error_per_mac(groups, errors) == [1, 3, 0, 2]
    assert budget_prefix([1, 3, 0, 2], errors, target=0.994) == 2  # 0.001 + 0.004 fit 0.006, + 0.01 does not


@pytest.mark.parametrize("guess", [None, 1, 3, 9])
def test_bisection_finds_the_longest_passing_prefix(guess):
    calls = []

    def cosine(k: int) -> float:
        calls.append(k)
        return 1.0 - 0.01 * k

    k, c, trials = longest_passing_prefix(9, cosine, target=0.955, first_guess=guess)
    assert (k, c) == (4, pytest.approx(0.96)) and trials == [(x, pytest.approx(1 - 0.01 * x)) for x in calls]
    assert len(calls) <= 5 and len(set(calls)) == len(calls)
    assert longest_passing_prefix(9, cosine, target=0.5)[0] == 9  # everything passes
    assert longest_passing_prefix(9, cosine, target=0.999)[:2] == (0, 1.0)  # nothing passes: FP32


def test_search_keeps_the_costly_groups_in_float_and_reports_the_chosen_model():
    groups = [LayerGroup(f"g{i}", (f"n{i}a", f"n{i}b"), macs) for i, macs in enumerate([100, 100, 800, 800, 10])]
    cost = {"g0": 0.02, "g1": 0.003, "g2": 0.002, "g3": 0.001, "g4": 0.03}
    seen = []

    def evaluate(int8: list[str]) -> np.ndarray:  # additive errors, 5 crops
        seen.append(tuple(int8))
        return np.full(5, 1.0 - sum(cost[g] for g in int8)) - np.array([0, 0, 0, 0, 0.001])

    res = search_keep_float(groups, evaluate, target=0.99, search_crops=5, overlaps_calibration=False,
                            progress=False)
    assert res.errors == pytest.approx([0.0202, 0.0032, 0.0022, 0.0012, 0.0302])
    assert set(res.quantized) == {"g3", "g2", "g1"}  # 0.006 + 0.0002 of error; + g0 would exceed 0.01
    assert res.mean_cosine == pytest.approx(1 - 0.006 - 0.0002) and res.worst_cosine == pytest.approx(0.993)
    assert res.float_nodes == ("n0a", "n0b", "n4a", "n4b")
    assert res.int8_mac_share == pytest.approx(1700 / 1810)
    d = res.to_dict()
    assert [g["int8"] for g in d["groups"]] == [False, True, True, True, False]
    assert d["trials"][0] == {"int8_groups": 5, "mean_cosine": pytest.approx(1 - 0.056 - 0.0002, abs=1e-6)}
    assert d["trials"][-1]["int8_groups"] in (3, 4) and d["target_cosine"] == 0.99
    # the whole model first, one evaluation per group, then the bisection (over 1..4: at most 3 trials)
    assert len(seen) == 1 + len(groups) + len(res.trials) - 1 and len(res.trials) <= 4
    assert seen[0] == ("g0", "g1", "g2", "g3", "g4")


def test_search_stops_after_one_trial_when_the_whole_model_passes():
    groups = [LayerGroup(f"g{i}", (f"n{i}",), 100) for i in range(3)]
    seen = []

    def evaluate(int8: list[str]) -> np.ndarray:
        seen.append(tuple(int8))
        return np.array([0.995, 0.999])

    res = search_keep_float(groups, evaluate, target=0.99, search_crops=2, overlaps_calibration=True, progress=False)
    assert seen == [("g0", "g1", "g2")] and res.quantized == ("g0", "g1", "g2") and res.float_nodes == ()
    assert res.errors == (None, None, None) and res.to_dict()["groups"][0]["error_alone"] is None
    assert res.worst_cosine == pytest.approx(0.995) and res.to_dict()["overlaps_calibration"] is True
