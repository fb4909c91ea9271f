"""endostream: real-time polyp segmentation of endoscopy video over ZeroMQ (research use only)."""

__version__ = "0.1.0"
