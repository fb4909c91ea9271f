"""Backend construction by name. Heavy imports (torch, onnxruntime, tensorrt) happen only
for the backend asked for, so the ONNX Runtime path runs without torch."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Callable

from endostream.fileutil import file_sha256
from endostream.runtime.artifacts import cache_dir, check_artifacts, graph_paths

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
# Options each backend takes; max_batch everywhere (torch and the ORT CPU/CUDA providers take any
# batch, so there it only sizes the TensorRT EP's profile or nothing at all).
OPTIONS = {"torch": {"precision", "cuda_graphs", "compile", "max_batch"},
           "onnxruntime": {"precision", "max_batch", "spin", "feat"},
           "openvino": {"precision", "max_batch", "pin", "feat"},
           "tensorrt": {"precision", "cuda_graphs", "max_batch", "opt_batch", "engine_cache"}}


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver is loaded. Checked without importing torch (``auto`` on a CPU machine
    must stay torch-free)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def resolve_graphs(weights: str | Path, precision: str = "fp32") -> tuple[dict[str, Path], dict[str, Any]]:
    """ONNX graphs (``precision`` fp32 or fp16) for ``weights``: shipped beside it, else cached,
    else exported now (needs torch) beside it or, if that folder is read-only, into the cache.
    Returns (paths, sidecar)."""
    weights = Path(weights)
    sha = file_sha256(weights)
    side, reason = check_artifacts(weights, sha, precision=precision)
    if side is not None:
        return graph_paths(weights, precision=precision), side
    cached = cache_dir() / "onnx" / sha[:16]
    side, _ = check_artifacts(weights, sha, cached, precision)
    if side is not None:
        return graph_paths(weights, cached, precision), side
    if precision == "int8":  # calibration needs the training data: never done behind the user's back
        raise RuntimeError(f"INT8 graph for {weights} is unusable ({reason}): run `endostream export "
                           f"weights={weights} precision=int8` where the training data is")
    if not has_module("torch"):
        raise RuntimeError(f"ONNX graphs for {weights} are unusable ({reason}) and torch is not installed "
                           f"to export them: run `endostream export weights={weights} precision={precision}` "
                           "where torch is")
    from endostream.runtime.export import export_onnx

    out = weights.parent if os.access(weights.parent, os.W_OK) else cached
    side = export_onnx(weights, out, precision=precision)
    return graph_paths(weights, out, precision), side


def usable_int8(weights: str | Path, asked: str = "auto") -> dict[str, Any] | None:
    """The INT8 graphs of ``weights`` (paths and sidecar) where OpenVINO may run them: exported
    from these weights, their validation check kept, and (for ``auto``) a processor on which they
    compute what the check measured: int8 dot-product units (VNNI, AMX), or any x86 CPU where the
    weights are 7-bit (``quantize.WEIGHT_BITS``: no 16-bit sums to saturate). Else None, with one
    line saying why when INT8 was asked for by name or the graph is there but stale."""
    from endostream.runtime.cpu_caps import probe

    caps = probe()
    side, reason = check_artifacts(weights, precision="int8")
    why = reason if side is None else ("" if (side.get("validation") or {}).get("kept") else
                                       f"its validation check was not kept ({side.get('validation')})")
    if why:
        if asked == "int8" or "sha256 differs" in why or "does not match" in why:
            log.warning("openvino int8 unusable: %s; running the auto precision instead (bf16 where the CPU has "
                        "the units; endostream export weights=%s precision=int8)", why, weights)
        return None
    exact = caps.int8 or saturation_free(side)
    if asked == "auto" and not exact:
        return None  # an 8-bit-weight graph without VNNI: its sums saturate; bf16 / float32 instead
    if not exact:
        log.warning("openvino int8 with 8-bit weights on a CPU without int8 dot-product units (%s): its sums "
                    "saturate and the masks lose accuracy (re-run endostream export weights=%s precision=int8 "
                    "for 7-bit weights)", caps.model, weights)
    return {**graph_paths(weights, precision="int8"), "sidecar": side}


def saturation_free(side: dict[str, Any]) -> bool:
    """Whether an INT8 sidecar's weights are 7-bit (``runtime.quantize``): exact on any x86 int8 path."""
    return int((side.get("calibration") or {}).get("weight_bits", 8)) <= 7


