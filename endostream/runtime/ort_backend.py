"""ONNX Runtime backend: the CPU fast path, and on a GPU the TensorRT and CUDA execution
providers in a fallback order. No torch.

Threads are explicit (intra-op = ``threads``, inter-op 1, sequential execution) so inference
does not fight video decode/encode threads for the cores. When torch shares the process, set
OMP_WAIT_POLICY=PASSIVE so neither runtime's idle threads spin (see docs/RUNTIME.md).

Devices: ``cpu``; ``cuda[:i]`` (CUDA EP, then CPU for what it cannot run); ``gpu[:i]`` (what
``auto`` picks on a GPU: TensorRT EP, then CUDA EP, then CPU, keeping only the providers the
installed onnxruntime reports). ONNX Runtime places each node on the first provider in the list
that can run it, and if the TensorRT EP cannot even start (its libraries missing) it retries the
session with CUDA + CPU; ``providers`` records what the sessions really use.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from endostream.runtime.artifacts import ENCODE_OUTPUTS, cache_dir
from endostream.runtime.onnx_passes import graph_without

try:
    import onnxruntime as ort
except ImportError:  # reported when the backend is asked for, not at start-up
    ort = None

log = logging.getLogger(__name__)

TRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
FALLBACK_ORDER = (TRT_EP, CUDA_EP, CPU_EP)  # fastest first; CPU always last, it runs every node
SHORT_NAMES = {TRT_EP: "tensorrt", CUDA_EP: "cuda", CPU_EP: "cpu"}


def available_providers() -> list[str]:
    """What the installed onnxruntime was built with ([] without onnxruntime). Compiled-in, not
    proof that the provider's libraries load: the TensorRT EP may still fail at session start."""
    return list(ort.get_available_providers()) if ort is not None else []


def cuda_available() -> bool:
    return CUDA_EP in available_providers()


def gpu_providers_available() -> bool:
    """The installed onnxruntime has a GPU provider (TensorRT or CUDA EP)."""
    return any(p in available_providers() for p in (TRT_EP, CUDA_EP))


def provider_order(available: Sequence[str], device: str) -> list[str]:
    """The execution providers to ask for, best first, for ``device`` (``cpu``, ``cuda[:i]``,
    ``gpu[:i]``), keeping only those in ``available``. Pure: tested without a GPU."""
    kind = device.split(":")[0]
    wanted = {"cpu": (CPU_EP,), "cuda": (CUDA_EP, CPU_EP), "gpu": FALLBACK_ORDER}.get(kind)
    if wanted is None:
        raise ValueError(f"onnxruntime device must be cpu, cuda[:i] or gpu[:i], got {device!r}")
    order = [p for p in wanted if p in available]
    if kind == "cuda" and CUDA_EP not in order:
        raise RuntimeError("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu) "
                           "- use device=cpu or another backend")
    if kind == "gpu" and not any(p in order for p in (TRT_EP, CUDA_EP)):
        raise RuntimeError("onnxruntime has neither the TensorRT nor the CUDA execution provider here "
                           "(install onnxruntime-gpu) - use device=cpu or another backend")
    if CPU_EP not in order:
        raise RuntimeError(f"onnxruntime reports no CPUExecutionProvider (available: {list(available)})")
    return order


def profile_shapes(shapes: dict[str, list[Any]], inputs: Sequence[str], batch: int) -> str:
    """TensorRT EP profile string for ``inputs`` at one batch size: ``image:4x3x256x256,...``."""
    return ",".join(f"{n}:" + "x".join(str(batch if d == "batch" else d) for d in shapes[n]) for n in inputs)


def graph_inputs(path: str | Path) -> tuple[str, ...]:
    """The input names an ONNX graph declares (read without building a session)."""
    import onnx

    return tuple(i.name for i in onnx.load(str(path), load_external_data=False).graph.input)


def trt_ep_cache() -> Path:
    """The TensorRT EP's engine/timing cache folder, one per onnxruntime + tensorrt version: an
    engine from another TensorRT version must never be loaded (ORT keys its files by graph only)."""
    try:
        trt = importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        trt = "system"  # libnvinfer from the system, version unknown without importing it
    return cache_dir() / "ort-trt" / f"ort{ort.__version__ if ort else 'none'}-trt{trt}"


