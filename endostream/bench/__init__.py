"""Latency benchmarking: scenarios over the real pipeline, statistics, clock offset, soak, reports and plots.

Sits on top: may import capture, protocol, consumer and inference; nothing imports it but the CLI."""
