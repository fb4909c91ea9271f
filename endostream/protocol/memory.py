"""Process-wide malloc tuning for receivers of large frames (glibc only)."""

from __future__ import annotations

import ctypes
import os

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)
_buffers_retained: bool | None = None  # None: not tried yet


def retain_frame_buffers(trim_threshold: int = 256 << 20) -> bool:
    """Let this process reuse freed frame-sized heap memory instead of handing it back to
    the kernel. Returns True when in effect (Linux/glibc), False elsewhere (a no-op).

    libzmq allocates a fresh buffer for every large message it receives (a raw 640x480 frame
    is 0.9 MB, 1080p 6.2 MB) and frees it when the frame is dropped. With glibc's default
    dynamic thresholds those buffers are mmapped or trimmed back to the kernel, so every
    received frame page-faults its buffer in again and the kernel zeroes every page: on a
    loopback stream that cost more CPU than the TCP copy itself. Here mmap is used only for
    blocks above 32 MiB (a raw 4K frame, 24.9 MB, still comes from the heap) and at most
    ``trim_threshold`` bytes of free heap top are kept per arena. Process-wide and sticky
    (mallopt cannot be scoped); the receivers call it once unless ``retain_buffers=False``."""
    global _buffers_retained
    if _buffers_retained is not None:
        return _buffers_retained
    _buffers_retained = False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError, TypeError):  # not glibc / no confstr name
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _buffers_retained = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                             and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    return _buffers_retained


# Hot path: plain-int flags and a per-part loop instead of send_multipart/recv_multipart,


TRIM_AFTER_BYTES = 32 << 20  # releasing this much at once is worth a malloc_trim


def trim_heap() -> bool:
    """Give free heap memory back to the kernel now (glibc ``malloc_trim``). Frames freed in
    bulk (a reorder buffer released) would otherwise stay resident below the trim threshold
    that :func:`retain_frame_buffers` raised. False where not glibc."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (AttributeError, OSError, ValueError, TypeError):
        return False
