"""What the processor can do, and which CPU inference path that makes fastest. No torch.

The path is a pure function of the processor's flags (``choose_cpu_path``), so every branch is
tested on any machine; ``ENDOSTREAM_CPU_FLAGS`` replaces the detected flags (a space-separated
list, e.g. ``avx2 fma``) to force the probe, which is how a CPU without bf16 units is checked on
one that has them.

Why this order (docs/RUNTIME.md, measured with ``tools/bench_cpu_paths.py``): where the CPU has
bf16 dot-product units (AVX512_BF16 on AMD Zen 4 and Intel Cooper Lake, AMX-BF16 on Sapphire
Rapids and later) OpenVINO running the encode graph in bf16 was the fastest path at the same
validation Dice. Without those units OpenVINO runs float32: measured on an AVX2-only EPYC (no
AVX-512, bf16 or VNNI) it was faster than ONNX Runtime float32 on the whole segment call, most of
all at K=1, where ONNX Runtime's small dilated convolutions of the diffusion step cost about three
times OpenVINO's, at the same masks; ONNX Runtime stays the path where OpenVINO is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import dataclass
from functools import lru_cache

FLAGS_ENV = "ENDOSTREAM_CPU_FLAGS"
# cpuinfo flags that mean hardware bf16 arithmetic OpenVINO's CPU plugin uses.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# ... and int8 dot products (VNNI; AMX-INT8): what makes the INT8 encode graph pay off.
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# Flags worth naming in a report (the rest of /proc/cpuinfo's list says nothing about speed here).
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
                  "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuCaps:
    model: str
    flags: frozenset[str]
    forced: bool = False  # flags came from ENDOSTREAM_CPU_FLAGS, not the processor

    @property
    def bf16(self) -> bool:
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def int8(self) -> bool:
        return any(f in self.flags for f in INT8_FLAGS)

    @property
    def amx(self) -> bool:
        return "amx_tile" in self.flags

    def as_dict(self) -> dict[str, object]:
        return {"model": self.model, "flags": [f for f in REPORTED_FLAGS if f in self.flags],
                "bf16_units": self.bf16, "int8_units": self.int8, "amx": self.amx, "forced": self.forced}


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in a /proc/cpuinfo text."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


@lru_cache(maxsize=1)
def _detected() -> tuple[str, frozenset[str]]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model, flags = parse_cpuinfo(f.read())
    except OSError:  # not Linux: the model name only; no flags means the float32 path
        model, flags = "", frozenset()
    return model or platform.processor() or platform.machine(), flags


def probe() -> CpuCaps:
    """This processor's model name and flags, or the flags forced by ``ENDOSTREAM_CPU_FLAGS``."""
    model, flags = _detected()
    forced = os.environ.get(FLAGS_ENV)
    if forced is not None:
        return CpuCaps(model, frozenset(forced.split()), forced=True)
    return CpuCaps(model, flags)


def has_openvino() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose_cpu_path(caps: CpuCaps, openvino: bool) -> tuple[str, str]:
    """(backend, precision) of the fastest CPU path for these capabilities; pure."""
    if openvino:
        return "openvino", "bf16" if caps.bf16 else "fp32"
    return "onnxruntime", "fp32"
