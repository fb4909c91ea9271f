"""``OUT/manifest.json``: every input with its status (done, failed, pending) and, for
failures, the error; plus the re-run rule (which finished videos can be skipped)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from endostream.batch.inputs import VideoJob
from endostream.fileutil import atomic_write_json


def read_summary(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def finished(out_root: Path, job: VideoJob, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a finished, still valid result for ``job`` (same input file, same model
    and output settings), or None when it must be (re)processed."""
    s = read_summary(out_root / job.name)
    if not s or s.get("status") != "done":
        return None
    if s.get("fingerprint") != job.fingerprint or s.get("settings") != settings:
        return None
    return s


def clean_partials(out_root: Path) -> list[str]:
    """Remove temporary folders left by an interrupted run (``.<name>.partial-<pid>``,
    ``.<name>.old-<pid>``); a video that was mid-way restarts from its first frame."""
    removed = []
    for p in out_root.glob(".*"):
        if p.is_dir() and (".partial-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


class Manifest:
    """Status per input, rewritten atomically after every change (so a crash leaves it valid)."""

    def __init__(self, out_root: Path, jobs: list[VideoJob], config: dict[str, Any]) -> None:
        self.path = out_root / "manifest.json"
        self.config = config
        self.entries: dict[str, dict[str, Any]] = {
            j.name: {"input": j.input, "output": j.name, "status": "pending", "error": None} for j in jobs}

    def set(self, name: str, status: str, error: str | None = None, **extra: Any) -> None:
        self.entries[name].update(status=status, error=error, **extra)
        self.save()

    def save(self) -> None:
        counts = {s: sum(e["status"] == s for e in self.entries.values()) for s in ("done", "failed", "pending")}
        atomic_write_json(self.path, {"updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "counts": counts,
                                      "config": self.config, "videos": list(self.entries.values())})
