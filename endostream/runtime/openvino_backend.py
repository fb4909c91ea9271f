"""OpenVINO backend: the exported ONNX graphs on the CPU, in bf16 where the processor has bf16
units and float32 otherwise. No torch.

Same graphs as ONNX Runtime (``polyp.encode.onnx``, ``polyp.denoise.onnx``): OpenVINO reads the
ONNX file itself, and ``INFERENCE_PRECISION_HINT`` decides the arithmetic (weights and I/O stay
float32; the plugin converts inside). ``precision``: ``auto`` (bf16 where ``cpu_caps`` finds the
units and OpenVINO reports BF16, else f32), ``bf16`` (falls back to f32 with a warning where the
units are absent, so a config written on one machine runs on another), ``fp32``, or ``int8``: the
registry then hands over the calibrated QDQ encode graph (``runtime.quantize``), whose int8 layers
OpenVINO runs with its int8 kernels (VNNI / AMX-INT8, or AVX2 / AVX-512 without them: the weights
are 7-bit, so those cannot saturate) and the rest as ``auto``. Under ``auto`` the registry picks the
INT8 graph where it is current and kept by its validation check (``registry.usable_int8``).

One compiled model per batch size 1..``max_batch``, each with a static shape, all compiled when
the backend is built (about 0.5 s each): a static graph ran 15-20 % faster than one dynamic-batch
graph at batch 1 and 2, and a compile inside the live stream had cost a few frames their masks.
Each keeps one infer request; inputs and outputs are shared with numpy (no copy, no allocation
per call), so an ``encode`` result stays valid only until the next ``encode`` call of that batch
size (the Segmenter reads it before the next frame, like the CUDA-graph backends' buffers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from endostream.runtime.artifacts import ENCODE_OUTPUTS, cache_dir
from endostream.runtime.cpu_caps import CpuCaps, probe

try:
    import openvino as ov
except ImportError:  # reported when the backend is asked for, not at start-up
    ov = None

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32", "int8")
_OV_TYPE = {"bf16": "bf16", "fp32": "f32"}


def resolve_precision(asked: str, caps: CpuCaps, ov_caps: list[str]) -> str:
    """The precision that runs: ``asked`` where the processor (``caps``) and OpenVINO's CPU plugin
    (``ov_caps``, its OPTIMIZATION_CAPABILITIES) both support it, else fp32. Pure."""
    if asked not in PRECISIONS:
        raise ValueError(f"openvino precision must be one of {', '.join(PRECISIONS)}, got {asked!r}")
    if asked == "int8":  # the graph is quantized (runtime.quantize); the rest runs as auto
        return "int8"
    bf16_ok = caps.bf16 and "BF16" in ov_caps
    if asked == "fp32" or (asked == "auto" and not bf16_ok):
        return "fp32"
    if not bf16_ok:
        log.warning("openvino: bf16 asked but this CPU (%s) has no bf16 units (%s): running float32",
                    caps.model, "flags forced" if caps.forced else "no avx512_bf16/amx_bf16")
        return "fp32"
    return "bf16"


class _Graph:
    """One ONNX graph, compiled per batch size, each with its own infer request."""

    def __init__(self, core: Any, path: str | Path, config: dict[str, Any], drop: frozenset[str] = frozenset()) -> None:
        self.core, self.config = core, config
        model = core.read_model(str(path))
        if drop:  # a model of the other results only: what only the dropped ones needed is never compiled
            unknown = set(drop) - {o.get_any_name() for o in model.outputs}
            if unknown:
                raise ValueError(f"{path} has no output {', '.join(sorted(unknown))}")
            model = ov.Model([r for r in model.get_results() if not r.output(0).get_names() & set(drop)],
                             model.get_parameters(), model.get_friendly_name())
        self.model = model
        self.inputs = tuple(p.get_any_name() for p in self.model.inputs)
        self.outputs = tuple(p.get_any_name() for p in self.model.outputs)
        self._requests: dict[int, Any] = {}

    def request(self, batch: int) -> Any:
        req = self._requests.get(batch)
        if req is None:
            model = self.model.clone()
            model.reshape({p.get_any_name(): [batch, *[d.get_length() for d in list(p.get_partial_shape())[1:]]]
                           for p in model.inputs})
            req = self.core.compile_model(model, "CPU", self.config).create_infer_request()
            self._requests[batch] = req
        return req

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = int(next(iter(feeds.values())).shape[0])
        res = self.request(batch).infer(feeds, share_inputs=True, share_outputs=True)
        return {name: res[name] for name in self.outputs}


class OpenVinoBackend:
    """Runs ``<stem>.encode.onnx`` and ``<stem>.denoise.onnx`` with OpenVINO on the CPU; returns
    numpy float32 arrays (views of the request's output tensors)."""

    def __init__(self, encode_path: str | Path, denoise_path: str | Path, config: dict[str, Any], *,
                 threads: int = 2, precision: str = "auto", max_batch: int = 1, pin: bool = False,
                 caps: CpuCaps | None = None, feat: bool = True) -> None:
        if ov is None:
            raise RuntimeError("openvino is not installed: pip install openvino")
        core = ov.Core()
        self.cache = _compile_cache(core)
        self.caps = caps if caps is not None else probe()
        ov_caps = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        self.precision = resolve_precision(str(precision), self.caps, ov_caps)
        # One stream of ``threads`` threads: latency, not throughput (the live worker calls one
        # frame batch at a time). ``pin`` binds those threads to cores, OpenVINO's default on Linux;
        # off here: a pinned thread cannot move off a core that the display or another process
        # holds (live pipeline on the loaded 2-core machine, encoder p50 20.2 ms pinned vs 14.2 ms
        # not, docs/RUNTIME.md).
        # INT8: the quantized layers run int8 and what stays float (blocks 0-1, the QDQ graph's other
        # ops, the denoise graph) float32 on every CPU: the arithmetic export's check scored, so its
        # verdict holds wherever the graph runs. In bf16 they cost the AMX Xeon 0.0011 more Dice
        # (0.8837 against 0.8848, the same as the AVX2 EPYC's) for about 0.4 ms (tools/int8_float_precision.py).
        arith = self.precision if self.precision != "int8" else "fp32"
        props = {"INFERENCE_PRECISION_HINT": _OV_TYPE[arith], "INFERENCE_NUM_THREADS": max(1, int(threads)),
                 "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": bool(pin)}
        # feat=False: as OrtBackend's (K=0: the denoiser's conditioning is never computed)
        self._encode = _Graph(core, encode_path, props, drop=frozenset() if feat else frozenset({"feat"}))
        self._denoise = _Graph(core, denoise_path, props)
        for batch in range(1, max(1, int(max_batch)) + 1):  # never a compile mid-stream
            self._encode.request(batch)
        self.name = f"openvino-{self.precision}"
        self.device = "cpu"
        self.config = dict(config)
        self.threads = int(threads)
        self.max_batch = int(max_batch)

    def encode(self, image: np.ndarray, memory: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
        given = {"image": image, "memory": memory, "valid": valid}
        out = self._encode.run({name: _f32(given[name]) for name in self._encode.inputs})
        return {k: out[k] for k in ENCODE_OUTPUTS if k in out}

    def denoise(self, feat: Any, noisy_mask: Any, t: np.ndarray) -> np.ndarray:
        feeds = {"feat": _f32(feat), "noisy_mask": _f32(noisy_mask), "t": _f32(np.asarray(t).reshape(-1))}
        return self._denoise.run(feeds)["logits"]

    def from_numpy(self, x: np.ndarray) -> np.ndarray:
        return x

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)


def _compile_cache(core: Any) -> Path | None:
    """Let OpenVINO keep compiled models in ``cache_dir()/openvino`` (keyed by OpenVINO on the
    model, its properties and the CPU, so a changed graph compiles afresh). The INT8 graph's four
    batch sizes took 4.2 s to compile and 1.3 s from the cache on the AVX2 EPYC: a consumer
    restarted mid-procedure shows masks again that much sooner. Without a writable cache folder
    every start compiles, said in one line."""
    folder = cache_dir() / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(folder)})
    except (OSError, RuntimeError) as exc:
        log.warning("openvino: no compiled-model cache in %s (%s): every start compiles the graphs", folder, exc)
        return None
    return folder


def _f32(x: Any) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)
