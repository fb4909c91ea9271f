"""The segmenting loop written once above the backends (``segmenter``), preprocessing, per-stream state, and
``predict`` over image files.

May import ``runtime``, ``model.scheduler`` and ``types``; never the consumer, batch or bench."""
