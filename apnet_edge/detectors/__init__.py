"""Person detectors: ``detect(frame_bgr) -> Detections`` over the same runners as the re-ID models."""
