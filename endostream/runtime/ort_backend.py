"""ONNX Runtime backend: the CPU fast path (and the CUDA provider where installed). No torch.

Threads are explicit (intra-op = ``threads``, inter-op 1, sequential execution) so inference
does not fight video decode/encode threads for the cores. When torch shares the process, set
OMP_WAIT_POLICY=PASSIVE so neither runtime's idle threads spin (see docs/RUNTIME.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from endostream.runtime.artifacts import ENCODE_OUTPUTS

try:
    import onnxruntime as ort
except ImportError:  # reported when the backend is asked for, not at start-up
    ort = None


def cuda_available() -> bool:
    return ort is not None and "CUDAExecutionProvider" in ort.get_available_providers()


def session_options(threads: int) -> Any:
    """Explicit threads, no spinning: the encode and denoise sessions each own a thread pool, and
    a pool that spins after its run steals a core from the other one. Measured on the 2-core
    VM, whole Segmenter call on Kvasir frames, K=2, two runs each: 24.1 / 32.8 ms p50 spinning,
    15.5 / 16.4 ms not; K=0 unchanged (11-12 ms)."""
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


class OrtBackend:
    """Runs ``<stem>.encode.onnx`` and ``<stem>.denoise.onnx``; returns numpy float32 arrays."""

    def __init__(self, encode_path: str | Path, denoise_path: str | Path, config: dict[str, Any], *,
                 threads: int = 2, device: str = "cpu") -> None:
        if ort is None:
            raise RuntimeError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)")
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if not cuda_available():
                raise RuntimeError("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu) "
                                   "- use device=cpu or another backend")
            idx = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
        so = session_options(threads)
        self.encode_session = ort.InferenceSession(str(encode_path), so, providers=providers)
        self.denoise_session = ort.InferenceSession(str(denoise_path), so, providers=providers)
        # A network without the temporal module ignores memory/valid, and the exporter drops
        # unused graph inputs: feed only what the graph declares.
        self._encode_inputs = tuple(i.name for i in self.encode_session.get_inputs())
        self.device = device
        self.name = "onnxruntime-cuda" if device.startswith("cuda") else "onnxruntime"
        self.config = dict(config)
        self.threads = int(threads)

    def encode(self, image: np.ndarray, memory: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
        given = {"image": image, "memory": memory, "valid": valid}
        feeds = {name: _f32(given[name]) for name in self._encode_inputs}
        return dict(zip(ENCODE_OUTPUTS, self.encode_session.run(list(ENCODE_OUTPUTS), feeds)))

    def denoise(self, feat: Any, noisy_mask: Any, t: np.ndarray) -> np.ndarray:
        feeds = {"feat": _f32(feat), "noisy_mask": _f32(noisy_mask), "t": _f32(np.asarray(t).reshape(-1))}
        return self.denoise_session.run(["logits"], feeds)[0]

    def from_numpy(self, x: np.ndarray) -> np.ndarray:
        return x

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)


def _f32(x: Any) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)
