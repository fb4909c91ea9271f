"""The live model in its own process (``model.process=true``): frames go in and masks come back
through shared memory, so the consumer's display work (decode, overlay, encode, viewer) and the
model never take the same interpreter lock, and the model's threads can be kept apart.

:class:`ProcessSegmenter` has the segmenter's surface (``segment``, ``segment_batch``, ``reset``,
``info``, ``max_batch``, ``steps``) and is a drop-in for :func:`load_segmenter`'s result. The
parent owns both shared-memory blocks (frames in, probabilities and masks out), so a child that
dies leaves nothing behind; the next call starts a fresh child (its streams' memory starts over)
and the call that found it dead fails with one line, costing only its own frames.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Sequence
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from endostream.inference.segmenter import check_images
from endostream.types import Prediction

START_TIMEOUT_S = 300.0  # loading (and a first export of) the model, on a loaded 2-core machine
CALL_TIMEOUT_S = 60.0  # one model call; past it the child is taken as hung and replaced


class InferenceProcessError(RuntimeError):
    """The inference process died, hung or could not load its model."""


def _out_bytes(h: int, w: int, uncertainty: bool) -> int:
    return h * w * (4 + 1 + (4 if uncertainty else 0))


class _Block:
    """A parent-owned shared-memory block that grows (by replacement) when a call needs more."""

    def __init__(self) -> None:
        self.shm: SharedMemory | None = None

    def ensure(self, size: int) -> SharedMemory:
        if self.shm is None or self.shm.size < size:
            self.close()
            self.shm = SharedMemory(create=True, size=max(size, 1 << 20))
        return self.shm

    def close(self) -> None:
        if self.shm is not None:
            self.shm.close()
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass
            self.shm = None


class ProcessSegmenter:
    """A segmenter (``load_segmenter(**kwargs)``) served by a child process; see the module."""

    def __init__(self, kwargs: dict[str, Any], *, start_timeout_s: float = START_TIMEOUT_S,
                 call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._kwargs = dict(kwargs)
        self._uncertainty = int(self._kwargs.get("uncertainty_samples") or 0) >= 2
        self.start_timeout_s, self.call_timeout_s = start_timeout_s, call_timeout_s
        self._ctx = mp.get_context("spawn")  # never fork a process that holds threads and sockets
        self._proc: Any = None
        self._conn: Any = None
        self._in, self._out = _Block(), _Block()
        self.restarts = 0
        self.info: dict[str, Any] = {}
        self.max_batch = 1
        self.steps = self.warm_steps = 0
        self._start()

    # ---- the child's life
    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=serve, args=(child, self._kwargs), name="endostream-inference", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        if not parent.poll(self.start_timeout_s):
            self._kill()
            raise InferenceProcessError(f"inference process did not load its model in {self.start_timeout_s:.0f} s")
        try:
            msg = parent.recv()
        except EOFError:
            code = self._kill()
            raise InferenceProcessError(f"inference process exited while loading its model (exit code {code})") from None
        if msg[0] != "ready":
            self._kill()
            raise _remote_error(msg)  # e.g. FileNotFoundError: weights file not found
        _, info, self.max_batch, self.steps, self.warm_steps = msg
        self.info = {**info, "process": proc.pid, "process_restarts": self.restarts}

    def _kill(self) -> int | None:
        proc, self._proc = self._proc, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if proc is None:
            return None
        if proc.is_alive():
            proc.kill()
        proc.join(5.0)
        return proc.exitcode

    def _dead(self, what: str) -> InferenceProcessError:
        code = self._kill()
        return InferenceProcessError(f"inference process {what} (exit code {code}); a fresh one starts on the "
                                     f"next frame (streams' memory starts over)")

    def close(self) -> None:
        """Stop the child (it finishes nothing further) and free the shared memory."""
        if self._conn is not None:
            try:
                self._conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            if self._proc is not None:
                self._proc.join(5.0)
        self._kill()
        self._in.close()
        self._out.close()

    # ---- the segmenter's surface
    def segment(self, image_bgr: np.ndarray, stream_id: int = 0) -> Prediction:
        return self.segment_batch([image_bgr], [stream_id])[0]

    def segment_batch(self, images_bgr: Sequence[np.ndarray], stream_ids: Sequence[int]) -> list[Prediction]:
        check_images(images_bgr, stream_ids)
        if self._proc is None:  # the last call found it dead: start over
            self.restarts += 1
            self._start()
        # (offset, h, w) of each frame in the input block and of its arrays in the output block
        frames, slots, in_bytes, out_bytes = [], [], 0, 0
        for im in images_bgr:
            h, w = im.shape[:2]
            frames.append((in_bytes, h, w))
            slots.append((out_bytes, h, w))
            in_bytes += int(im.nbytes)
            out_bytes += _out_bytes(h, w, self._uncertainty)
        inp = self._in.ensure(in_bytes)
        for im, (offset, h, w) in zip(images_bgr, frames):
            np.ndarray((h, w, 3), np.uint8, inp.buf, offset)[...] = im
        out = self._out.ensure(out_bytes)
        try:
            self._conn.send(("segment", inp.name, frames, [int(s) for s in stream_ids], out.name, slots))
            if not self._conn.poll(self.call_timeout_s):
                raise self._dead(f"did not answer within {self.call_timeout_s:.0f} s and was stopped")
            msg = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            raise self._dead("died") from None
        if msg[0] != "ok":
            raise _remote_error(msg)
        return [self._prediction(out, slot, meta) for slot, meta in zip(slots, msg[1])]

    def _prediction(self, out: SharedMemory, slot: tuple[int, int, int], meta: dict[str, Any]) -> Prediction:
        """One frame's arrays, copied out of the block (the next call reuses it): prob (float32),
        mask (bool) and, with uncertainty on, the spread (float32), back to back from the offset."""
        off, h, w = slot
        n = h * w
        prob = np.ndarray((h, w), np.float32, out.buf, off).copy()
        mask = np.ndarray((h, w), np.bool_, out.buf, off + 4 * n).copy()
        unc = np.ndarray((h, w), np.float32, out.buf, off + 5 * n).copy() if meta["uncertainty"] else None
        box = tuple(meta["box"]) if meta["box"] is not None else None
        return Prediction(prob=prob, mask=mask, presence=meta["presence"], box=box, gated=meta["gated"],
                          stages_ns=meta["stages_ns"], uncertainty=unc)

    def reset(self, stream_id: int | None = None) -> None:
        if self._conn is None:
            return  # no child: the next one starts with no memory anyway
        try:
            self._conn.send(("reset", stream_id))
        except (BrokenPipeError, OSError):
            self._kill()


def _remote_error(msg: tuple) -> Exception:
    """The child's exception, re-raised here with its type where it is a plain one."""
    _, kind, text = msg
    cls = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError, "TypeError": TypeError}.get(kind)
    return cls(text) if cls else InferenceProcessError(f"{kind}: {text}")


