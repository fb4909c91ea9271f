"""Capture: video sources (file, device, network, folder) and the producer loop that stamps and sends them.

May import ``protocol`` and ``types``; never the consumer, the model or the runtime."""
