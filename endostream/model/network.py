"""The whole segmenter network, read top to bottom: encoder -> neck with temporal fusion ->
(aux decoder, heads) once per frame; denoiser K times per frame on the same features."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from endostream.model.blocks import ConvBNReLU, upsample_to
from endostream.model.denoiser import Denoiser
from endostream.model.encoder import build_encoder
from endostream.model.heads import GlobalHeads
from endostream.model.temporal import FramePredictor, TemporalFusion


@dataclass
class NetConfig:
    input_size: int = 256  # 256 keeps encoder + K=2 well under 20 ms on 2 CPU cores
    # "cnn": the first generation's from-scratch encoder (the default so its saved configs still
    # load); "efficientnet_lite0" (ImageNet-pretrained in training) is what configs/train.yaml ships.
    encoder: str = "cnn"
    widths: tuple[int, int, int, int] = (32, 48, 96, 160)  # cnn only; EfficientNet's widths are its own
    blocks: tuple[int, int, int, int] = (1, 1, 2, 1)  # cnn only
    neck_channels: int = 64  # FPN width; also the temporal memory's channels
    feat_channels: int = 48  # stride-4 features the denoiser reuses at every step
    denoiser_hidden: int = 24  # 0.21 GFLOP per step at 256: K steps stay cheap next to the encoder
    denoiser_dilations: tuple[int, ...] = (1, 2, 4)  # one FiLM block per entry (its receptive field)
    memory_frames: int = 2  # T past frames kept per stream (bounded memory; configurable)
    num_train_steps: int = 1000
    mask_scale: float = 1.0
    temporal: bool = True  # False removes the temporal module (ablation)
    # True: the denoiser also sees the K=0 mask and the full-resolution image (fifth generation);
    # False keeps earlier generations' files loading unchanged.
    refine_inputs: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "NetConfig":
        d = dict(d)
        for key in ("widths", "blocks", "denoiser_dilations"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


class Neck(nn.Module):
    """FPN top-down fusion; the temporal module acts on the stride-16 level before top-down."""

    def __init__(self, cfg: NetConfig, widths: tuple[int, ...]) -> None:
        super().__init__()
        n = cfg.neck_channels
        self.lateral = nn.ModuleList([nn.Conv2d(w, n, 1) for w in widths])
        self.temporal = TemporalFusion(n) if cfg.temporal else None
        self.smooth3 = ConvBNReLU(n, n)
        self.smooth2 = ConvBNReLU(n, cfg.feat_channels)

    def memory_feature(self, c4: torch.Tensor) -> torch.Tensor:
        """What a frame leaves in the temporal memory: its stride-16 lateral features."""
        return self.lateral[2](c4)

    def forward(self, feats: tuple[torch.Tensor, ...], memory: torch.Tensor,
                valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c2, c3, c4, c5 = feats
        l4 = self.memory_feature(c4)
        p4 = self.temporal(l4, memory, valid) if self.temporal is not None else l4
        p4 = p4 + upsample_to(self.lateral[3](c5), p4)
        p3 = self.smooth3(self.lateral[1](c3) + upsample_to(p4, c3))
        feat = self.smooth2(self.lateral[0](c2) + upsample_to(p3, c2))
        return feat, l4


class PolypNet(nn.Module):
    """Multi-task diffusion segmenter.

    ``encode_frame`` runs once per frame: image (B,3,S,S) in [-1,1], memory (B,T,N,S/16,S/16),
    valid (B,T) -> feat (B,H,S/4,S/4) (the denoiser's conditioning, H = denoiser_hidden),
    aux_logits (B,1,S/4,S/4) (the K=0 discriminative mask), presence_logit (B,), box (B,4),
    memory_out (B,N,S/16,S/16) for the stream's memory.
    ``denoise`` runs K times: feat, noisy mask (B,1,S/4,S/4), t (B,) -> x0 logits (B,1,S/4,S/4).
    """

    def __init__(self, cfg: NetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or NetConfig()
        c = self.cfg
        if c.encoder != "cnn" and c.input_size % 32:
            raise ValueError(f"model.input_size={c.input_size}: {c.encoder} needs a multiple of 32")
        self.encoder = build_encoder(c.encoder, c.widths, c.blocks)
        widths = tuple(self.encoder.widths)
        self.neck = Neck(c, widths)
        self.aux_head = nn.Conv2d(c.feat_channels, 1, 1)
        self.heads = GlobalHeads(widths[3])
        self.denoiser = Denoiser(c.feat_channels, c.denoiser_hidden, dilations=tuple(c.denoiser_dilations),
                                 num_train_steps=c.num_train_steps, refine_inputs=c.refine_inputs)
        # Training-only generator of the Diff-VPS auxiliary task (not exported).
        self.frame_predictor = FramePredictor(c.neck_channels) if c.temporal else None

    def empty_memory(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.cfg.input_size // 16
        mem = torch.zeros(batch, self.cfg.memory_frames, self.cfg.neck_channels, s, s)
        return mem, torch.zeros(batch, self.cfg.memory_frames)

    def memory_feature(self, image: torch.Tensor) -> torch.Tensor:
        """Memory features of a past frame, computing only encoder stages 1-3."""
        return self.neck.memory_feature(self.encoder.forward_to_c4(image)[2])

    def encode_frame(self, image: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor,
                     coarse_errors: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``coarse_errors`` (training only) changes the K=0 mask the step is conditioned on, not the
        K=0 output itself (training/coarse_errors.py)."""
        feats = self.encoder(image)
        feat, memory_out = self.neck(feats, memory, valid)
        presence_logit, box = self.heads(feats[3])
        aux_logits = self.aux_head(feat)
        coarse = aux_logits if coarse_errors is None else coarse_errors(aux_logits)
        return {"feat": self.denoiser.condition(feat, coarse, image), "aux_logits": aux_logits,
                "presence_logit": presence_logit, "box": box, "memory_out": memory_out}

    def denoise(self, feat: torch.Tensor, noisy_mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.denoiser.step(feat, noisy_mask, t)

    def forward(self, image: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor,
                noisy_mask: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.encode_frame(image, memory, valid)
        out["logits"] = self.denoise(out["feat"], noisy_mask, t)
        return out
