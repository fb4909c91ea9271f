"""The segmentation network (torch) and its few-step scheduler (no torch)."""
