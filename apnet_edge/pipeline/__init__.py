"""The live multi-camera runtime: ``apnet-edge run --cameras cams.yaml``.

cameras -> detect -> track (one state per camera) -> embedding scheduler -> one batched re-ID call ->
cross-camera matcher (global ids) -> sinks (MOT files, JSON-lines events, annotated video, latency summary).
Importing this package imports nothing heavy; every stage imports its libraries when it is built.
"""