def _one_line(exc: BaseException) -> tuple[str, str, str]:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ("error", type(exc).__name__, text)


def serve(conn: Any, kwargs: dict[str, Any]) -> None:
    """The child: load the model, then answer calls until told to stop or the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us in order
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from endostream.inference.segmenter import load_segmenter

    try:
        seg = load_segmenter(**kwargs)
    except Exception as exc:  # noqa: BLE001 - said to the parent in one line
        conn.send(_one_line(exc))
        return
    conn.send(("ready", dict(seg.info), int(getattr(seg, "max_batch", 1)), int(getattr(seg, "steps", 0)),
               int(getattr(seg, "warm_steps", 0) or 0)))
    blocks: dict[str, SharedMemory] = {}  # role ("in" | "out") -> the parent's current block

    def attach(role: str, name: str) -> SharedMemory:
        shm = blocks.get(role)
        if shm is None or shm.name.lstrip("/") != name.lstrip("/"):
            if shm is not None:  # the parent replaced a block that grew: let the old one go
                try:
                    shm.close()
                except BufferError:
                    pass  # a view still holds it: freed with the view
            shm = blocks[role] = SharedMemory(name=name)
        return shm

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if msg[0] == "stop":
            return
        if msg[0] == "reset":
            seg.reset(msg[1])
            continue
        _, in_name, frames, sids, out_name, slots = msg
        try:
            inp = attach("in", in_name)
            images = [np.ndarray((h, w, 3), np.uint8, inp.buf, off) for off, h, w in frames]
            preds = seg.segment_batch(images, sids)
            del images
            out = attach("out", out_name)
            metas = []
            for (off, h, w), p in zip(slots, preds):
                n = h * w
                np.ndarray((h, w), np.float32, out.buf, off)[...] = p.prob
                np.ndarray((h, w), np.bool_, out.buf, off + 4 * n)[...] = p.mask
                if p.uncertainty is not None:
                    np.ndarray((h, w), np.float32, out.buf, off + 5 * n)[...] = p.uncertainty
                metas.append({"presence": float(p.presence), "box": p.box, "gated": bool(p.gated),
                              "stages_ns": dict(p.stages_ns), "uncertainty": p.uncertainty is not None})
            conn.send(("ok", metas))
        except Exception as exc:  # noqa: BLE001 - a bad frame costs its call, not the process
            conn.send(_one_line(exc))
