"""Offline jobs over many recorded videos: every frame, resumable manifest, a local pool or Ray.

May import ``inference``, ``capture.sources``, the consumer's overlay and sinks, ``training.metrics``; nothing
imports it but the CLI."""
