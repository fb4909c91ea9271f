"""Static INT8 encode graph: ONNX Runtime's quantization tooling (QDQ, per-channel weights),
calibrated on real training frames, checked against float32 on the validation split. No torch.

``endostream export precision=int8`` (after the float32 export) writes
``<stem>.int8.encode.onnx`` and ``<stem>.int8.json`` beside the weights. The denoise graph is
small and stays float32: the sidecar's denoise entry names the float32 file. The sidecar also
records the validation check: mean Dice (Kvasir and ClinicDB at 0.5, K=0, as the model card) of
the INT8 graph and of float32, and ``kept`` when the drop is within ``MAX_DICE_DROP``. The
``auto`` CPU path uses the INT8 graph only where that record says kept, the graph matches the
weights, and the processor computes it exactly: any x86 CPU for 7-bit weights, only one with int8
dot-product units (``cpu_caps``) for 8-bit ones (``registry.usable_int8``).

Weights are 7-bit (ONNX Runtime's ``reduce_range``): on x86 CPUs without VNNI, int8 convolutions
sum pairs of u8 x s8 products into 16 bits (``vpmaddubsw``), which overflows and saturates with
8-bit weights (255 x 127 x 2 > 32767); with 7-bit weights (255 x 64 x 2 < 32767) it cannot, so
the graph computes the same integers on AVX2, AVX-512 and VNNI/AMX, and with its float layers run in
float32 on every CPU (the OpenVINO backend) a check on one of them holds on the others: measured, the
AMX Xeon's validation Dice equals the AVX2-only EPYC's to the fourth decimal (0.8848). The first two MBConv blocks (``FLOAT_NODES``) stay float32: measured on the sixth
generation, quantizing everything lost 0.0053 validation Dice, leaving block 0 float 0.0030,
blocks 0 and 1 0.0015 (the stem, the neck, the heads or the temporal module left float changed
nothing: docs/RUNTIME.md).

Calibration frames: ClinicDB training sequences (every third one, 10 consecutive frames each,
so the temporal memory input is real) and Kvasir training stills; never a validation frame.
OpenVINO runs the QDQ graph with int8 kernels (``openvino_backend``); ONNX Runtime can run it
too (slower on these CPUs: its QDQ path was 1.2x over float32 when measured on machine B).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from endostream.fileutil import atomic_write_json, file_sha256
from endostream.runtime.artifacts import check_artifacts, graph_paths

log = logging.getLogger(__name__)

MAX_DICE_DROP = 0.003  # validation mean Dice a reduced-precision path may lose against float32
WEIGHT_BITS = 7  # saturation-free on every x86 int8 path (module docstring)
FLOAT_NODES = ("/encoder/blocks.0/", "/encoder/blocks.1/")  # node-name prefixes left float32


def calibration_feeds(weights: str | Path, data_root: str | Path, *, sequences_every: int = 3,
                      frames_per_sequence: int = 10, stills: int = 40, threads: int = 2) -> list[dict[str, np.ndarray]]:
    """The encode graph's real inputs (image, memory, valid) on training frames, recorded from
    the float32 ONNX Runtime segmenter as it runs them (so the memory is what the live path feeds)."""
    import cv2

    from endostream.inference.segmenter import load_segmenter
    from endostream.training.dataset import VAL_CLINIC_SEQUENCES, VAL_KVASIR_COUNT, clinicdb_rows

    root = Path(data_root)
    seg = load_segmenter(str(weights), backend="onnxruntime", steps=0, warm_start=False, threads=threads)
    feeds: list[dict[str, np.ndarray]] = []
    encode = seg.backend.encode

    def recording(image: Any, memory: Any, valid: Any) -> Any:
        feeds.append({"image": np.array(image, np.float32), "memory": np.array(memory, np.float32),
                      "valid": np.array(valid, np.float32)})
        return encode(image, memory, valid)

    seg.backend.encode = recording
    rows = [r for r in clinicdb_rows(root / "cvc-clinicdb") if r[1] not in VAL_CLINIC_SEQUENCES]
    for stream, seq in enumerate(sorted({r[1] for r in rows})[::sequences_every]):
        for _, _, image_path, _ in [r for r in rows if r[1] == seq][:frames_per_sequence]:
            seg.segment(_read(cv2, image_path), 100 + stream)
    # The Kvasir validation ids are drawn as load_splits draws them (seed 0): they are left out.
    kv = sorted(p.stem for p in (root / "kvasir-seg" / "images").glob("*.jpg"))
    val_ids = set(np.random.default_rng(0).permutation(kv)[:VAL_KVASIR_COUNT].tolist())
    train = [i for i in kv if i not in val_ids]
    for n, i in enumerate(train[::max(1, len(train) // max(1, stills))][:stills]):
        seg.segment(_read(cv2, root / "kvasir-seg" / "images" / f"{i}.jpg"), 1000 + n)
    return feeds


def _read(cv2: Any, path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read calibration frame {path}")
    return img


def quantize_encode(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], *, weight_bits: int = WEIGHT_BITS,
                    float_nodes: tuple[str, ...] = FLOAT_NODES, method: str = "minmax") -> list[str]:
    """QDQ INT8 copy of the float32 encode graph: per-channel 7-bit weights, uint8 activations
    with ranges from ``feeds`` (MinMax), the ``FLOAT_NODES`` left float32. Written atomically;
    returns the names of the nodes left float. The keywords are for measuring other choices
    (``tools/int8_variants.py``): ``weight_bits`` 7 or 8, node-name prefixes left float, and the
    calibration ``method`` (minmax, percentile at 99.999, entropy)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 7 or 8, got {weight_bits}")
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / dst.name
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        left = [n.name for n in onnx.load(str(pre)).graph.node if n.name.startswith(float_nodes)] if float_nodes else []
        if float_nodes and not left:
            raise RuntimeError(f"no node of {src} is named {' or '.join(float_nodes)}*: the graph's names changed")
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=weight_bits == 7, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=left, calibrate_method=calib,
                        extra_options={"CalibPercentile": 99.999} if method == "percentile" else None)
        out.replace(dst)
    return left


