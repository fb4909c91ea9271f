"""Device memory held through cuda-python, shared by the two TensorRT paths (the shipped model's
backend and the single-pass graph). A subclass sets ``cudart``, ``stream`` and ``_allocations``."""

from __future__ import annotations

from typing import Any

import numpy as np


class CudaMemory:
    cudart: Any
    stream: Any
    _allocations: list[int]

    def _check(self, result: Any, what: str) -> Any:
        """cuda-python returns (error, *values): raise on an error, else the value(s)."""
        err, *values = result
        if err != self.cudart.cudaError_t.cudaSuccess:
            raise RuntimeError(f"{what} failed: {err}")
        return values[0] if len(values) == 1 else (tuple(values) or None)

    def _select_gpu(self, device: str) -> tuple[int, Any, str]:
        """Make ``cuda[:i]`` current; (index, its properties, its name). One line if none is seen."""
        cudart = self.cudart
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess or count < 1:
            raise RuntimeError("backend=tensorrt needs a CUDA GPU, and the CUDA runtime sees none")
        index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
        self._check(cudart.cudaSetDevice(index), "cudaSetDevice")
        props = self._check(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
        return index, props, bytes(props.name).split(b"\0")[0].decode(errors="replace")

    def _to_host(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Copy a device buffer into a new host array and wait for it; float32 out."""
        host = np.empty(shape, dtype)
        cudart = self.cudart
        self._check(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes,
                                           cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream), "cudaMemcpyAsync")
        self._check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return host.astype(np.float32, copy=False)

    def close(self) -> None:
        """Free the device buffers (also at garbage collection)."""
        for ptr in getattr(self, "_allocations", []):
            self.cudart.cudaFree(ptr)
        self._allocations = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down the bindings
            pass
