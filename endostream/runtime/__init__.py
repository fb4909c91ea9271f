"""Inference backends with one call signature (``base.Backend``): torch, ONNX Runtime, TensorRT; export.

May import ``model`` and ``fileutil``; never inference, consumer or training."""