def validation_dice(seg: Any, data_root: str | Path) -> float:
    """Mean of the Kvasir and ClinicDB validation Dice at 0.5 of one segmenter (K=0, as built)."""
    from endostream.training.dataset import load_splits
    from endostream.training.evaluate import score_items
    from endostream.training.validate import load_eval_items

    r = score_items(seg, load_eval_items(load_splits(data_root, val_only=True).val))
    return round((r["kvasir"]["dice@0.5"] + r["clinicdb"]["dice@0.5"]) / 2, 5)


def int8_segmenter(paths: dict[str, Path], side: dict[str, Any], threads: int) -> Any:
    """The INT8 graph on OpenVINO, built directly: the registry would refuse it until the check
    below has been recorded as kept."""
    from endostream.inference.segmenter import Segmenter
    from endostream.runtime.openvino_backend import OpenVinoBackend

    be = OpenVinoBackend(paths["encode"], paths["denoise"], side["config"], threads=threads, precision="int8")
    return Segmenter(be, steps=0, warm_start=False, info={"weights_sha256": side["sha256"]})


def export_int8(weights: str | Path, data_root: str | Path, out_dir: str | Path | None = None,
                threads: int = 2) -> dict[str, Any]:
    """Calibrate, quantize, check on the validation split, write the INT8 sidecar; return it."""
    fp32, reason = check_artifacts(weights, out_dir=out_dir)
    if fp32 is None:
        raise RuntimeError(f"export precision=int8 starts from the float32 graphs: {reason} "
                           f"(run `endostream export weights={weights}` first)")
    src, dst = graph_paths(weights, out_dir), graph_paths(weights, out_dir, "int8")
    feeds = calibration_feeds(weights, data_root, threads=threads)
    left_float = quantize_encode(src["encode"], dst["encode"], feeds)
    side = {**fp32, "precision": "int8",
            "onnx": {"encode": {"file": dst["encode"].name, "sha256": file_sha256(dst["encode"])},
                     "denoise": dict(fp32["onnx"]["denoise"])},
            "calibration": {"frames": len(feeds), "sources": "ClinicDB training sequences (every third, 10 "
                            "consecutive frames) and Kvasir training stills", "method": "MinMax, QDQ, "
                            f"per-channel {WEIGHT_BITS}-bit weights, uint8 activations (onnxruntime.quantization)",
                            "weight_bits": WEIGHT_BITS, "float_nodes": list(FLOAT_NODES),
                            "float_node_count": len(left_float)}}
    from endostream.inference.segmenter import load_segmenter

    ref = validation_dice(load_segmenter(str(weights), backend="onnxruntime", steps=0, warm_start=False,
                                         threads=threads), data_root)
    got = validation_dice(int8_segmenter(dst, side, threads), data_root)
    from endostream.runtime.cpu_caps import probe

    # With 7-bit weights and float32 float layers the graph computes the same on any x86 CPU; the
    # record names the CPU that checked it all the same.
    side["validation"] = {"dice_fp32": ref, "dice_int8": got, "drop": round(ref - got, 5),
                          "max_drop": MAX_DICE_DROP, "kept": ref - got <= MAX_DICE_DROP,
                          "measured_with": "openvino int8 vs onnxruntime float32, K=0, validation split",
                          "cpu": probe().as_dict()}
    atomic_write_json(dst["sidecar"], side)
    return side
