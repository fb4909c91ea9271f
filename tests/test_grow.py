"""Growing the trained Lite0 segmenter into a Lite1 one starts from exactly the same function."""

from __future__ import annotations

import pytest
import torch

from endostream.model.io import load_weights
from endostream.model.network import NetConfig, PolypNet
from endostream.training.grow import block_map, grow_from
from endostream.training.train import init_from_weights

WEIGHTS = "weights/polyp.pt"


def test_block_map_keeps_each_stage_in_order():
    mapping, new = block_map("lite0", "lite1")
    # Lite0 stages [1, 2, 2, 3, 3, 4, 1] -> Lite1 [1, 3, 3, 4, 4, 5, 1]: one new block at each stage's end
    assert new == [3, 6, 10, 14, 19]
    assert mapping == {0: 0, 1: 1, 2: 2, 3: 4, 4: 5, 5: 7, 6: 8, 7: 9, 8: 11, 9: 12, 10: 13,
                       11: 15, 12: 16, 13: 17, 14: 18, 15: 20}
    with pytest.raises(ValueError, match="fewer blocks"):
        block_map("lite1", "lite0")


def _deep(shallow: PolypNet, encoder: str) -> PolypNet:
    return PolypNet(NetConfig.from_dict({**shallow.cfg.to_dict(), "encoder": encoder}))


def test_grown_network_computes_the_trained_one_and_can_learn():
    shallow, _ = load_weights(WEIGHTS)
    deep = _deep(shallow, "efficientnet_lite1")
    init_from_weights(deep, WEIGHTS)
    shallow.eval(), deep.eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    slots = shallow.cfg.memory_frames
    memory = torch.randn(2, slots, shallow.cfg.neck_channels, 8, 8)
    valid = torch.ones(2, slots)
    with torch.no_grad():
        a, b = shallow.encode_frame(x, memory, valid), deep.encode_frame(x, memory, valid)
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    # The new blocks hold ImageNet filters (not zeros) behind a zero projection scale, so they can learn.
    block = deep.encoder.net.blocks[3]
    assert float(block.expand.conv.weight.abs().sum()) > 0
    assert float(block.project.bn.weight.abs().sum()) == 0


def test_growing_wider_or_changing_two_things_is_refused():
    shallow, _ = load_weights(WEIGHTS)
    with pytest.raises(ValueError, match="widths differ"):
        grow_from(_deep(shallow, "efficientnet_lite2"), shallow)
    wide = PolypNet(NetConfig.from_dict({**shallow.cfg.to_dict(), "encoder": "efficientnet_lite1",
                                         "refine_inputs": not shallow.cfg.refine_inputs}))
    with pytest.raises(ValueError, match="not both"):
        init_from_weights(wide, WEIGHTS)


def test_a_resized_denoiser_starts_afresh_on_the_unchanged_trained_network():
    trained, _ = load_weights(WEIGHTS)
    cfg = {**trained.cfg.to_dict(), "denoiser_hidden": 32, "denoiser_dilations": [1, 2, 4, 8]}
    resized = PolypNet(NetConfig.from_dict(cfg))
    init_from_weights(resized, WEIGHTS)
    assert len(resized.denoiser.blocks) == 4 and resized.denoiser.out.in_channels == 32
    trained.eval(), resized.eval()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    memory, valid = trained.empty_memory(1)
    memory = memory[..., :8, :8]
    with torch.no_grad():
        a, b = trained.encode_frame(x, memory, valid), resized.encode_frame(x, memory, valid)
    # Everything but the denoiser is the trained network's: the K=0 mask and the heads are unchanged.
    for key in ("aux_logits", "presence_logit", "box", "memory_out"):
        assert torch.equal(a[key], b[key]), key
    assert b["feat"].shape[1] == 32
    # The denoiser's size may not change together with anything else.
    both = PolypNet(NetConfig.from_dict({**cfg, "encoder": "efficientnet_lite1"}))
    with pytest.raises(ValueError, match="alone"):
        init_from_weights(both, WEIGHTS)
