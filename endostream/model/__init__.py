"""The segmentation network (torch), one file per part, and its few-step scheduler (no torch).

Imports nothing of endostream beyond itself; the runtime and training import it."""