def auto_choice(nvidia_gpu: bool, has_tensorrt: bool, has_torch: bool, ort_providers: list[str],
                torch_cuda: Callable[[], bool]) -> tuple[str, str]:
    """(backend, device) for ``auto`` from the facts of a machine; pure, so every branch is
    tested on any machine. Preference: TensorRT (its module and cuda-python's), ONNX Runtime on
    its GPU providers (device ``gpu``: TensorRT EP, then CUDA EP, then CPU, as installed), torch
    CUDA, ONNX Runtime CPU. ``torch_cuda`` is asked last, so a CPU machine never imports torch."""
    if nvidia_gpu:
        if has_tensorrt and has_torch:
            return "tensorrt", "cuda"
        if any(p in ort_providers for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")):
            return "onnxruntime", "gpu"
        if has_torch and torch_cuda():
            return "torch", "cuda"
    return "onnxruntime", "cpu"


def auto_backend(tensorrt: bool = True) -> tuple[str, str]:
    """``auto_choice`` for this machine (``tensorrt=False``: as if TensorRT were absent)."""
    def torch_cuda() -> bool:
        import torch

        return bool(torch.cuda.is_available())

    gpu = has_nvidia_gpu()
    providers: list[str] = []
    if gpu:
        from endostream.runtime.ort_backend import available_providers

        providers = available_providers()
    has_trt = tensorrt and has_module("tensorrt") and has_module("cuda")  # cuda-python: its device memory
    choice = auto_choice(gpu, has_trt, has_module("torch"), providers, torch_cuda)
    if choice == ("onnxruntime", "cpu"):  # no GPU: the fastest path this processor has
        from endostream.runtime.cpu_caps import choose_cpu_path, has_openvino, probe

        return choose_cpu_path(probe(), has_openvino())[0], "cpu"
    return choice


def create_backend(name: str, weights: str | Path, *, threads: int = 2, device: str = "cpu",
                   model: Any = None, **options: Any) -> Any:
    """Return a backend (see ``runtime.base.Backend``).

    ``auto`` ignores ``device`` (it picks the fastest present). ``model`` short-circuits loading
    for the torch backend (training-time validation uses the live network). ``options`` go to
    the backend: torch ``precision`` (fp32|fp16|bf16), ``cuda_graphs``, ``compile``; tensorrt
    ``precision``, ``cuda_graphs``, ``max_batch``, ``engine_cache``; onnxruntime ``precision``
    (fp32|fp16: which exported graphs it runs) and ``max_batch`` (the TensorRT EP's profile).
    An option the named backend does not take is an error; under ``auto``, which may pick any
    backend, it is dropped (e.g. torch's ``cuda_graphs`` when ONNX Runtime is chosen).
    """
    if name == "auto":
        name, device = auto_backend()
        if name == "tensorrt":
            trt_options = {k: v for k, v in options.items() if k in OPTIONS[name]}
            if trt_options.get("precision") not in (None, "fp32", "fp16"):
                trt_options.pop("precision")
            try:
                return create_backend(name, weights, threads=threads, device=device, **trt_options)
            except (RuntimeError, OSError) as exc:  # no engine could be built or loaded here
                name, device = auto_backend(tensorrt=False)
                log.warning("auto: TensorRT unusable (%s); using %s on %s", str(exc).splitlines()[0], name, device)
        options = {k: v for k, v in options.items() if k in OPTIONS[name]}
        if name == "openvino" and options.get("precision") not in (None, "fp32", "bf16", "int8"):
            options.pop("precision")  # its own default (auto: bf16 where the CPU has the units)
        elif name not in ("torch", "openvino") and options.get("precision") not in (None, "fp32", "fp16"):
            options.pop("precision")  # e.g. torch's bf16: the graph backends have fp32/fp16 only
    unknown = sorted(set(options) - OPTIONS.get(name, set(options)))
    if unknown:
        raise ValueError(f"backend {name} takes no option {', '.join(unknown)}; it takes {', '.join(sorted(OPTIONS[name]))}")
    if name == "torch":
        from endostream.model.io import load_weights
        from endostream.runtime.torch_backend import TorchBackend

        net = model if model is not None else load_weights(weights)[0]
        options.pop("max_batch", None)  # any batch: nothing to size in advance
        return TorchBackend(net, device=device, threads=threads, **options)
    if name == "onnxruntime":
        from endostream.runtime.ort_backend import OrtBackend

        precision = str(options.pop("precision", "fp32"))
        paths, side = resolve_graphs(weights, precision)
        return OrtBackend(paths["encode"], paths["denoise"], side["config"], threads=threads, device=device,
                          sidecar=side, **options)
    if name == "openvino":
        from endostream.runtime.openvino_backend import OpenVinoBackend

        if device != "cpu":
            raise ValueError(f"backend openvino runs on device=cpu only, got device={device!r}")
        if str(options.get("precision", "auto")) in ("auto", "int8"):
            int8 = usable_int8(weights, asked=str(options.get("precision", "auto")))
            options["precision"] = "int8" if int8 else "auto"
            if int8:
                return OpenVinoBackend(int8["encode"], int8["denoise"], int8["sidecar"]["config"], threads=threads,
                                       **options)
        paths, side = resolve_graphs(weights)  # the float32 graphs; OpenVINO picks the arithmetic
        return OpenVinoBackend(paths["encode"], paths["denoise"], side["config"], threads=threads, **options)
    if name == "tensorrt":
        from endostream.runtime.trt_backend import TensorRTBackend, graph_precision, import_tensorrt

        precision = str(options.get("precision", "fp16"))
        paths, side = resolve_graphs(weights, graph_precision(import_tensorrt(), precision))
        return TensorRTBackend(paths["encode"], paths["denoise"], side, device=device, **options)
    raise ValueError(f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)}")
