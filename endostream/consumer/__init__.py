"""The live consumer: wiring (``app``), the inference worker, display stages, telemetry, overlay, sinks, viewer.

May import ``protocol``, ``inference`` and ``types``; the model, runtime and capture never import it."""
