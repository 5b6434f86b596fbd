"""ONNX -> TensorRT engines, built on the device that runs them (``apnet-edge build-engine``; docs/tensorrt.md).

Modules (imported explicitly; importing this package imports nothing):

* :mod:`engines.plan` -- pure: ``plan_build(BuildRequest, OnnxFacts, BuildEnv) -> BuildPlan`` (precision per
  TensorRT version, builder flags, profile, DLA, file names, rebuild command, trtexec line).
* :mod:`engines.onnx_info` -- ``inspect_onnx(path)``: input, Q/DQ / FP16 content, model card, sha256.
* :mod:`engines.build` -- the GPU part: ``current_env()``, ``build_engine(plan)`` through Polygraphy's loaders.
* :mod:`engines.calibration` -- implicit INT8 calibration batches of real person crops.
* :mod:`engines.verify` -- ``verify_engine(engine, onnx, data_dir)``: the accuracy gate against FP32 ONNX Runtime.
* :mod:`engines.commands` -- ``add_arguments(parser)`` / ``run(args)`` for the CLI.
* :mod:`engines.typecheck` -- ``python -m engines.typecheck``: mypy against tensorrt-stubs.
"""
