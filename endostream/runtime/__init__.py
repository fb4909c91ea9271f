"""Inference backends with one call signature (see ``base.Backend``)."""
