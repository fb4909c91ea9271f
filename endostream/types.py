"""Small dataclasses shared by every stage. Units are in the names (``_ns``, ``_ms``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One video frame as it travels producer -> consumer.

    ``image`` is HxWx3 uint8 BGR (OpenCV order). ``stamps_ns`` holds per-stage
    monotonic timestamps (``time.monotonic_ns``) keyed by stage name, e.g. ``grab``,
    ``encode``, ``send``, ``receive``, ``decode``.
    """

    stream_id: int
    seq: int
    t_capture_ns: int
    image: np.ndarray
    modality: str = "colonoscopy"
    stamps_ns: dict[str, int] = field(default_factory=dict)
    gt_mask: np.ndarray | None = None  # HxW uint8 {0,255} when the source has ground truth
    # The sending producer's epoch (wire protocol) when the frame came over the transport: with
    # stream_id and seq it names the frame uniquely, however often producers restart.
    epoch: int | None = None


@dataclass
class Prediction:
    """The segmenter's output for one frame, in the frame's own pixel grid.

    ``prob``: HxW float32 in [0, 1]; ``mask``: HxW bool (prob > threshold, and zeroed when
    the presence gate closes); ``presence``: polyp probability in [0, 1];
    ``box``: (x0, y0, x1, y1) in frame pixels or None; ``stages_ns``: monotonic timestamps
    taken at the segmenter's stage boundaries (``preprocess``, ``encoder``, ``step1``..,
    ``postprocess``). ``uncertainty``: HxW float32 in [0, 0.5], the per-pixel standard deviation
    of the mask probability over several noise samples of the denoiser (None unless the
    segmenter runs with ``uncertainty_samples`` >= 2); high along an unsure border.
    """

    prob: np.ndarray
    mask: np.ndarray
    presence: float
    box: tuple[int, int, int, int] | None
    gated: bool = False
    stages_ns: dict[str, int] = field(default_factory=dict)
    uncertainty: np.ndarray | None = None
    held_back: bool = False  # the live consumer's persistence filter hides a not-yet-confirmed detection

    @property
    def mean_uncertainty(self) -> float | None:
        """Mean ``uncertainty`` over the pixels the mask or its border could cover (prob > 0.1);
        0 when nothing is there, None when not computed."""
        if self.uncertainty is None:
            return None
        region = self.prob > 0.1
        return float(self.uncertainty[region].mean()) if region.any() else 0.0

    @property
    def area_px(self) -> int:
        return int(self.mask.sum())