def provider_options(order: Sequence[str], device_id: int, shapes: dict[str, list[Any]] | None,
                     inputs: Sequence[str], max_batch: int) -> list[Any]:
    """``order`` with per-provider options: the TensorRT EP gets an engine + timing cache and one
    profile over batch 1..max_batch (so a larger batch never triggers a rebuild mid-stream);
    precision comes from the graph (FP16 graphs from ``export precision=fp16``), not from a flag."""
    out: list[Any] = []
    for p in order:
        if p == TRT_EP:
            root = trt_ep_cache()
            opts: dict[str, Any] = {"device_id": device_id, "trt_engine_cache_enable": True,
                                    "trt_engine_cache_path": str(root), "trt_timing_cache_enable": True,
                                    "trt_timing_cache_path": str(root)}
            if shapes is not None:
                opts.update(trt_profile_min_shapes=profile_shapes(shapes, inputs, 1),
                            trt_profile_opt_shapes=profile_shapes(shapes, inputs, max_batch),
                            trt_profile_max_shapes=profile_shapes(shapes, inputs, max_batch))
            out.append((p, opts))
        elif p == CUDA_EP:
            out.append((p, {"device_id": device_id}))
        else:
            out.append(p)
    return out


def session_options(threads: int, spin: bool = False) -> Any:
    """Explicit threads; spinning only when asked. The encode and denoise sessions each own a
    thread pool, and a pool that spins after its run steals a core from the other one. Measured
    on the 2-core VM, whole Segmenter call on Kvasir frames, K=2, two runs each: 24.1 / 32.8 ms
    p50 spinning, 15.5 / 16.4 ms not. With K=0 only the encode session runs, and its ~100 small
    EfficientNet ops each wake sleeping threads: spinning measured 30.9 vs 36.1 ms per encode at
    320 (docs/RUNTIME.md), so ``load_segmenter`` turns it on for the encode session when nothing
    else runs beside it."""
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


class OrtBackend:
    """Runs ``<stem>.encode.onnx`` and ``<stem>.denoise.onnx``; returns numpy float32 arrays.

    ``sidecar`` (the export's JSON) gives the TensorRT EP its profile shapes; ``max_batch`` is
    the largest batch that profile covers (the CPU and CUDA providers take any batch). ``spin``
    lets the encode session's threads spin between operators (see ``session_options``); the
    denoise session never spins. ``feat=False`` (K=0 without uncertainty samples: nothing runs
    the denoiser) drops the encode graph's ``feat`` output and all it alone needs
    (``onnx_passes.drop_outputs``); ``encode`` then returns no ``feat``."""

    def __init__(self, encode_path: str | Path, denoise_path: str | Path, config: dict[str, Any], *,
                 threads: int = 2, device: str = "cpu", max_batch: int = 1,
                 sidecar: dict[str, Any] | None = None, spin: bool = False, feat: bool = True) -> None:
        if ort is None:
            raise RuntimeError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)")
        order = provider_order(available_providers(), device)
        device_id = int(device.split(":")[1]) if ":" in device else 0
        shapes = (sidecar or {}).get("shapes") or {}
        sessions = []
        for part, path in (("encode", encode_path), ("denoise", denoise_path)):
            # Profiles name only the inputs a graph declares: a network without the temporal
            # module exports without memory/valid.
            opts = provider_options(order, device_id, shapes.get(part), graph_inputs(path) if TRT_EP in order else (),
                                    max_batch)
            so = session_options(threads, spin=bool(spin) and part == "encode")
            graph: str | bytes = str(path) if feat or part != "encode" else graph_without(path, {"feat"})
            sessions.append(ort.InferenceSession(graph, so, providers=opts))
        self.encode_session, self.denoise_session = sessions
        # Feed only what the graph declares (the same temporal-free networks).
        self._encode_inputs = tuple(i.name for i in self.encode_session.get_inputs())
        self._encode_outputs = [o for o in ENCODE_OUTPUTS if feat or o != "feat"]  # the run's list, built once
        self.providers = list(self.encode_session.get_providers())
        if self.providers[0] != order[0]:
            log.warning("onnxruntime: %s did not start, running on %s", order[0], self.providers)
        self.device = device
        first = SHORT_NAMES.get(self.providers[0], self.providers[0])
        self.name = "onnxruntime" if first == "cpu" else f"onnxruntime-{first}"
        self.config = dict(config)
        self.threads = int(threads)
        self.max_batch = int(max_batch)

    def encode(self, image: np.ndarray, memory: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
        given = {"image": image, "memory": memory, "valid": valid}
        feeds = {name: _f32(given[name]) for name in self._encode_inputs}
        return dict(zip(self._encode_outputs, self.encode_session.run(self._encode_outputs, feeds)))

    def denoise(self, feat: Any, noisy_mask: Any, t: np.ndarray) -> np.ndarray:
        feeds = {"feat": _f32(feat), "noisy_mask": _f32(noisy_mask), "t": _f32(np.asarray(t).reshape(-1))}
        return self.denoise_session.run(["logits"], feeds)[0]

    def from_numpy(self, x: np.ndarray) -> np.ndarray:
        return x

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)


def _f32(x: Any) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)
