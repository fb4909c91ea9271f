"""The config groups' keys, typed. Their values stay in configs/<group>/<option>.yaml (one
file per option, each the one place of its values; the consumer and the tests read some of
them directly), so these models hold types only: every key must be there, with the right type.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

import annotated_types

from endostream.config_schema.base import Backend, Count, Port, Quality, Ratio, Schema, Text

Seconds = Annotated[float, annotated_types.Ge(0)]
Positive = Annotated[int, annotated_types.Ge(1)]


class Source(Schema):
    """configs/source/*.yaml: open_source() keyword arguments."""

    uri: Text
    pace: bool
    loop: bool
    stream_id: Count
    modality: Text
    max_frames: Optional[Count]
    gt: Optional[Text]
    sequences: Optional[list[int]]
    fps: Optional[float]
    max_side: Positive
    open_timeout_s: Seconds
    read_timeout_s: Seconds
    options: dict[str, Any]
    reconnect: Optional[bool]
    reconnect_max_backoff_s: Seconds
    jitter_buffer_ms: Optional[float]


class TransportLive(Schema):
    sndhwm: Positive
    rcvhwm: Positive


class TransportLossless(Schema):
    window: Positive
    ack_timeout_s: Seconds
    drain_timeout_s: Seconds
    state_file: Optional[Text]
    max_hold: Optional[Positive]
    max_hold_mb: Optional[float]
    max_hold_s: Optional[float]


class TransportSecurity(Schema):
    enabled: bool
    keys_dir: Text
    server_key: Text
    client_key: Text
    allow_dir: Optional[Text]


class Transport(Schema):
    """configs/transport/default.yaml."""

    mode: Literal["live", "lossless"]
    endpoint: Optional[Text]
    allow_remote: bool
    heartbeat_ivl_ms: Count
    heartbeat_timeout_ms: Count
    max_width: Positive
    max_height: Positive
    max_streams: Optional[Positive]
    live: TransportLive
    lossless: TransportLossless
    security: TransportSecurity


class Persistence(Schema):
    enabled: bool
    n: Positive
    m: Positive
    hold: Count
    min_presence: Ratio


class Overlay(Schema):
    """configs/overlay/default.yaml."""

    opacity: Ratio
    show_mask: bool
    show_labels: bool
    show_box: bool
    show_uncertainty: bool
    uncertainty_threshold: Annotated[float, annotated_types.Ge(0), annotated_types.Le(0.5)]
    color: Annotated[list[Annotated[int, annotated_types.Ge(0), annotated_types.Le(255)]],
                     annotated_types.Len(3, 3)]
    stale_ms: Annotated[float, annotated_types.Ge(0)]
    wait_ms: Annotated[float, annotated_types.Ge(0)]
    wait_policy: Literal["fixed", "predicted"]
    max_model_load: Optional[Annotated[float, annotated_types.Gt(0)]]
    no_model_for: list[Text]
    persistence: Persistence


class Modality(Schema):
    """configs/modality/*.yaml."""

    name: Text
    model: Text
    input_size: Positive
    fov: bool
    presence_threshold: Ratio


class VideoSink(Schema):
    path: Text
    fps: Annotated[float, annotated_types.Gt(0)]
    crf: Annotated[int, annotated_types.Ge(0), annotated_types.Le(51)]
    keyframe_interval: Positive
    fragment: Literal["frame", "keyframe"]
    preset: Text
    threads: Count


class ViewerSink(Schema):
    host: Text
    port: Port
    token: Optional[Text]
    certfile: Optional[Text]
    keyfile: Optional[Text]
    jpeg_quality: Quality
    max_fps: Annotated[float, annotated_types.Gt(0)]
    max_connections: Optional[Positive]
    idle_timeout_s: Optional[Annotated[float, annotated_types.Gt(0)]]
    write_timeout_s: Optional[Annotated[float, annotated_types.Gt(0)]]
    allowed_hosts: list[Text]


class MaskSinkConfig(Schema):
    folder: Text
    compression: Annotated[int, annotated_types.Ge(0), annotated_types.Le(9)]


class RepublishSink(Schema):
    endpoint: Text
    jpeg_quality: Quality
    hwm: Positive
    send_mask: bool
    security: TransportSecurity
    allow_remote: bool


class WindowSink(Schema):
    title: Text


SINKS: dict[str, type[Schema]] = {"video": VideoSink, "viewer": ViewerSink, "masks": MaskSinkConfig,
                                  "republish": RepublishSink, "window": WindowSink}


class OnnxGraph(Schema):
    path: Text
    input: Text
    size: Optional[Union[Positive, list[Positive]]]
    layout: Literal["NCHW", "NHWC"]
    color: Literal["rgb", "bgr"]
    scale: float
    mean: list[float]
    std: list[float]
    output: Text
    output_type: Literal["logits", "probabilities", "class_logits", "class_probabilities"]
    output_layout: Optional[Literal["NCHW", "NHWC"]]
    polyp_channel: Count
    threshold: Ratio


class OnnxModel(Schema):
    """configs/model/onnx.yaml: a single-pass graph of your own."""

    kind: Literal["onnx"]
    backend: Backend
    threads: Positive
    device: Text
    max_batch: Positive
    backend_options: dict[str, Any]
    graph: OnnxGraph
    process: bool


class DiffusionModel(Schema):
    """configs/model/polyp.yaml: the shipped segmenter (load_segmenter() keyword arguments)."""

    kind: Literal["diffusion"] = "diffusion"  # the file leaves it out: the shipped kind
    weights: Text
    backend: Backend
    steps: Count
    warm_start: bool
    warm_start_t: Count
    warm_steps: Optional[Count]
    threads: Positive
    device: Text
    presence_threshold: Ratio
    mask_threshold: Ratio
    use_temporal: bool
    uncertainty_samples: Count
    max_batch: Positive
    backend_options: dict[str, Any]
    tta: list[Literal["h", "v"]]
    tta_sizes: list[Positive]
    process: bool


def model_schema(kind: Any) -> type[Schema]:
    """The ``model`` group's schema for a config's ``model.kind``."""
    return OnnxModel if kind == "onnx" else DiffusionModel


GROUPS: dict[str, type[Schema]] = {"source": Source, "transport": Transport, "overlay": Overlay,
                                   "modality": Modality}
