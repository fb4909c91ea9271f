"""Which videos a batch job covers, what each one's output folder is called, and how to tell
whether a finished output still matches its input (for skipping on re-run)."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".wmv", ".flv")


@dataclass
class VideoJob:
    """One input video. ``name``: its output folder under OUT (the file stem, made unique);
    ``gt``: ground-truth masks (mask video or folder) or None (then sources.py's sidecar rule
    ``<stem>_masks.mkv`` / ``<stem>_masks/`` applies); ``fingerprint``: size and mtime of the
    input when the job was planned; ``frames_hint``: the container's frame count (0 = unknown)."""

    input: str
    name: str
    gt: str | None = None
    fingerprint: dict[str, int] = field(default_factory=dict)
    frames_hint: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_sidecar(path: Path) -> bool:
    """``clip_masks.mkv`` beside ``clip.mp4`` is its ground truth, not a video to segment."""
    if not path.stem.endswith("_masks"):
        return False
    base = path.stem[: -len("_masks")]
    return any((path.parent / (base + ext)).is_file() for ext in VIDEO_EXTS)


def list_inputs(spec: str | Sequence[str]) -> list[str]:
    """Expand ``input=``: a folder (its video files, natural order), a glob, a list file (one
    path per line, relative to the list's folder, ``#`` comments), one video, or a list of
    any of these. Listed paths that do not exist are kept, so they are reported as failed."""
    from endostream.capture.sources import natural_key

    if not isinstance(spec, (str, os.PathLike)):
        return [p for item in spec for p in list_inputs(str(item))]
    spec = str(spec)
    path = Path(spec)
    if path.is_dir():
        files = [p for p in path.iterdir()
                 if p.is_file() and p.suffix.lower() in VIDEO_EXTS and not _is_sidecar(p)]
        return [str(p) for p in sorted(files, key=lambda p: natural_key(p.name))]
    if any(ch in spec for ch in "*?["):
        hits = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p) and not _is_sidecar(Path(p))]
        return sorted(hits, key=natural_key)
    if path.is_file() and path.suffix.lower() not in VIDEO_EXTS:
        lines = (ln.strip() for ln in path.read_text().splitlines())
        return [str(path.parent / ln) for ln in lines if ln and not ln.startswith("#")]
    if path.exists():
        return [spec]
    raise FileNotFoundError(f"batch input not found: {spec} (expected a folder, a glob, a list file or a video)")


def _unique_names(paths: list[str]) -> list[str]:
    """File stems, disambiguated by the parent folder and then a counter when two collide."""
    names: list[str] = []
    taken: set[str] = set()
    stems = [Path(p).stem for p in paths]
    for p, stem in zip(paths, stems):
        name = stem if stems.count(stem) == 1 else f"{Path(p).parent.name}_{stem}"
        base, i = name, 2
        while name in taken:
            name, i = f"{base}-{i}", i + 1
        taken.add(name)
        names.append(name)
    return names


def fingerprint(path: str) -> dict[str, int]:
    """Size and modification time (ns): cheap, and changes when a file is re-recorded or copied
    over. {} when the file is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def find_gt(video: str, gt_root: str | None) -> str | None:
    """Ground truth for ``video`` under ``gt_root``: ``<stem>_masks.mkv``, ``<stem>.mkv``,
    ``<stem>_masks/`` or ``<stem>/``. None without ``gt_root`` (sources.py then looks for a
    sidecar beside the video) or when nothing matches."""
    if not gt_root:
        return None
    stem = Path(video).stem
    for cand in (f"{stem}_masks.mkv", f"{stem}.mkv", f"{stem}_masks", stem):
        p = Path(gt_root) / cand
        if p.exists():
            return str(p.resolve())
    return None


def frame_count(path: str) -> int:
    """The container's frame count for the progress bar (0 when unknown or unreadable)."""
    try:
        import av

        with av.open(path) as c:
            if not c.streams.video:
                return 0
            st = c.streams.video[0]
            if st.frames:
                return int(st.frames)
            # Matroska and friends store no count: estimate it from duration x rate.
            rate = st.average_rate or st.guessed_rate
            seconds = float(st.duration * st.time_base) if st.duration else (c.duration or 0) / 1e6
            return int(round(seconds * float(rate))) if rate else 0
    except Exception:  # noqa: BLE001 - a bad file is reported by the worker, not here
        return 0


def plan_jobs(spec: str | Sequence[str], gt_root: str | None = None) -> list[VideoJob]:
    """All inputs as jobs with absolute paths (workers may run in another folder)."""
    paths = [str(Path(p).resolve()) for p in list_inputs(spec)]
    if not paths:
        raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTS)}) found for input={spec}")
    return [VideoJob(input=p, name=n, gt=find_gt(p, gt_root), fingerprint=fingerprint(p))
            for p, n in zip(paths, _unique_names(paths))]
